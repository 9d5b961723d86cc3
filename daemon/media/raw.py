"""Camera RAW in: LibRaw (through rawpy) demosaics the sensor's data the way the camera was set.

Why demosaic rather than take the JPEG preview every RAW embeds: the preview is whatever the
camera or converter chose to put there (a DNG 1.7 may carry only a 256 px one, a NEF's first
page is 160 px), while the sensor's data is the photo itself, at its full size, and rendered the
same way whichever camera made it. It need not be slow: when the preset's size is at most half
the sensor's, LibRaw's half-size mode takes each 2x2 Bayer cell as one pixel, no interpolation at
all, and a quarter of the memory (bench/decode_memory.py measures both against a JPEG of the
same size, DECISIONS.md has the figures).

Rendering: the camera's white balance as shot, LibRaw's sRGB output with the sRGB tone curve
(gamma 2.4, slope 12.92), its automatic brightness (as dcraw and the camera's own JPEG do), 16
bits per channel; orientation as the file says (LibRaw turns the pixels, so the EXIF carried says
1). The declared size is checked against the pixel limit before the data is unpacked.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np

from daemon.errors import InputError
from daemon.media import formats
from daemon.media.files import check_pixel_limit

_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
_DNG_VERSION_TAG = 50706
_SIXTEEN_TO_EIGHT = 1 / 257
_SRGB_GAMMA = (2.4, 12.92)


def is_raw(name: str, head: bytes) -> bool:
    """Whether a file goes to LibRaw: a RAW maker's suffix, or a TIFF that says it is a DNG.

    By suffix because a NEF, CR2 or ARW is a valid TIFF whose first page is a preview: Pillow
    would paint that. A DNG named .tif is found by its DNGVersion tag in the first directory.
    """
    if name.lower().endswith(formats.RAW_SUFFIXES):
        return True
    return head.startswith(_TIFF_HEADERS) and _first_directory_has(head, _DNG_VERSION_TAG)


def _first_directory_has(head: bytes, tag: int) -> bool:
    """Whether the TIFF's first directory, within `head`, holds `tag` (a cheap look, no parse of
    anything else)."""
    order = "little" if head.startswith(b"II") else "big"
    offset = int.from_bytes(head[4:8], order)
    count = int.from_bytes(head[offset : offset + 2], order)
    for index in range(count):
        start = offset + 2 + 12 * index
        if start + 2 > len(head):
            return False
        if int.from_bytes(head[start : start + 2], order) == tag:
            return True
    return False


class RawPhoto:
    """An opened RAW file: its declared size known and checked against the pixel limit, nothing
    unpacked yet. Use `with`."""

    def __init__(self, file: BinaryIO, name: str, max_pixels: int) -> None:
        import rawpy

        self.name = name
        self.data = file.read()  # LibRaw reads from memory: the file is opened once, by us
        self._raw = rawpy.RawPy()
        try:
            self._raw.open_buffer(io.BytesIO(self.data))
        except (rawpy.LibRawError, ValueError) as exc:
            self._raw.close()
            raise _refused(name, exc) from exc
        try:
            check_pixel_limit(name, self.size, max_pixels)
        except InputError:
            self._raw.close()
            raise

    def __enter__(self) -> RawPhoto:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sensor's visible area, as stored (before turning)."""
        sizes = self._raw.sizes
        return sizes.width, sizes.height

    @property
    def transposed(self) -> bool:
        """Whether LibRaw turns the picture by 90 degrees (its flip 5 or 6)."""
        return self._raw.sizes.flip in (5, 6)

    def unpack(self) -> None:
        """Read the sensor's data: a cut or corrupt file fails here."""
        import rawpy

        try:
            self._raw.unpack()
        except (rawpy.LibRawError, ValueError) as exc:
            raise _refused(self.name, exc) from exc

    def pixels(self, long_side: int | None) -> np.ndarray:
        """Upright sRGB floats 0..255, at half size when that still gives `long_side`."""
        import rawpy

        half = long_side is not None and 2 * long_side <= max(self.size)
        try:
            rgb = self._raw.postprocess(
                use_camera_wb=True,
                half_size=half,
                output_bps=16,
                gamma=_SRGB_GAMMA,
                output_color=rawpy.ColorSpace.sRGB,
            )
        except (rawpy.LibRawError, ValueError, MemoryError) as exc:
            raise _refused(self.name, exc) from exc
        return rgb.astype(np.float32) * np.float32(_SIXTEEN_TO_EIGHT)

    def exif_source(self) -> bytes | None:
        """Bytes `decode.portable_exif` can read the photo's EXIF from: the file itself when it is
        TIFF-structured (DNG, CR2, NEF, ARW, ...), else the embedded preview's (CR3, RAF)."""
        if self.data.startswith(_TIFF_HEADERS):
            return self.data
        import rawpy

        try:
            thumb = self._raw.extract_thumb()
        except (rawpy.LibRawError, ValueError):
            return None
        if thumb.format is not rawpy.ThumbFormat.JPEG:
            return None
        from PIL import Image

        try:
            with Image.open(io.BytesIO(thumb.data)) as preview:
                exif = preview.getexif()
                return exif.tobytes() if exif else None
        except (OSError, SyntaxError, ValueError):
            return None


def _refused(name: str, exc: BaseException) -> InputError:
    """The refusal of a RAW LibRaw could not read, in LibRaw's words."""
    return InputError(f"{name}: cannot decode camera RAW ({_said(exc)})")


def _said(exc: BaseException) -> str:
    """LibRaw's message on one line (rawpy gives it as bytes at times)."""
    text = exc.args[0] if exc.args else type(exc).__name__
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()) or type(exc).__name__
