"""Results in every format `output.format` names: real files written by `save_image` (and by the
real daemon) and read back by Pillow and pillow-heif, for their pixels, the photo's EXIF (date,
offset, camera, place), the sRGB profile, and what made them (EXIF Software, XMP preset)."""

import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from daemon_harness import (
    SAMPLE_PHOTO,
    STYLES,
    drop,
    stylebox,
    tiny_preset,
    wait_for,
    write_config,
)
from PIL import ExifTags, Image, ImageCms

from daemon import __version__
from daemon.config import ConfigErrors, load_config
from daemon.config.sections import OutputFormat
from daemon.media import decode, encode, formats

SOFTWARE = f"stylebox {__version__}"
DATE, OFFSET = "2024:05:01 12:34:56", "+02:00"
LATITUDE = (48.0, 31.0, 12.5)  # Tübingen, degrees, minutes, seconds
MAKE, LENS = "Apple", "iPhone 15 back camera 6.86mm f/1.6"
LOSSLESS = {"png", "tiff"}
LOSSY_MEAN_ERROR = 6.0  # of 255, at quality 92 on a 64 x 48 photo (seen: 0.7 to 4.6)
_XMP_TOOL = "{http://ns.adobe.com/xap/1.0/}CreatorTool"
_XMP_PRESET = f"{{{encode.XMP_NAMESPACE}}}preset"
_RDF_DESCRIPTION = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description"

# Each format this install writes; one it cannot (a Pillow without AVIF, no pillow-heif) is skipped.
WRITTEN = [
    pytest.param(name, marks=pytest.mark.skipif(name not in formats.writes(), reason="no encoder"))
    for name in formats.WRITE_FORMATS
]


def _photo_exif() -> bytes:
    """A phone's EXIF: camera, lens, the time taken with its UTC offset and where."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = MAKE
    exif[ExifTags.Base.Software] = "17.4.1"  # the phone's: a result names stylebox instead
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = DATE
    details[ExifTags.Base.OffsetTimeOriginal] = OFFSET
    details[ExifTags.Base.LensModel] = LENS
    place = exif.get_ifd(ExifTags.IFD.GPSInfo)
    place[ExifTags.GPS.GPSLatitudeRef] = "N"
    place[ExifTags.GPS.GPSLatitude] = LATITUDE
    place[ExifTags.GPS.GPSLongitudeRef] = "E"
    place[ExifTags.GPS.GPSLongitude] = (9.0, 3.0, 25.0)
    return exif.tobytes()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> decode.LoadedImage:
    """A real JPEG with a phone's EXIF, decoded as the daemon decodes it."""
    path = tmp_path_factory.mktemp("photo") / "phone.jpg"
    with Image.open(SAMPLE_PHOTO) as sample:
        sample.convert("RGB").resize((64, 48)).save(path, quality=95, exif=_photo_exif())
    return decode.load_image(path)


def _saved(folder: Path, photo: decode.LoadedImage, format: str, **options) -> Image.Image:
    """The photo written by save_image into a file, opened again and decoded."""
    path = folder / f"result.{format}"
    provenance = encode.Provenance(SOFTWARE, "starry night & co")
    encode.save_image(
        photo.pixels, path, format=format, exif=photo.exif, provenance=provenance, **options
    )
    image = Image.open(path)
    image.load()
    return image


def _xmp_description(image: Image.Image) -> dict[str, str]:
    """The attributes of the XMP packet's rdf:Description, parsed as XML."""
    root = ElementTree.fromstring(image.info["xmp"])
    return next(root.iter(_RDF_DESCRIPTION)).attrib


