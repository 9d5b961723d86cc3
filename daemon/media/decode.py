"""Photos in: any readable photo becomes upright sRGB floats, checked before a pixel is decoded.

The engine sees only H x W x 3 float32 arrays in 0..255, so all the file-format quirks live here:
EXIF orientation, embedded ICC profiles, palette/alpha/CMYK/16-bit modes, decompression bombs and
files that are not images at all. Every problem with the input is an `InputError` naming the file;
problems with metadata alone (EXIF, ICC) never fail a photo, they are dropped. A file of several
frames or pages gives one picture (the first frame of an animation, the largest page of a TIFF),
and says so in `LoadedImage.note`.
"""

import errno
import io
import os
import re
import stat
import struct
import warnings
import zlib
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from daemon.errors import InputError
from daemon.media import formats
from daemon.media.files import DEFAULT_MAX_PIXELS

formats.register_plugins()

SRGB_PROFILE = ImageCms.createProfile("sRGB")

# Pillow speaks through warnings.warn, which land raw on stderr (a TIFF tag with too many values,
# its own pixel limit). What matters reaches the user as an InputError or a LoadedImage note, and
# the pixel limit in force is the configured one, checked after each open. Filters are
# process-wide and catch_warnings is not thread-safe (the watcher, the worker and the page decode
# at once), so they are set once, here.
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # in Pillow's DecompressionBombError message
_MAX_PAGES = 64  # pages of a TIFF looked at for the largest: a crafted file may claim thousands

# Pillow's parsers raise whatever corrupt bytes lead them to; these are the ones seen in practice.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)
_METADATA_ERRORS = (OSError, SyntaxError, ValueError, IndexError, KeyError, TypeError, struct.error)

# EXIF 2.32 IFD0 attributes that describe the photo rather than how its pixels are stored; the
# source's strip offsets, bit depths, colour tables or thumbnails would describe the wrong picture.
_PORTABLE_EXIF_TAGS = frozenset(
    {
        ExifTags.Base.ImageDescription,
        ExifTags.Base.Make,
        ExifTags.Base.Model,
        ExifTags.Base.Orientation,
        ExifTags.Base.XResolution,
        ExifTags.Base.YResolution,
        ExifTags.Base.ResolutionUnit,
        ExifTags.Base.Software,
        ExifTags.Base.DateTime,
        ExifTags.Base.Artist,
        ExifTags.Base.Copyright,
        ExifTags.IFD.Exif,
        ExifTags.IFD.GPSInfo,
    }
)

# Greyscale modes wider than 8 bits, which Pillow's own convert("RGB") would clip rather than scale.
# "I" is read as 16-bit data (what PNG, PGM and TIFF put there); "F" follows Pillow's 0..255 scale.
_WIDE_GREY_SCALE: dict[str, float] = {
    "I;16": 1 / 257,
    "I;16L": 1 / 257,
    "I;16B": 1 / 257,
    "I;16N": 1 / 257,
    "I": 1 / 257,
    "F": 1.0,
}

