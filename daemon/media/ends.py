"""Whether a file reaches its format's end: what tells a whole photo from one still being written.

Pillow decodes (and verifies) a PNG whose IEND chunk lacks its CRC, and a JPEG whose tail is
zeros decodes as long as the zeros fill its last blocks; a HEIC or AVIF cut inside its media data
may decode too, with grey tiles. A writer paused there, or a preallocated file half filled, would
be taken for whole. These walks read the structure only (chunk, segment or box headers, and a
JPEG's scans to their next marker), never a pixel, so the watcher can ask them of every file.
"""

import os
import re
import struct
from typing import BinaryIO

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI, _JPEG_SOS = 0xD9, 0xDA
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn carry no length
# The end of entropy-coded data: 0xFF (and fill 0xFFs) before a byte that is neither a stuffed
# zero nor a restart marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff+(?=[^\x00\xd0-\xd7\xff])")
_SCAN_CHUNK_BYTES = 1 << 20


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


_BOX_TYPE = re.compile(rb"[\x20-\x7e]{4}")  # four printable characters: 'ftyp', 'mdat', 'JXL '
# The first box of an ISO base media file: HEIC, HEIF, AVIF, and JPEG XL in its container.
_ISOBMFF_FIRST_TYPES = (b"ftyp", b"JXL ")


def reaches_end(file: BinaryIO) -> bool:
    """False when the open file (at its start) visibly stops short of its format's end: a PNG
    without its IEND chunk, a JPEG whose markers do not lead to EOI, an ISO base media file (HEIC,
    AVIF, JPEG XL's container) whose boxes do not end exactly at the end of the file. True for
    formats with no end to check: their decoder refuses a cut file, or nothing can tell."""
    head = file.read(len(_PNG_SIGNATURE))
    if head == _PNG_SIGNATURE:
        return _png_reaches_iend(file)
    if head.startswith(_JPEG_SOI):
        file.seek(len(_JPEG_SOI))
        return _jpeg_reaches_eoi(file)
    if head[4:8] in _ISOBMFF_FIRST_TYPES:
        file.seek(0)
        return _boxes_reach_end(file)
    return True


def _boxes_reach_end(file: BinaryIO) -> bool:
    """Walk the top-level boxes by their sizes; True when the last one ends where the file does.

    A box running past the end is a cut file; zeros where a box header should be are a
    preallocated file's unwritten part. A size of 0 means "to the end of the file" (allowed for
    the last box), 1 a 64-bit size after the type.
    """
    end = os.fstat(file.fileno()).st_size
    position = 0
    while position < end:
        file.seek(position)
        header = file.read(16)
        if len(header) < 8 or not _BOX_TYPE.fullmatch(header[4:8]):
            return False
        (size,) = struct.unpack(">I", header[:4])
        if size == 0:
            return True
        if size == 1:
            if len(header) < 16:
                return False
            (size,) = struct.unpack(">Q", header[8:16])
            if size < 16:
                return False
        elif size < 8:
            return False
        position += size
    return position == end