def _is_srgb(image: Image.Image) -> bool:
    """Whether the embedded ICC profile is sRGB (what every result must carry)."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
    return "sRGB" in ImageCms.getProfileDescription(profile)


@pytest.mark.parametrize("format", WRITTEN)
def test_a_result_keeps_the_pixels_the_date_the_place_and_says_what_made_it(
    tmp_path: Path, photo: decode.LoadedImage, format: str
) -> None:
    image = _saved(tmp_path, photo, format)

    # The file is what its name says, with the pixels close to the painting's.
    assert image.format == {"heic": "HEIF"}.get(format, format.upper())
    error = np.abs(np.asarray(image.convert("RGB"), np.float32) - np.rint(photo.pixels)).mean()
    assert error == 0 if format in LOSSLESS else error < LOSSY_MEAN_ERROR
    exif = image.getexif()
    details = exif.get_ifd(ExifTags.IFD.Exif)
    assert (details[ExifTags.Base.DateTimeOriginal], details[ExifTags.Base.OffsetTimeOriginal]) == (
        DATE,
        OFFSET,
    )
    assert (exif[ExifTags.Base.Make], details[ExifTags.Base.LensModel]) == (MAKE, LENS)
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == LATITUDE
    assert exif.get(ExifTags.Base.Orientation, 1) == 1  # AVIF holds 1 as "no irot box"
    assert exif[ExifTags.Base.Software] == SOFTWARE
    description = _xmp_description(image)
    assert (description[_XMP_TOOL], description[_XMP_PRESET]) == (SOFTWARE, "starry night & co")
    assert _is_srgb(image)


@pytest.mark.parametrize("format", WRITTEN)
def test_strip_location_drops_the_gps_and_keeps_the_date(
    tmp_path: Path, photo: decode.LoadedImage, format: str
) -> None:
    image = _saved(tmp_path, photo, format, strip_location=True)
    exif = image.getexif()
    assert ExifTags.IFD.GPSInfo not in exif
    assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == DATE
    assert b"GPS" not in image.info["xmp"]


def test_a_16_bit_tiff_says_what_made_it_too(tmp_path: Path, photo: decode.LoadedImage) -> None:
    image = _saved(tmp_path, photo, "tiff", bit_depth=16)
    assert image.getexif()[ExifTags.Base.Software] == SOFTWARE
    assert _xmp_description(image)[_XMP_PRESET] == "starry night & co"


@pytest.mark.parametrize("format", WRITTEN)
def test_the_same_pixels_give_the_same_bytes(photo: decode.LoadedImage, format: str) -> None:
    """Every encoder here is deterministic (DECISIONS.md, "Result formats"): the same photo and
    preset give the same file, so a result can be compared with an earlier one by its hash."""
    provenance = encode.Provenance(SOFTWARE, "swirl")
    written = []
    for _ in range(2):
        buffer = io.BytesIO()
        encode.save_image(
            photo.pixels, buffer, format=format, exif=photo.exif, provenance=provenance
        )
        written.append(buffer.getvalue())
    assert written[0] == written[1]


_ONE_CPU_ENCODER = """
import os, sys
import numpy as np
from daemon.media import encode
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
pixels = np.load(sys.argv[1])
for format in sys.argv[3:]:
    encode.save_image(pixels, open(f"{sys.argv[2]}/{format}", "wb"), format=format)
