"""The photos phones and cameras make, written by the real libraries (tests/formats_harness.py):
HEIC, AVIF, WebP, JPEG XL and DNG come in upright, in sRGB, with their date, place and camera;
cut or corrupt ones are refused naming their format; the pixel limit goes before the decode."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from daemon.errors import InputError
from daemon.media import formats, jxl
from daemon.media.decode import is_whole, load_image, pixel_shape
from tests.daemon_harness import drop, stylebox, wait_for, write_config
from tests.formats_harness import (
    DATE,
    LATITUDE,
    LENS,
    LONGITUDE,
    MAKE,
    MODEL,
    OFFSET,
    photo_exif,
    two_halves,
    write_dng,
    write_with_pillow,
)

# Orientation 6: the stored picture is turned 90 degrees clockwise to be shown. Its red left
# half is then the top, its blue right half the bottom.
TURNED = 6


def _heic(path: Path) -> Path:
    return write_with_pillow(path, two_halves(), "HEIF", photo_exif(TURNED), quality=90)


def _avif(path: Path) -> Path:
    return write_with_pillow(path, two_halves(), "AVIF", photo_exif(TURNED), quality=90)


def _webp(path: Path) -> Path:
    return write_with_pillow(path, two_halves(), "WEBP", photo_exif(TURNED), quality=90)


def _jxl(path: Path) -> Path:
    """A JPEG kept whole in a JPEG XL, as cjxl makes from a camera's JPEG: the plugin recompresses
    a JPEG file it is given losslessly, its EXIF (and orientation) with it."""
    jpeg = write_with_pillow(path.with_suffix(".jpg"), two_halves(), "JPEG", photo_exif(TURNED))
    with Image.open(jpeg) as source:
        source.save(path, format="JXL", lossless_jpeg=True)
    jpeg.unlink()
    return path


def _dng(path: Path) -> Path:
    return write_dng(path, two_halves(), orientation=TURNED)


WRITERS = {"heic": _heic, "avif": _avif, "webp": _webp, "jxl": _jxl, "dng": _dng}


def _exif(data: bytes | None) -> Image.Exif:
    assert data is not None
    exif = Image.Exif()
    exif.load(data)
    return exif


def _assert_metadata_kept(exif: Image.Exif) -> None:
    details, place = exif.get_ifd(ExifTags.IFD.Exif), exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert details[ExifTags.Base.DateTimeOriginal] == DATE
    assert details[ExifTags.Base.OffsetTimeOriginal] == OFFSET
    assert exif[ExifTags.Base.Make] == MAKE and exif[ExifTags.Base.Model] == MODEL
    assert place[ExifTags.GPS.GPSLatitude] == LATITUDE
    assert place[ExifTags.GPS.GPSLongitude] == LONGITUDE
    assert exif.get(ExifTags.Base.Orientation, 1) == 1


def _assert_upright(pixels: np.ndarray) -> None:
    """Red on top, blue below, as the orientation asked (48 x 32 stored, 32 x 48 shown)."""
    assert pixels.shape == (48, 32, 3)
    top, bottom = pixels[4:20].mean(axis=(0, 1)), pixels[28:44].mean(axis=(0, 1))
    assert top[0] > top[2] + 100, top
    assert bottom[2] > bottom[0] + 100, bottom


@pytest.mark.parametrize("kind", list(WRITERS))
def test_phone_and_camera_formats_load_upright_with_date_place_and_camera(
    tmp_path: Path, kind: str
) -> None:
    path = WRITERS[kind](tmp_path / f"photo.{kind}")
    loaded = load_image(path, follow_symlinks=False)
    _assert_upright(loaded.pixels)
    exif = _exif(loaded.exif)
    _assert_metadata_kept(exif)
    if kind == "dng":  # written into the DNG's EXIF directory by pidng
        assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.LensModel] == LENS
    assert is_whole(path)
    for long_side in (None, 20, 100):
        shape = load_image(path, long_side=long_side).pixels.shape[:2]
        assert pixel_shape(path, long_side=long_side) == shape, long_side


def test_a_raw_is_demosaiced_at_half_size_when_that_is_enough_and_looks_the_same(
    tmp_path: Path,
) -> None:
    """LibRaw's half size takes each Bayer cell as a pixel; the picture must be the same one."""
    photo = np.asarray(Image.open(Path("samples/grace_hopper.jpg")).convert("RGB"))[:240, :200]
    path = write_dng(tmp_path / "camera.dng", np.ascontiguousarray(photo))
    full = load_image(path, long_side=120)  # 120 <= 240 / 2: half size, then resized
    whole = load_image(path)  # every photosite demosaiced
    assert full.pixels.shape == (120, 100, 3) and whole.pixels.shape == (240, 200, 3)
    shrunk = np.asarray(
        Image.fromarray(np.rint(whole.pixels).astype(np.uint8)).resize((100, 120), Image.LANCZOS)
    ).astype(np.float32)
    assert np.abs(full.pixels - shrunk).mean() < 6
    assert np.abs(whole.pixels - photo).mean() < 12  # the photo the mosaic was made from


