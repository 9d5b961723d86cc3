"""Telling a video from a photo by its first bytes, never by its name, so the service can skip it
(a Live Photo's .MOV beside its .HEIC) instead of quarantining it as a photo that does not decode.

The signatures are filetype's; two things are added to them. HEIC, AVIF and Canon's CR3 are
ISO-BMFF files like MP4, and filetype calls any ISO-BMFF file with an `isom` brand an MP4: a file
whose `ftyp` names an image brand is never a video here. And two containers cameras write that
filetype does not know: QuickTime's classic layout with no `ftyp` (a `moov`, `mdat` or `wide`
atom first, as libmagic reads it), and the MPEG transport stream of AVCHD (.MTS, .M2TS).
"""

import os
import stat
from pathlib import Path

import filetype

HEAD_BYTES = 8192  # what filetype reads of a file (its _NUM_SIGNATURE_BYTES)

# The names a log line and `stylebox status` give, by filetype's MIME type.
_NAMES = {
    "video/quicktime": "QuickTime video",
    "video/mp4": "MP4 video",
    "video/x-m4v": "MP4 video",
    "video/3gpp": "3GP video",
    "video/x-matroska": "Matroska video",
    "video/webm": "WebM video",
    "video/x-msvideo": "AVI video",
    "video/x-ms-wmv": "Windows Media video",
    "video/mpeg": "MPEG video",
    "video/x-flv": "Flash video",
}
# ISO-BMFF brands of still images (HEIF and its HEVC and AV1 flavours, image sequences, JPEG XL
# in a box, Canon CR3): such a file is a photo whatever other brands it lists (`isom` included).
_HEIF_BRANDS = (b"mif1", b"msf1", b"miaf", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")
_IMAGE_BRANDS = frozenset((*_HEIF_BRANDS, b"hevm", b"hevs", b"avif", b"avis", b"jxl ", b"crx "))
_CLASSIC_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide")
_TS_PACKET_BYTES = 188  # an MPEG-TS packet, its first byte 0x47; M2TS puts 4 bytes before each


def video_kind(path: Path) -> str | None:
    """What kind of video the file is ("QuickTime video", "MP4 video", ...), from its first
    bytes; None for anything else (a photo, a file that cannot be read, a symlink, a FIFO)."""
    head = _head(path)
    return None if head is None else video_kind_of(head)


def video_kind_of(head: bytes) -> str | None:
    """What kind of video a file starting with `head` (its first HEAD_BYTES) is, if any."""
    brands = _iso_bmff_brands(head)
    if brands is not None and not brands.isdisjoint(_IMAGE_BRANDS):
        return None
    guessed = filetype.guess(head)
    if guessed is not None:
        if guessed.mime == "video/mp4" and brands and head[8:11] == b"3gp":  # the major brand
            return _NAMES["video/3gpp"]
        return _NAMES.get(guessed.mime)  # None for the images, sounds and documents it knows
    if brands is None and head[4:8] in _CLASSIC_QUICKTIME_ATOMS:
        return _NAMES["video/quicktime"]
    if _is_transport_stream(head):
        return "MPEG transport stream video"
    return None


def described(kind: str) -> str:
    """The kind with its article, for a sentence: "a QuickTime video", "an MP4 video"."""
    # Said by their letters: "an AVI", "an MP4", "an MPEG"; a vowel otherwise.
    sounds_a_vowel = kind[0] in "AEIOU" or kind.startswith(("MP", "MPEG"))
    return f"{'an' if sounds_a_vowel else 'a'} {kind}"


def _head(path: Path) -> bytes | None:
    """The first HEAD_BYTES of a regular file; None if it cannot be read as one. Symlinks are not
    followed and a FIFO is never waited on (as sampled_digest in files.py)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        return os.pread(descriptor, HEAD_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def _iso_bmff_brands(head: bytes) -> frozenset[bytes] | None:
    """The major and compatible brands of an ISO-BMFF file's leading `ftyp` box; None if the
    file does not start with one."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = {head[8:12]}  # the major brand; [12:16] is its minor version
    brands.update(head[offset : offset + 4] for offset in range(16, end - 3, 4))
    return frozenset(brands)


def _is_transport_stream(head: bytes) -> bool:
    """Whether `head` is MPEG-TS (188-byte packets) or M2TS (a 4-byte stamp before each): the
    sync byte 0x47 at the start of each of the first packets, not one of them missing."""
    for stamp in (0, 4):
        packet = _TS_PACKET_BYTES + stamp
        offsets = range(stamp, min(len(head), 8 * packet), packet)
        if len(offsets) >= 4 and all(head[offset] == 0x47 for offset in offsets):
            return True
    return False