# EXIF orientations that turn the stored image by 90 degrees (upright, its width is its height).
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# JPEGs are decoded at a reduced DCT scale and then shrunk in integer steps, both stopping this
# factor above the target so that the final LANCZOS pass still has detail to work with.
_REDUCING_GAP = 3.0
_REDUCIBLE_MODES = frozenset({"L", "RGB", "CMYK", "I", "F"})  # those Image.reduce takes


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo and what must travel with it to the output."""

    pixels: np.ndarray  # float32, H x W x 3, RGB, sRGB, 0..255, upright
    exif: bytes | None  # the photo's EXIF with Orientation 1; None if absent or unreadable
    source_size: tuple[int, int]  # (width, height) as stored in the file, before rotation/resize
    frames: int = 1  # frames of an animation or pages of a TIFF in the file; one of them is used
    note: str | None = None  # which one, when there were several: for the sidecar


def load_image(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    long_side: int | None = None,
    upscale: bool = False,
    follow_symlinks: bool = True,
) -> LoadedImage:
    """Decode a photo to upright sRGB pixels, refusing anything that is not a usable image.

    `follow_symlinks=False` for inbox photos: checked as a regular file earlier, a photo can be
    swapped for a link before it is opened here, and a link is never followed out of the inbox.
    """
    if long_side is not None and long_side < 1:
        raise ValueError(f"long_side must be at least 1, not {long_side}")
    name = path.name
    opened = _open_regular_file(path, follow_symlinks)
    with opened as file, _open_image(file, name, max_pixels) as image:
        frames, note = _frame_choice(image)
        source_size = image.size
        _draft(image, long_side)
        _decode(image, name)
        exif = _make_upright(image)
        size = None  # (width, height) after the resize, from the size `pixel_shape` sees
        if long_side is not None and (upscale or long_side < max(image.size)):
            size = _scaled_size(image.size, long_side)
        pixels = _srgb_pixels(_reduced(image, size), name)
    if size is not None:
        pixels = _resized(pixels, size)
    return LoadedImage(pixels=pixels, exif=exif, source_size=source_size, frames=frames, note=note)


def pixel_shape(
    path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, long_side: int | None = None
) -> tuple[int, int]:
    """(height, width) of what `load_image` would return, from the header alone: enough to
    group photos by size without decoding them. A file that does not say is an InputError.

    A PNG's EXIF may follow its pixels; reading it would decode them, so only EXIF found before
    them counts here (a photo turned by a late one is found out, and skipped, once loaded).
    """
    with (
        _open_regular_file(path, follow_symlinks=False) as file,
        _open_image(file, path.name, max_pixels) as image,
    ):
        _draft(image, long_side)
        width, height = image.size
        orientation = 1
        if image.format != "PNG" or "exif" in image.info:
            with suppress(*_DECODE_ERRORS):  # unreadable EXIF: load_image does not turn it
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    if long_side is not None and long_side < max(width, height):
        width, height = _scaled_size((width, height), long_side)
    return height, width


def is_whole(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """True when `path` is a whole image that `load_image` may take, found out cheaply: the
    watcher asks this of every new file, and the worker decodes the photo anyway.

    A JPEG is decoded at its smallest DCT scale (1/8 a side: every byte of its entropy-coded data
    is still read, so a cut file fails) and must reach its EOI marker; a PNG's chunks are read up
    to IEND with their CRCs checked, no pixel inflated; other formats are decoded in their own
    mode, never as floats (the page `load_image` would use). A preallocated file, whose tail is
    zeros until its writer gets there, decodes as a JPEG often enough: the end markers (see
    `is_complete`) catch it. Never follows a symlink: the watcher hands those over without asking.
    """
    try:
        with (
            _open_regular_file(path, follow_symlinks=False) as file,
            _open_image(file, path.name, max_pixels) as image,
        ):
            if image.format == "PNG":
                image.verify()
            else:
                image.draft(None, (1, 1))  # only a JPEG has a draft scale; the rest ignore it
                _decode(image, path.name)
    except (InputError, *_DECODE_ERRORS):
        return False
    return is_complete(path)


def image_type(file: BinaryIO) -> str | None:
    """The MIME type of the image in an open file, from its content, never its name; None when
    it is not an image Pillow knows. The file is left at its start."""
    try:
        with Image.open(file) as image:  # the header only: no pixel is decoded
            return Image.MIME.get(image.format or "")
    except (*_DECODE_ERRORS, Image.DecompressionBombError):
        return None
    finally:
        file.seek(0)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI, _JPEG_SOS = 0xD9, 0xDA
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length
# The end of entropy-coded data: 0xFF (and fill 0xFFs) before a byte that is neither a stuffed
# zero nor a restart marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff+(?=[^\x00\xd0-\xd7\xff])")
_SCAN_CHUNK_BYTES = 1 << 20


def is_complete(path: Path) -> bool:
    """False when the file visibly stops short of its format's end: a PNG without its IEND chunk,
    a JPEG whose markers do not lead to EOI.

    Pillow decodes (and verifies) a PNG whose IEND chunk lacks its CRC, and a JPEG whose tail is
    zeros decodes as long as the zeros fill its last blocks: a writer paused there, or a
    preallocated file half filled, would be taken for whole. `is_whole` asks this besides; other
    formats refuse a cut file when decoded, or have no end to check.
    """
    try:
        with _open_regular_file(path) as file:
            head = file.read(len(_PNG_SIGNATURE))
            if head == _PNG_SIGNATURE:
                return _png_reaches_iend(file)
            if head.startswith(_JPEG_SOI):
                file.seek(len(_JPEG_SOI))
                return _jpeg_reaches_eoi(file)
            return True
    except (InputError, OSError, ValueError):
        return False


def _png_reaches_iend(file: BinaryIO) -> bool:
    """Walk a PNG's chunks from after its signature; True when IEND and its CRC are there."""
    while True:  # each round moves at least 12 bytes on, and a read past the end is short
        header = file.read(8)
        if len(header) < 8:
            return False
        length, kind = struct.unpack(">I4s", header)
        if not _PNG_CHUNK_TYPE.fullmatch(kind):
            return False  # zeros where a chunk should start: a preallocated file's unwritten part
        if kind == b"IEND":
            return len(file.read(length + 4)) == length + 4  # its CRC is there too
        file.seek(length + 4, os.SEEK_CUR)


