"""Real photo files in the formats phones and cameras make, written by the real libraries: HEIC by
pillow-heif, AVIF and WebP by Pillow, JPEG XL by pillow-jxl-plugin, DNG by pidng from a Bayer
mosaic. Shared by tests/test_formats.py and bench/decode_memory.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pidng.core import RAW2DNG
from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation
from pidng.dng import DNGTags, Tag, Type, dngIFD, dngTag
from PIL import ExifTags, Image

import daemon.media.decode  # noqa: F401  # registers the HEIF and JPEG XL plugins with Pillow

DATE = "2024:05:01 12:34:56"
OFFSET = "+02:00"
LATITUDE = (48.0, 31.0, 12.5)  # Tübingen, degrees, minutes, seconds
LONGITUDE = (9.0, 3.0, 25.0)
MAKE, MODEL, LENS = "Apple", "iPhone 15", "iPhone 15 back camera 6.86mm f/1.6"

# XYZ (D65) -> linear sRGB: a DNG's ColorMatrix1 for a "camera" whose raw channels are linear
# sRGB, so that LibRaw's demosaic gives back the colours the mosaic was made from.
_XYZ_TO_SRGB = (
    (3.2406, -1.5372, -0.4986),
    (-0.9689, 1.8758, 0.0415),
    (0.0557, -0.2040, 1.0570),
)
_WHITE_LEVEL = 4095  # 12-bit raw


_GPS_IFD = (34853, Type.IFD)
_OFFSET_TIME_ORIGINAL = (36881, Type.Ascii)


class _SubDirectory(dngTag):
    """A tag pointing at a sub-directory (EXIF, GPS). pidng writes these, but its own setValue
    joins a str to bytes for them; this one gives the placeholder as bytes."""

    def __init__(self, tag: tuple, directory: dngIFD) -> None:
        super().__init__((tag[0], Type.Long), [0])  # a placeholder of the right length
        self.Type, self.DataType, self.subIFD = tag, tag[1], directory


class _Tags(DNGTags):
    """pidng's tag set, with sub-directories besides."""

    def __init__(self) -> None:
        super().__init__()
        self.directories: list[_SubDirectory] = []

    def list(self) -> list[dngTag]:
        return [*super().list(), *self.directories]


def photo_exif(orientation: int = 1, *, gps: bool = True) -> Image.Exif:
    """A phone's EXIF: camera, lens, capture date with its offset, GPS, an orientation."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = MAKE
    exif[ExifTags.Base.Model] = MODEL
    exif[ExifTags.Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = DATE
    details[ExifTags.Base.OffsetTimeOriginal] = OFFSET
    details[ExifTags.Base.LensModel] = LENS
    if gps:
        place = exif.get_ifd(ExifTags.IFD.GPSInfo)
        place[ExifTags.GPS.GPSLatitudeRef] = "N"
        place[ExifTags.GPS.GPSLatitude] = LATITUDE
        place[ExifTags.GPS.GPSLongitudeRef] = "E"
        place[ExifTags.GPS.GPSLongitude] = LONGITUDE
    return exif


def two_halves(width: int = 48, height: int = 32) -> np.ndarray:
    """Red left half, blue right half (uint8 RGB): which way up it came out is plain to see."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2 :] = (30, 30, 220)
    return pixels


def write_with_pillow(
    path: Path, pixels: np.ndarray, fmt: str, exif: Image.Exif | None = None, **options: object
) -> Path:
    """`pixels` saved by Pillow or its plugins (HEIF is pillow-heif's, JXL the JXL plugin's)."""
    extra = {"exif": exif.tobytes()} if exif is not None else {}
    Image.fromarray(pixels).save(path, format=fmt, **extra, **options)
    return path


def _linear(pixels: np.ndarray) -> np.ndarray:
    """sRGB-encoded 0..255 to linear 0..1."""
    values = pixels.astype(np.float64) / 255
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def bayer_mosaic(pixels: np.ndarray) -> np.ndarray:
    """An RGGB mosaic (uint16, 12-bit) of linear light from sRGB pixels: a sensor's raw data."""
    linear = _linear(pixels)
    height, width = pixels.shape[:2]
    mosaic = np.empty((height, width), np.float64)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]
    return np.rint(mosaic * _WHITE_LEVEL).astype(np.uint16)


def write_dng(path: Path, pixels: np.ndarray, *, orientation: int = 1, gps: bool = True) -> Path:
    """A DNG written by pidng from the Bayer mosaic of `pixels` (even sides), with the camera's
    make and model, capture date, lens and GPS in EXIF and GPS sub-directories."""
    height, width = pixels.shape[:2]
    tags = _Tags()
    tags.set(Tag.ImageWidth, width)
    tags.set(Tag.ImageLength, height)
    tags.set(Tag.TileWidth, width)
    tags.set(Tag.TileLength, height)
    tags.set(Tag.Orientation, orientation)
    tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    tags.set(Tag.SamplesPerPixel, 1)
    tags.set(Tag.BitsPerSample, 12)
    tags.set(Tag.CFARepeatPatternDim, [2, 2])
    tags.set(Tag.CFAPattern, CFAPattern.RGGB)
    tags.set(Tag.BlackLevel, 0)
    tags.set(Tag.WhiteLevel, _WHITE_LEVEL)
    tags.set(Tag.ColorMatrix1, [[round(v * 10000), 10000] for row in _XYZ_TO_SRGB for v in row])
    tags.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    tags.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
    tags.set(Tag.BaselineExposure, [[0, 100]])
    tags.set(Tag.Make, MAKE)
    tags.set(Tag.Model, MODEL)
    tags.set(Tag.UniqueCameraModel, f"{MAKE} {MODEL}")
    tags.set(Tag.DNGVersion, DNGVersion.V1_4)
    tags.set(Tag.DNGBackwardVersion, DNGVersion.V1_0)
    details = dngIFD()
    details.tags.append(dngTag(Tag.DateTimeOriginal, DATE))
    details.tags.append(dngTag(_OFFSET_TIME_ORIGINAL, OFFSET))
    details.tags.append(dngTag(Tag.EXIFPhotoLensModel, LENS))
    tags.directories.append(_SubDirectory(Tag.EXIF_IFD, details))
    if gps:
        place = dngIFD()
        place.tags.append(dngTag((1, Type.Ascii), "N"))
        place.tags.append(dngTag((2, Type.Rational), [[round(v * 10), 10] for v in LATITUDE]))
        place.tags.append(dngTag((3, Type.Ascii), "E"))
        place.tags.append(dngTag((4, Type.Rational), [[round(v * 10), 10] for v in LONGITUDE]))
        tags.directories.append(_SubDirectory(_GPS_IFD, place))
    writer = RAW2DNG()
    writer.options(tags, path=str(path.parent), compress=False)
    writer.convert(bayer_mosaic(pixels), filename=path.stem)
    written = path.with_suffix(".dng")
    if written != path:
        written.rename(path)
    return path