def test_a_display_p3_heic_is_converted_to_srgb(tmp_path: Path) -> None:
    """A HEIC saying Display P3 by nclx alone: its colours in sRGB, not read as if sRGB."""
    in_p3 = np.array([[187, 105, 62], [85, 177, 100]], np.uint8)  # sRGB (200,100,50), (29,180,91)
    pixels = np.repeat(np.repeat(in_p3[np.newaxis], 16, axis=0), 16, axis=1)
    path = write_with_pillow(
        tmp_path / "p3.heic",
        np.ascontiguousarray(pixels),
        "HEIF",
        quality=-1,  # lossless: the colours checked are the colours written
        color_primaries=12,  # P3 (SMPTE EG 432-1)
        transfer_characteristics=13,  # sRGB's curve
        matrix_coefficients=0,
        full_range_flag=1,
    )
    loaded = load_image(path)
    assert np.abs(loaded.pixels[8, 8] - (200, 100, 50)).max() <= 2, loaded.pixels[8, 8]
    assert np.abs(loaded.pixels[8, 24] - (29, 180, 91)).max() <= 2, loaded.pixels[8, 24]


@pytest.mark.parametrize(
    ("transfer", "reference_white"),
    [(16, 149), (18, 191)],  # PQ: 203 cd/m2 is 58 % of the signal; HLG: 75 % (ITU-R BT.2408)
)
def test_an_hdr_heif_is_tone_mapped_not_read_as_srgb(
    tmp_path: Path, transfer: int, reference_white: int
) -> None:
    """A camera's HDR HEIF (Canon's HDR PQ, Sony's HLG), BT.2020 colours: its reference white
    comes out near white, as bright as the other curve's (read as sRGB, PQ's is a dim grey),
    highlights roll off to white in order, and colours leave BT.2020 for sRGB (more saturated
    than the numbers read as sRGB)."""
    signals = [0, 60, reference_white, 215, 240, 255]
    row = np.array([[v, v, v] for v in signals] + [[120, 150, 120]], np.uint8)
    pixels = np.repeat(np.repeat(row[np.newaxis], 16, axis=0), 16, axis=1)
    path = write_with_pillow(
        tmp_path / "hdr.heic",
        np.ascontiguousarray(pixels),
        "HEIF",
        quality=-1,
        color_primaries=9,  # BT.2020
        transfer_characteristics=transfer,
        matrix_coefficients=0,
        full_range_flag=1,
    )
    loaded = load_image(path).pixels[8, 8::16]
    greys = loaded[:6, 1]
    assert np.abs(loaded[:6] - loaded[:6, 1:2]).max() <= 1  # greys stay grey
    assert 236 <= greys[2] <= 250, greys  # the reference white: near white, below the highs
    assert greys[0] == 0 and greys[-1] >= 254
    assert list(greys) == sorted(greys) and greys[1] < greys[2] < greys[3]
    red, green, blue = loaded[6]
    assert green - max(red, blue) > (150 - 120) + 5, loaded[6]  # read as sRGB: 30 apart


@pytest.mark.parametrize("kind", list(WRITERS))
def test_the_pixel_limit_is_checked_on_the_declared_size(tmp_path: Path, kind: str) -> None:
    path = WRITERS[kind](tmp_path / f"photo.{kind}")
    for ask in (load_image, pixel_shape, is_whole):
        if ask is is_whole:
            assert not is_whole(path, max_pixels=1000)
            continue
        with pytest.raises(InputError, match=r"1,536 pixels, over the limit of 1,000"):
            ask(path, max_pixels=1000)