def _jpeg_reaches_eoi(file: BinaryIO) -> bool:
    """Walk a JPEG's segments (by their lengths) and scans (to their next marker) from after its
    SOI; True on EOI. An EXIF thumbnail's own EOI is inside its APP1 segment, skipped with it.

    Read through the file, not mapped: a writer truncating it meanwhile must cost a short read,
    not a SIGBUS.
    """
    while True:
        byte = file.read(1)
        if byte != b"\xff":
            return False  # not a marker where one must be: zeros, or the end of the file
        while byte == b"\xff":  # fill bytes
            byte = file.read(1)
        if not byte:
            return False
        marker = byte[0]
        if marker == _JPEG_EOI:
            return True
        if marker in _JPEG_STANDALONE:
            continue
        length = int.from_bytes(file.read(2).rjust(2, b"\x00"), "big")
        if length < 2:
            return False
        file.seek(length - 2, os.SEEK_CUR)
        if marker == _JPEG_SOS and not _skip_scan(file):
            return False


def _skip_scan(file: BinaryIO) -> bool:
    """Leave the file at the marker that ends a scan's entropy-coded data; False when the file
    ends first (a preallocated JPEG's zeros read as data to its end)."""
    carry = b""  # 0xFFs at the end of the last chunk: a marker may straddle two
    while True:
        offset = file.tell() - len(carry)
        chunk = file.read(_SCAN_CHUNK_BYTES)
        if not chunk:
            return False
        data = carry + chunk
        found = _JPEG_NEXT_MARKER.search(data)
        if found is not None:
            file.seek(offset + found.start())
            return True
        carry = data[len(data.rstrip(b"\xff")) :]


def _open_regular_file(path: Path, follow_symlinks: bool = True) -> BinaryIO:
    """Open without blocking and check the opened file itself, so a FIFO or a swap cannot hang."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise InputError(f"{path.name}: a symlink (never followed)") from exc
        raise InputError(f"{path.name}: cannot open ({exc.strerror})") from exc
    status = os.fstat(descriptor)
    problem = None
    if not stat.S_ISREG(status.st_mode):
        problem = "not a regular file"
    elif status.st_size == 0:
        problem = "empty file"
    if problem is not None:
        os.close(descriptor)
        raise InputError(f"{path.name}: {problem}")
    return os.fdopen(descriptor, "rb")


def _open_image(file: BinaryIO, name: str, max_pixels: int) -> Image.Image:
    """Read only the header and refuse oversized images before a single pixel is decoded; the
    image is left at the frame or page `load_image` uses (`_frame_choice` says which)."""
    _let_pillow_open(max_pixels)
    try:
        image = Image.open(file)
    except Image.DecompressionBombError as exc:
        # Pillow's own refusal, far above the configured limit: said in the configured terms.
        found = _BOMB_PIXELS.search(str(exc))
        pixels = f"{int(found[1]):,} pixels" if found else "more pixels than that"
        raise InputError(
            f"{name}: {pixels}, over the limit of {max_pixels:,} (max_input_pixels)"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{name}: not an image in a format Pillow can read") from exc
    except _DECODE_ERRORS as exc:
        raise InputError(f"{name}: cannot decode image ({_one_line(exc)})") from exc
    try:
        _seek_used_frame(image, name, max_pixels)
    except BaseException:
        image.close()
        raise
    return image


def _let_pillow_open(max_pixels: int) -> None:
    """Raise Pillow's own pixel limit to the configured one where that is higher: Pillow refuses
    at twice its limit in Image.open, before the configured limit could be applied. Only ever
    raised, so threads racing here agree."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and limit < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _seek_used_frame(image: Image.Image, name: str, max_pixels: int) -> None:
    """Go to the frame `load_image` uses, checked against `max_pixels`: the first frame of an
    animation, the largest page of a TIFF (a pyramid's full size, a scan's page) within the
    limit; InputError when that is over it."""
    if image.format == "TIFF" and getattr(image, "n_frames", 1) > 1:
        sizes = []
        for page in range(min(image.n_frames, _MAX_PAGES)):
            image.seek(page)
            sizes.append(image.size[0] * image.size[1])
        within = [page for page, pixels in enumerate(sizes) if pixels <= max_pixels]
        if within:  # the largest, and of equal ones the first
            image.seek(max(within, key=lambda page: (sizes[page], -page)))
            return
        image.seek(0)
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (max_input_pixels)"
        )


