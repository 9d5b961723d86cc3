"""A JPEG XL file's declared size, read from its header before anything decodes it.

pillow-jxl-plugin decodes the whole image when Pillow opens the file, so the pixel limit checked
after `Image.open` would come too late for a crafted or enormous JXL: its memory would already be
spent. The size is the codestream's SizeHeader (ISO/IEC 18181-1, section D.2), a few bits after
its signature; in the container form the codestream is in a `jxlc` box or split over `jxlp`
boxes (the first of which holds the header, after a 4-byte sequence number).
"""

import struct
from typing import BinaryIO

CODESTREAM_SIGNATURE = b"\xff\x0a"
CONTAINER_SIGNATURE = b"\x00\x00\x00\x0cJXL \x0d\x0a\x87\x0a"
_HEADER_BYTES = 16  # the signature and a SizeHeader fit in 12
_MAX_BOXES = 64  # boxes looked through for the codestream: a crafted file may hold thousands
# U32(Bits(9) + 1, Bits(13) + 1, Bits(18) + 1, Bits(30) + 1): the bits each selector reads.
_DIMENSION_BITS = (9, 13, 18, 30)
# The aspect ratios a SizeHeader may give instead of a width: width = height * num // den.
_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def is_jxl(head: bytes) -> bool:
    """Whether `head` starts a JPEG XL file, bare codestream or container."""
    return head.startswith(CODESTREAM_SIGNATURE) or head.startswith(CONTAINER_SIGNATURE)


def declared_size(file: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the header of the JXL file open at its start; None when the header
    cannot be found or read (the decoder then says what is wrong). The file is left at its start.
    """
    try:
        codestream = _codestream_head(file)
    finally:
        file.seek(0)
    if codestream is None or not codestream.startswith(CODESTREAM_SIGNATURE):
        return None
    try:
        return _size_header(_Bits(codestream[len(CODESTREAM_SIGNATURE) :]))
    except IndexError:  # the header ran past the bytes read: a cut file
        return None


def _codestream_head(file: BinaryIO) -> bytes | None:
    """The first bytes of the codestream: the file's own, or its first jxlc/jxlp box's."""
    head = file.read(_HEADER_BYTES)
    if head.startswith(CODESTREAM_SIGNATURE):
        return head
    position = 0
    for _ in range(_MAX_BOXES):
        file.seek(position)
        header = file.read(16)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header[:8])
        start = 8
        if size == 1:
            (size,) = struct.unpack(">Q", header[8:16])
            start = 16
        if kind in (b"jxlc", b"jxlp"):
            file.seek(position + start + (4 if kind == b"jxlp" else 0))
            return file.read(_HEADER_BYTES)
        if size < start:  # 0: the box runs to the end, and it was not the codestream
            return None
        position += size
    return None


class _Bits:
    """The codestream's bits, least significant first within each byte."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def read(self, count: int) -> int:
        value = 0
        for index in range(count):
            byte = self.data[(self.position + index) // 8]
            value |= ((byte >> ((self.position + index) % 8)) & 1) << index
        self.position += count
        return value


def _size_header(bits: _Bits) -> tuple[int, int]:
    """(width, height) from a SizeHeader."""
    small = bits.read(1)
    height = (bits.read(5) + 1) * 8 if small else _dimension(bits)
    ratio = bits.read(3)
    if ratio:
        numerator, denominator = _RATIOS[ratio]
        return height * numerator // denominator, height
    width = (bits.read(5) + 1) * 8 if small else _dimension(bits)
    return width, height


def _dimension(bits: _Bits) -> int:
    return bits.read(_DIMENSION_BITS[bits.read(2)]) + 1