"""


@pytest.mark.skipif(
    len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2, reason="needs 2 CPUs to compare"
)
def test_a_host_with_one_cpu_writes_the_same_bytes(tmp_path: Path) -> None:
    """Worker hosts differ in CPUs; libaom's bytes differ between one thread and several unless
    the encoder pins its count. 128 px: smaller AVIFs came out alike either way."""
    with Image.open(SAMPLE_PHOTO) as sample:
        pixels = np.asarray(sample.convert("RGB").resize((170, 128)), np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    names = [name for name in formats.WRITE_FORMATS if name in formats.writes()]
    subprocess.run(
        [sys.executable, "-c", _ONE_CPU_ENCODER, tmp_path / "pixels.npy", tmp_path, *names],
        check=True,
    )
    for name in names:
        buffer = io.BytesIO()
        encode.save_image(pixels, buffer, format=name)
        assert buffer.getvalue() == (tmp_path / name).read_bytes(), name


@pytest.mark.parametrize("format", WRITTEN)
def test_a_photo_without_exif_gives_a_result_that_still_names_its_maker(
    tmp_path: Path, format: str
) -> None:
    pixels = np.full((8, 12, 3), 128, np.float32)
    encode.save_image(pixels, tmp_path / "bare", format=format)  # a preview: nothing to say
    encode.save_image(
        pixels, tmp_path / "made", format=format, provenance=encode.Provenance(SOFTWARE, "p")
    )
    with Image.open(tmp_path / "bare") as bare, Image.open(tmp_path / "made") as made:
        assert ExifTags.Base.Software not in bare.getexif()
        assert made.getexif()[ExifTags.Base.Software] == SOFTWARE
        assert _xmp_description(made)[_XMP_PRESET] == "p"


@pytest.mark.parametrize(
    ("suffix", "format"),
    [(".webp", "webp"), (".AVIF", "avif"), (".heic", "heic"), (".heif", "heic"), (".tif", "tiff")],
)
def test_an_output_suffix_names_its_format(suffix: str, format: str) -> None:
    assert encode.format_for_suffix(suffix) == format


def test_the_config_offers_what_the_encoder_writes(tmp_path: Path) -> None:
    assert get_args(OutputFormat) == formats.WRITE_FORMATS
    for format in formats.WRITE_FORMATS:
        config = load_config(_config(tmp_path, output={"format": format}))
        assert config.output.ext == {"jpeg": "jpg", "tiff": "tif"}.get(format, format)
        assert config.output.strip_location is False


@pytest.mark.parametrize(
    ("output", "field", "message"),
    [
        ({"format": "webp", "bit_depth": 16}, "output.bit_depth", "16 bits need format tiff"),
        ({"format": "jxl"}, "output.format", "'jpeg', 'png', 'tiff', 'webp', 'avif' or 'heic'"),
        ({"strip_location": "yes"}, "output.strip_location", "boolean"),
    ],
)
def test_the_config_refuses_what_cannot_be_written(
    tmp_path: Path, output: dict, field: str, message: str
) -> None:
    with pytest.raises(ConfigErrors) as raised:
        load_config(_config(tmp_path, output=output))
    (error,) = raised.value.errors
    assert f": {field}: " in error
    assert message in error


def _config(folder: Path, **overrides) -> Path:
    """A daemon config (the test harness's) with its folders made, as a user must."""
    for root in ("inbox", "outbox", "state"):
        (folder / root).mkdir(exist_ok=True)
    return write_config(folder, **overrides)


def test_the_daemon_writes_a_webp_without_the_place(tmp_path: Path, daemons) -> None:
    config = _config(
        tmp_path,
        presets={"swirl": tiny_preset(size=48, steps=3)},
        output={"format": "webp", "strip_location": True},
    )
    daemon = daemons.start(config)
    daemon.wait_ready()
    with Image.open(SAMPLE_PHOTO) as sample:
        buffer = io.BytesIO()
        sample.convert("RGB").resize((64, 48)).save(buffer, "JPEG", exif=_photo_exif())
    drop(tmp_path / "inbox" / "phone.jpg", buffer.getvalue())

    result = tmp_path / "outbox" / "swirl" / "phone.webp"
    wait_for(result.exists, f"{result}", daemon=daemon)
    with Image.open(result) as image:
        assert (image.format, max(image.size)) == ("WEBP", 48)
        exif = image.getexif()
        assert ExifTags.IFD.GPSInfo not in exif
        assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.OffsetTimeOriginal] == OFFSET
        assert exif[ExifTags.Base.Software] == SOFTWARE
        assert _xmp_description(image)[_XMP_PRESET] == "swirl"
        assert _is_srgb(image)


def test_stylize_writes_an_avif_that_says_stylize_made_it(
    tmp_path: Path, photo: decode.LoadedImage
) -> None:
    """The one-shot CLI names no preset (its styles may be several files blended): "stylize"."""
    source = tmp_path / "phone.jpg"
    Image.fromarray(np.rint(photo.pixels).astype(np.uint8)).save(source, exif=photo.exif)
    out = tmp_path / "painted.avif"
    style = STYLES / "swirl.png"
    run = stylebox("stylize", source, "--style", style, "--size", 32, "--steps", 2, "--out", out)
    assert run.returncode == 0, run.stderr
    with Image.open(out) as image:
        assert (image.format, max(image.size)) == ("AVIF", 32)
        assert image.getexif()[ExifTags.Base.Software] == SOFTWARE
        assert _xmp_description(image)[_XMP_PRESET] == "stylize"
        assert image.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == LATITUDE