def _frame_choice(image: Image.Image) -> tuple[int, str | None]:
    """How many frames or pages the file holds, and a note on the one used when several.

    An MPO (a camera's JPEG with its previews or depth maps) says nothing: its first image is
    the photo by definition.
    """
    frames = getattr(image, "n_frames", 1)
    if frames <= 1 or image.format == "MPO":
        return 1, None
    if image.format == "TIFF":
        page = image.tell()
        largest = "the largest"
        if frames > _MAX_PAGES:
            largest += f" of the first {_MAX_PAGES}"
        return frames, (
            f"a TIFF of {frames} pages: page {page + 1} ({image.width}x{image.height}, "
            f"{largest}) was used"
        )
    return frames, f"an animation of {frames} frames: the first was used"


def _draft(image: Image.Image, long_side: int | None) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when the output is that much smaller: far
    cheaper for big photos. Only the header changes; other formats ignore it."""
    if long_side is not None:
        image.draft(None, _scaled_size(image.size, long_side * _REDUCING_GAP))


def _decode(image: Image.Image, name: str) -> None:
    """Decode now, so a truncated or corrupt file fails here as an InputError, not later."""
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise InputError(f"{name}: cannot decode image ({_one_line(exc)})") from exc


def _make_upright(image: Image.Image) -> bytes | None:
    """Apply the EXIF orientation in place; a corrupt EXIF means no rotation and no EXIF."""
    try:
        exif = image.getexif()
        original = exif.tobytes() if exif else None
        ImageOps.exif_transpose(image, in_place=True)
    except _METADATA_ERRORS:
        return None
    return portable_exif(original) if original else None


def portable_exif(data: bytes) -> bytes | None:
    """EXIF fit for an output: descriptive tags only, Orientation 1; None if it cannot be parsed."""
    exif = Image.Exif()
    try:
        exif.load(data)
        for tag in set(exif) - _PORTABLE_EXIF_TAGS:
            del exif[tag]
        exif[ExifTags.Base.Orientation] = 1
        return exif.tobytes()
    except _METADATA_ERRORS:
        return None


def _srgb_pixels(image: Image.Image, name: str) -> np.ndarray:
    """Any mode to H x W x 3 float32 sRGB in 0..255, alpha flattened onto white."""
    if image.mode in _WIDE_GREY_SCALE:
        # Pillow's colour management cannot transform these modes, so any profile is ignored.
        grey = np.asarray(image, dtype=np.float32) * _WIDE_GREY_SCALE[image.mode]
        return np.repeat(np.clip(grey, 0, 255)[..., np.newaxis], 3, axis=2)
    icc_profile = image.info.get("icc_profile")
    try:
        if image.has_transparency_data:
            image = image.convert("RGBA")
        elif image.mode not in ("L", "RGB", "CMYK"):
            image = image.convert("RGB")
        image = _to_srgb(image, icc_profile)
        if image.mode != "RGBA":
            return np.asarray(image.convert("RGB"), dtype=np.float32)
    except ValueError as exc:  # Pillow has no conversion for this mode (LAB, HSV, ...)
        raise InputError(f"{name}: unsupported colour mode {image.mode}") from exc
    rgba = np.asarray(image, dtype=np.float32)
    opacity = rgba[..., 3:] / 255
    return rgba[..., :3] * opacity + 255 * (1 - opacity)


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert from the embedded profile; one that is unreadable or fits no mode is ignored."""
    if not icc_profile:
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        return ImageCms.profileToProfile(
            image,
            source,
            SRGB_PROFILE,
            renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode="RGBA" if image.mode == "RGBA" else "RGB",
        )
    except (ImageCms.PyCMSError, OSError):
        return image


def _scaled_size(size: tuple[int, int], long_side: float) -> tuple[int, int]:
    """(width, height) with the long side scaled to `long_side`, aspect kept, no side below 1 px."""
    width, height = size
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _reduced(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """Shrunk by a whole factor in its own mode while it stays _REDUCING_GAP above `size`, so
    the float conversion holds a few megapixels, not the camera's 24 (a JPEG's draft scale does
    this in the decoder). Modes with alpha are left whole: a box average of unpremultiplied
    colours would bleed hidden colours into the edges."""
    if size is None or image.mode not in _REDUCIBLE_MODES or image.has_transparency_data:
        return image  # a transparency key (tRNS) is alpha too
    factor = int(min(image.width / size[0], image.height / size[1]) / _REDUCING_GAP)
    return image.reduce(factor) if factor > 1 else image


def _resized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """LANCZOS per channel in float to (width, height), so 16-bit sources keep their precision."""
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[..., channel])).resize(
                size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP
            )
        )
        for channel in range(3)
    ]
    # LANCZOS overshoots at hard edges.
    return np.clip(np.stack(channels, axis=2), 0, 255)


def _one_line(exc: BaseException) -> str:
    """Pillow's message on one line, for log lines and quarantine notes."""
    return " ".join(str(exc).split()) or type(exc).__name__