@pytest.mark.parametrize("container", [False, True])
def test_a_jxl_header_gives_its_size_before_anything_decodes(container: bool) -> None:
    for size in [(40, 20), (123, 77), (4000, 3000), (256, 256), (17, 9000), (1000, 1500)]:
        data = io.BytesIO()
        Image.new("RGB", size, (10, 20, 30)).save(
            data, format="JXL", use_container=container, effort=1
        )
        data.seek(0)
        assert jxl.declared_size(data) == size
        assert data.tell() == 0


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("heic", "HEI"),  # HEIC or HEIF: the container's word or the file's brand
        ("avif", "AVIF"),
        ("webp", "WEBP"),
        ("jxl", "JPEG XL"),
        ("dng", "camera RAW"),
    ],
)
def test_cut_or_corrupt_files_are_refused_naming_their_format(
    tmp_path: Path, kind: str, named: str
) -> None:
    whole = WRITERS[kind](tmp_path / f"whole.{kind}").read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    garbled = tmp_path / f"garbled.{kind}"
    garbled.write_bytes(whole[:48] + bytes(range(256)) * 8)
    zeros = tmp_path / f"zeros.{kind}"  # preallocated, its writer half way through
    zeros.write_bytes(whole[: len(whole) // 2] + bytes(len(whole) - len(whole) // 2))
    for bad in (cut, garbled):
        assert not is_whole(bad), bad.name
        with pytest.raises(InputError, match=named) as refused:
            load_image(bad)
        assert str(refused.value).startswith(f"{bad.name}: ")
    if kind in ("heic", "avif"):  # judged by their boxes, not decoded
        assert not is_whole(zeros)


def test_a_heif_of_several_images_uses_its_primary_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "burst.heic"
    first = Image.fromarray(two_halves())
    second = Image.new("RGB", (64, 64), (0, 200, 0))
    first.save(path, format="HEIF", save_all=True, append_images=[second], primary_index=1)
    loaded = load_image(path)
    assert loaded.pixels.shape == (64, 64, 3)
    assert loaded.frames == 2 and "primary" in (loaded.note or "")


def test_version_and_check_list_the_formats_this_install_reads_and_writes(tmp_path) -> None:
    names = {fmt.name for fmt in formats.reads()}
    assert {"HEIC/HEIF", "AVIF", "WebP", "JPEG XL", "camera RAW"} <= names
    assert formats.missing() == []
    version = stylebox("--version")
    checked = stylebox("check", "--config", write_config(tmp_path))
    assert version.returncode == 0 and checked.returncode == 0, version.stderr + checked.stderr
    for said in (version.stdout, checked.stdout):
        assert "reads: JPEG, PNG, TIFF, WebP, AVIF, HEIC/HEIF, JPEG XL, camera RAW" in said
        assert "writes: jpeg, png, tiff, webp, avif, heic" in said


def test_the_daemon_paints_heic_avif_jxl_and_dng_keeping_date_and_place(
    tmp_path: Path, daemons
) -> None:
    """Through the real daemon: each photo's result upright, with its date and GPS; a corrupt
    HEIC quarantined with a reason naming its format."""
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    staging = tmp_path / "staging"
    staging.mkdir()
    names = []
    for kind in ("heic", "avif", "jxl", "dng"):
        made = WRITERS[kind](staging / f"IMG_{kind}.{kind}")
        drop(inbox / made.name, made.read_bytes())
        names.append(made.stem)
    good = _heic(staging / "good.heic").read_bytes()
    drop(inbox / "broken.heic", good[:40] + bytes(range(256)) * 8)
    daemon = daemons.start(config)
    failed = outbox / "failed"
    wait_for(
        lambda: (
            all((outbox / "swirl" / f"{name}.jpg").is_file() for name in names)
            and (failed / "broken.heic.error.json").is_file()
        ),
        "the four photos painted and the broken HEIC quarantined",
        daemon=daemon,
    )
    for name in names:
        with Image.open(outbox / "swirl" / f"{name}.jpg") as result:
            assert result.height > result.width, name  # upright: taller than wide
            exif = result.getexif()
            assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == DATE
            assert exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == LATITUDE
    reason = json.loads((failed / "broken.heic.error.json").read_text())["reason"]
    assert reason.startswith("broken.heic: ") and "HEI" in reason, reason
