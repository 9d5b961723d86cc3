"""Results out: pixels to JPEG, PNG or TIFF, always tagged sRGB, carrying the photo's EXIF.

Outputs are byte-for-byte reproducible (a fixed profile date, no encoder timestamps), so the same
photo and preset always give the same file.
"""

import struct
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageCms

from daemon.errors import InputError
from daemon.media.decode import SRGB_PROFILE, portable_exif

# LittleCMS stamps the profile with the time it was built; a fixed date (the header's bytes 24-35,
# not covered by a profile ID, which is unset) makes every output byte-for-byte reproducible.
_BUILT_ICC = ImageCms.ImageCmsProfile(SRGB_PROFILE).tobytes()
_SRGB_ICC: bytes = _BUILT_ICC[:24] + struct.pack(">6H", 2000, 1, 1, 0, 0, 0) + _BUILT_ICC[36:]

_SAVE_FORMATS = ("jpeg", "png", "tiff")
_SUFFIX_FORMATS: dict[str, str] = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
}

# TIFF tag values written by `_write_tiff`.
_TIFF_ADOBE_DEFLATE = 8
_TIFF_PHOTOMETRIC_RGB = 2
_TIFF_PLANAR_CONTIGUOUS = 1
_TIFF_PREDICTOR_HORIZONTAL = 2


def save_image(
    pixels: np.ndarray,
    destination: Path | BinaryIO,
    *,
    format: str,
    quality: int = 92,
    exif: bytes | None = None,
    bit_depth: int = 8,
) -> None:
    """Write pixels tagged as sRGB, carrying the photo's EXIF with Orientation 1."""
    if format not in _SAVE_FORMATS:
        raise ValueError(
            f"cannot save format {format!r}; expected one of {', '.join(_SAVE_FORMATS)}"
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth}")
    if bit_depth == 16 and format != "tiff":
        raise ValueError(f"16-bit output needs format 'tiff'; {format} holds 8 bits per channel")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected H x W x 3 pixels, got shape {pixels.shape}")
    carried_exif = portable_exif(exif) if exif else None
    if format == "tiff":
        _write_tiff(_quantised(pixels, bit_depth), destination, carried_exif)
        return
    # 4:4:4 keeps the painted detail. No `optimize`: Pillow then sizes libjpeg's one-shot buffer at
    # W x H bytes, which detailed 4:4:4 images overflow ("Suspension not allowed here").
    options = {"quality": quality, "subsampling": 0} if format == "jpeg" else {}
    Image.fromarray(_quantised(pixels, 8)).save(
        destination,
        format=format.upper(),
        icc_profile=_SRGB_ICC,
        exif=carried_exif or b"",
        **options,
    )


def format_for_suffix(suffix: str) -> str:
    """Map an output file suffix to the `save_image` format, so a typo in config fails early."""
    try:
        return _SUFFIX_FORMATS[suffix.lower()]
    except KeyError:
        known = ", ".join(_SUFFIX_FORMATS)
        raise InputError(f"unsupported output suffix {suffix!r}; expected one of {known}") from None


def _quantised(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """Round 0..255 floats to unsigned integers of the given depth (16 bits: 0..65535)."""
    if bit_depth == 8:
        return np.rint(np.clip(pixels, 0, 255)).astype(np.uint8)
    return np.rint(np.clip(pixels, 0, 255) * 257).astype(np.uint16)


def _write_tiff(samples: np.ndarray, destination: Path | BinaryIO, exif: bytes | None) -> None:
    """Write an RGB TIFF (one deflated strip) with the sRGB profile and the EXIF directories.

    Pillow can hold no 16-bit RGB image, and its libtiff writer, needed for compression, fails on
    an EXIF sub-directory; so the tags go through Pillow's EXIF serialiser and the pixels follow.
    """
    tags = Image.Exif()
    if exif:
        tags.load(exif)
    # Keep the byte order of the carried EXIF (its undefined-type blobs depend on it).
    tags.endian = tags.endian or "<"
    height, width, _ = samples.shape
    # The horizontal predictor stores differences to the left neighbour, wrapping like the format.
    differences = samples.astype(samples.dtype.newbyteorder(tags.endian))
    differences[:, 1:] -= samples[:, :-1]
    strip = zlib.compress(differences.tobytes())
    bits = samples.dtype.itemsize * 8
    tag = ExifTags.Base
    tags.update(
        {
            tag.ImageWidth: width,
            tag.ImageLength: height,
            tag.BitsPerSample: (bits, bits, bits),
            tag.Compression: _TIFF_ADOBE_DEFLATE,
            tag.PhotometricInterpretation: _TIFF_PHOTOMETRIC_RGB,
            tag.StripOffsets: 0,  # Pillow's serialiser adds the end of the directories to this
            tag.SamplesPerPixel: 3,
            tag.RowsPerStrip: height,
            tag.StripByteCounts: len(strip),
            tag.PlanarConfiguration: _TIFF_PLANAR_CONTIGUOUS,
            tag.Predictor: _TIFF_PREDICTOR_HORIZONTAL,
            tag.InterColorProfile: _SRGB_ICC,
        }
    )
    header = tags.tobytes()[len(b"Exif\x00\x00") :]
    with (
        destination.open("wb") if isinstance(destination, Path) else nullcontext(destination)
    ) as file:
        file.write(header)
        file.write(strip)
