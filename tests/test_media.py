"""Loading and saving photos: real files in tmp_path, generated here with Pillow and numpy."""

import io
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import ExifTags, Image, ImageCms

from daemon.errors import InputError
from daemon.media.decode import (
    is_complete,
    is_whole,
    load_image,
    pixel_shape,
)
from daemon.media.encode import format_for_suffix, save_image

SAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "samples" / "grace_hopper.jpg"  # 512 x 600
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _is_fixed_srgb(icc: bytes) -> bool:
    """The sRGB profile stylebox embeds, with its build date fixed so outputs are reproducible."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    fixed_date = struct.pack(">6H", 2000, 1, 1, 0, 0, 0)
    return ImageCms.getProfileDescription(profile).startswith("sRGB") and icc[24:36] == fixed_date


ORIENTATION = ExifTags.Base.Orientation
MAKE = ExifTags.Base.Make


def _saved(path: Path, image: Image.Image, **options: object) -> Path:
    image.save(path, **options)
    return path


def _png(width: int, height: int, *, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, for what Pillow will not write (16-bit RGB, absurd headers)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _rgb16_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    row = b"\x00" + struct.pack(">3H", *rgb) * width
    return _png(width, height, bit_depth=16, colour_type=2, rows=row * height)


def _swapped_primaries_icc() -> bytes:
    """sRGB with the red and green colorants swapped: its pure red is sRGB's pure green."""
    profile = bytearray(SRGB_ICC)
    (count,) = struct.unpack(">I", profile[128:132])
    entries = {bytes(profile[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    profile[red + 4 : red + 12], profile[green + 4 : green + 12] = (
        profile[green + 4 : green + 12],
        profile[red + 4 : red + 12],
    )
    return bytes(profile)


def _exif(orientation: int, make: str = "TestCam") -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = make
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:05:01 12:00:00"
    return exif.tobytes()


def _parsed_exif(data: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(data)
    return exif


def _palette_with_transparency(path: Path) -> Path:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    return _saved(path, image, transparency=1)


def _two_frame_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    return _saved(path, frames[0], save_all=True, append_images=frames[1:])


def _written(data: bytes) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return write


# name, writer, expected RGB, tolerance
MODE_CASES: list[tuple[str, Callable[[Path], Path], tuple[float, float, float], float]] = [
    ("grey.png", lambda p: _saved(p, Image.new("L", (32, 32), 128)), (128, 128, 128), 0),
    ("bilevel.png", lambda p: _saved(p, Image.new("1", (32, 32), 1)), (255, 255, 255), 0),
    (  # black at 50 % opacity over white
        "grey-alpha.png",
        lambda p: _saved(p, Image.new("LA", (32, 32), (0, 102))),
        (153, 153, 153),
        0.01,
    ),
    (
        "palette.png",
        lambda p: _saved(p, Image.new("RGB", (32, 32), (0, 0, 255)).convert("P")),
        (0, 0, 255),
        0,
    ),
    ("palette-transparent.png", _palette_with_transparency, (255, 255, 255), 0),
    (
        "rgba.png",
        lambda p: _saved(p, Image.new("RGBA", (32, 32), (0, 0, 255, 51))),
        (204, 204, 255),
        0.01,
    ),
    (
        "cmyk.tif",
        lambda p: _saved(p, Image.new("CMYK", (32, 32), (0, 255, 255, 0))),
        (255, 0, 0),
        0,
    ),
    (  # 16-bit greyscale is scaled, not clipped: 65535 is white, 257 * 100 is 100
        "grey16-white.png",
        lambda p: _saved(p, Image.new("I;16", (32, 32), 65535)),
        (255, 255, 255),
        0,
    ),
    ("grey16.png", lambda p: _saved(p, Image.new("I;16", (32, 32), 25700)), (100, 100, 100), 0),
    ("int32.tif", lambda p: _saved(p, Image.new("I", (32, 32), 32896)), (128, 128, 128), 0),
    ("float.tif", lambda p: _saved(p, Image.new("F", (32, 32), 200.5)), (200.5, 200.5, 200.5), 0),
    ("rgb16.png", _written(_rgb16_png(32, 32, (65535, 32896, 0))), (255, 128, 0), 0),
    ("frames.gif", _two_frame_gif, (255, 0, 0), 0),
    (
        "lossless.webp",
        lambda p: _saved(p, Image.new("RGB", (32, 32), (10, 200, 30)), lossless=True),
        (10, 200, 30),
        0,
    ),
    (
        "photo.jpg",
        lambda p: _saved(p, Image.new("RGB", (32, 32), (200, 100, 50)), quality=95),
        (200, 100, 50),
        3,
    ),
]


@pytest.mark.parametrize(
    ("name", "write", "expected", "tolerance"), MODE_CASES, ids=[case[0] for case in MODE_CASES]
)
def test_every_mode_loads_as_srgb_floats(
    tmp_path: Path,
    name: str,
    write: Callable[[Path], Path],
    expected: tuple[float, float, float],
    tolerance: float,
) -> None:
    loaded = load_image(write(tmp_path / name))

    assert loaded.pixels.dtype == np.float32
    assert loaded.pixels.shape == (32, 32, 3)
    np.testing.assert_allclose(
        loaded.pixels, np.broadcast_to(expected, (32, 32, 3)), atol=tolerance
    )
    assert loaded.source_size == (32, 32)


@pytest.mark.parametrize(
    ("orientation", "suffix", "marked_rows", "marked_columns"),
    [  # 6: shown turned clockwise, top-left goes top-right; 8: anticlockwise, to bottom-left
        (6, ".jpg", slice(0, 8), slice(24, 32)),
        (8, ".png", slice(40, 48), slice(0, 8)),
    ],
)
def test_exif_orientation_is_applied_and_reset(
    tmp_path: Path, orientation: int, suffix: str, marked_rows: slice, marked_columns: slice
) -> None:
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:8, :8] = (255, 0, 0)  # top-left as stored, one JPEG block
    path = _saved(tmp_path / f"turned{suffix}", Image.fromarray(stored), exif=_exif(orientation))

    loaded = load_image(path)

    assert loaded.source_size == (48, 32)
    assert loaded.pixels.shape == (48, 32, 3)
    marked = np.zeros((48, 32), bool)
    marked[marked_rows, marked_columns] = True
    np.testing.assert_allclose(
        loaded.pixels[marked].mean(axis=0), (255, 0, 0), atol=20
    )  # JPEG blurs the block
    assert loaded.pixels[~marked].mean() < 6
    assert loaded.exif is not None
    exif = _parsed_exif(loaded.exif)
    assert exif[ORIENTATION] == 1
    assert exif[MAKE] == "TestCam"
    assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2024:05:01 12:00:00"


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00XX*\x00\x00\x00\x00\x08garbage",  # no TIFF byte order
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff",  # 65535 entries, none there
    ],
    ids=["bad-header", "truncated-directory"],
)
def test_corrupt_exif_still_loads_unrotated(tmp_path: Path, exif: bytes) -> None:
    path = _saved(tmp_path / "corrupt-exif.jpg", Image.new("RGB", (48, 32), (0, 128, 0)), exif=exif)

    loaded = load_image(path)

    assert loaded.pixels.shape == (32, 48, 3)
    assert loaded.exif is None


def test_exif_from_a_tiff_keeps_description_not_structure(tmp_path: Path) -> None:
    path = _saved(tmp_path / "tagged.tif", Image.new("RGB", (40, 32)), exif=_exif(1, "TiffCam"))

    loaded = load_image(path)

    assert loaded.exif is not None
    exif = _parsed_exif(loaded.exif)
    assert exif[MAKE] == "TiffCam"
    assert not {ExifTags.Base.ImageWidth, ExifTags.Base.StripOffsets} & set(exif)


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (_swapped_primaries_icc(), (0, 255, 0)),
        (SRGB_ICC, (255, 0, 0)),
        (b"not a colour profile", (255, 0, 0)),
    ],
    ids=["swapped-primaries", "srgb", "garbage"],
)
def test_embedded_profile_is_converted_to_srgb(
    tmp_path: Path, profile: bytes, expected: tuple[int, int, int]
) -> None:
    path = _saved(
        tmp_path / "tagged.png", Image.new("RGB", (32, 32), (255, 0, 0)), icc_profile=profile
    )

    np.testing.assert_allclose(load_image(path).pixels[5, 5], expected, atol=1)


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [(100_000, 100_000, 50_000_000), (8_000, 8_000, 50_000_000), (32, 32, 1_000)],
    ids=["pillow-bomb", "over-default", "over-given"],
)
def test_too_many_pixels_is_refused_before_decoding(
    tmp_path: Path, width: int, height: int, max_pixels: int
) -> None:
    # The header claims the size; the one IDAT row could not fill it, so decoding would fail.
    rows = b"\x00" + b"\x00" * width
    path = tmp_path / "huge.png"
    path.write_bytes(_png(width, height, bit_depth=8, colour_type=0, rows=rows))

    started = time.monotonic()
    with pytest.raises(InputError, match="limit") as refused:
        load_image(path, max_pixels=max_pixels)

    assert time.monotonic() - started < 1
    assert "huge.png" in str(refused.value)
    assert "decode" not in str(refused.value)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _encoded(format: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("truncated.jpg", lambda p: p.write_bytes(_truncated(_encoded("JPEG")))),
        ("truncated.png", lambda p: p.write_bytes(_truncated(_encoded("PNG")))),
        ("empty.jpg", lambda p: p.write_bytes(b"")),
        ("noise.jpg", lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096))),
        ("notes.png", lambda p: p.write_text("not an image\n")),
        ("folder.jpg", Path.mkdir),
        ("pipe.png", os.mkfifo),
        ("missing.jpg", lambda p: None),
    ],
)
def test_unusable_files_raise_input_error_naming_the_file(
    tmp_path: Path, name: str, make: Callable[[Path], object]
) -> None:
    path = tmp_path / name
    make(path)

    with pytest.raises(InputError) as refused:
        load_image(path)

    message = str(refused.value)
    assert name in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("size", "long_side", "upscale", "expected_shape"),
    [
        ((96, 48), 32, False, (16, 32, 3)),
        ((48, 96), 24, False, (24, 12, 3)),
        ((96, 2), 10, False, (1, 10, 3)),
        ((96, 48), 200, False, (48, 96, 3)),
        ((96, 48), 200, True, (100, 200, 3)),
    ],
)
def test_long_side_keeps_aspect_and_upscales_only_when_asked(
    tmp_path: Path,
    size: tuple[int, int],
    long_side: int,
    upscale: bool,
    expected_shape: tuple[int, int, int],
) -> None:
    path = _saved(tmp_path / "flat.png", Image.new("RGB", size, (30, 60, 90)))

    loaded = load_image(path, long_side=long_side, upscale=upscale)

    assert loaded.pixels.shape == expected_shape
    assert loaded.source_size == size
    np.testing.assert_allclose(
        loaded.pixels, np.broadcast_to((30, 60, 90), expected_shape), atol=0.5
    )


def test_pixel_shape_gives_from_the_header_what_load_image_gives(tmp_path: Path) -> None:
    """The worker groups photos into batches by this without decoding them."""
    photos = {
        "turned.jpg": (Image.new("RGB", (48, 32)), _exif(6)),
        "turned.png": (Image.new("RGB", (61, 40)), _exif(8)),
        "mirrored.jpg": (Image.new("RGB", (48, 32)), _exif(2)),
        "corrupt-exif.jpg": (Image.new("RGB", (48, 32)), b"Exif\x00\x00XX*\x00\x00\x00\x00"),
        "strip.png": (Image.new("RGB", (96, 2)), None),
        "grey16.png": (Image.new("I;16", (37, 50)), None),
        # Decoded at 1/2 scale for 32 px (101 x 68), which rounds to 32 x 22, not 32 x 21.
        "drafted.jpg": (Image.new("RGB", (201, 135)), None),
    }
    paths = [
        _saved(tmp_path / name, image, **({"exif": exif} if exif else {}))
        for name, (image, exif) in photos.items()
    ]
    paths.append(SAMPLE_PHOTO)  # a real camera JPEG
    for path in paths:
        for long_side in (None, 10, 32, 33, 64, 4096):
            expected = load_image(path, long_side=long_side).pixels.shape[:2]
            assert pixel_shape(path, long_side=long_side) == expected, (path.name, long_side)


def test_pixel_shape_never_follows_a_symlink(tmp_path: Path) -> None:
    photo = _saved(tmp_path / "photo.png", Image.new("RGB", (8, 8)))
    (tmp_path / "link.png").symlink_to(photo)
    with pytest.raises(InputError, match=r"link\.png: a symlink"):
        pixel_shape(tmp_path / "link.png")


def test_jpeg_shrinks_through_draft_close_to_a_full_decode() -> None:
    path = SAMPLE_PHOTO

    loaded = load_image(path, long_side=128)

    with Image.open(path) as full:
        reference = np.asarray(full.convert("RGB").resize((109, 128), Image.Resampling.LANCZOS))
    assert loaded.source_size == (512, 600)
    assert loaded.pixels.shape == (128, 109, 3)
    assert np.abs(loaded.pixels - reference).mean() < 3


def _gradient(height: int = 32, width: int = 64) -> np.ndarray:
    return np.linspace(0, 255, height * width * 3, dtype=np.float32).reshape(height, width, 3)


@pytest.mark.parametrize(("format", "tolerance"), [("jpeg", 4), ("png", 0.5), ("tiff", 0.5)])
@pytest.mark.parametrize("to_file_object", [False, True], ids=["path", "file-object"])
def test_save_round_trip_with_srgb_profile_and_upright_exif(
    tmp_path: Path, format: str, tolerance: float, to_file_object: bool
) -> None:
    pixels = _gradient()
    path = tmp_path / f"out.{format}"
    if to_file_object:
        with path.open("wb") as file:
            save_image(pixels, file, format=format, exif=_exif(6))
    else:
        save_image(pixels, path, format=format, exif=_exif(6))

    with Image.open(path) as written:
        assert written.format == format.upper()
        assert _is_fixed_srgb(written.info["icc_profile"])
        exif = written.getexif()
        assert exif[ORIENTATION] == 1
        assert exif[MAKE] == "TestCam"
        read_back = np.asarray(written.convert("RGB"), dtype=np.float32)
    assert np.abs(read_back - pixels).mean() < tolerance
    assert load_image(path).pixels.shape == pixels.shape


def test_save_clips_and_rounds(tmp_path: Path) -> None:
    pixels = np.array([[[-20.0, 127.6, 300.0]]], dtype=np.float32)
    path = tmp_path / "clipped.png"

    save_image(pixels, path, format="png")

    with Image.open(path) as written:
        assert written.getpixel((0, 0)) == (0, 128, 255)


def test_detailed_jpeg_saves_to_a_file_object() -> None:
    """Stylised output is as busy as noise; at 512 px it once overflowed Pillow's JPEG buffer."""
    pixels = np.random.default_rng(0).uniform(0, 255, (384, 512, 3)).astype(np.float32)
    buffer = io.BytesIO()

    save_image(pixels, buffer, format="jpeg", quality=92)

    with Image.open(io.BytesIO(buffer.getvalue())) as written:
        assert written.size == (512, 384)


def test_sixteen_bit_tiff_keeps_sixteen_bit_precision(tmp_path: Path) -> None:
    pixels = _gradient()
    path = tmp_path / "deep.tif"

    save_image(pixels, path, format="tiff", exif=_exif(8), bit_depth=16)

    samples = tifffile.imread(path)
    assert samples.dtype == np.uint16
    np.testing.assert_array_equal(samples, np.rint(pixels * 257).astype(np.uint16))
    assert len(np.unique(samples)) > 256
    with Image.open(path) as written:  # and Pillow (libtiff) reads the same file
        assert _is_fixed_srgb(written.info["icc_profile"])
        assert written.getexif()[ORIENTATION] == 1
        assert written.getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal]
        np.testing.assert_allclose(np.asarray(written.convert("RGB")), pixels, atol=1)


@pytest.mark.parametrize(
    ("format", "bit_depth"), [("png", 16), ("jpeg", 16), ("gif", 8), ("tiff", 12)]
)
def test_save_refuses_impossible_requests(tmp_path: Path, format: str, bit_depth: int) -> None:
    with pytest.raises(ValueError, match=format if format == "gif" else str(bit_depth)):
        save_image(_gradient(), tmp_path / "out", format=format, bit_depth=bit_depth)


@pytest.mark.parametrize(
    ("suffix", "format"),
    [(".jpg", "jpeg"), (".JPEG", "jpeg"), (".png", "png"), (".tif", "tiff"), (".tiff", "tiff")],
)
def test_format_for_suffix(suffix: str, format: str) -> None:
    assert format_for_suffix(suffix) == format


def test_format_for_unknown_suffix_names_it() -> None:
    with pytest.raises(InputError, match=r"\.gif"):
        format_for_suffix(".gif")


def test_is_complete_wants_a_png_up_to_its_iend_chunk(tmp_path: Path) -> None:
    """Pillow decodes a PNG cut anywhere in its last 20 bytes; is_complete must not call it whole
    until the IEND chunk (with its CRC) is there, or a writer paused there is taken at half."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 90)).save(buffer, format="PNG")
    whole = buffer.getvalue()
    path = tmp_path / "photo.png"
    for cut in (len(whole) - 20, len(whole) - 12, len(whole) - 1):
        path.write_bytes(whole[:cut])
        load_image(path)  # what the watcher would otherwise be satisfied with
        assert not is_complete(path), cut
    for data in (whole, whole + b"trailing bytes some tools add"):
        path.write_bytes(data)
        assert is_complete(path)


def test_is_complete_leaves_other_formats_to_the_decoder(tmp_path: Path) -> None:
    """A JPEG cut short fails to decode already; is_complete judges only what it knows."""
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (32, 24)).save(path, format="JPEG")
    assert is_complete(path)
    assert not is_complete(tmp_path / "missing.png")


@pytest.mark.parametrize(
    ("format", "options"),
    [
        ("JPEG", {"quality": 90}),
        ("JPEG", {"quality": 90, "progressive": True}),
        ("PNG", {}),
        ("TIFF", {"compression": "tiff_deflate"}),
        ("WEBP", {"quality": 80}),
    ],
    ids=["jpeg", "progressive-jpeg", "png", "tiff", "webp"],
)
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # cut TIFFs: as expected
def test_is_whole_refuses_a_file_cut_anywhere(tmp_path: Path, format: str, options: dict) -> None:
    """The watcher's readiness check, cheap as it is (a JPEG at 1/8 scale, a PNG's chunks read
    but not inflated), must still tell a file a writer is halfway through from a whole one."""
    noise = np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=format, **options)
    whole = buffer.getvalue()
    path = tmp_path / f"photo.{format.lower()}"
    for fraction in (0.1, 0.5, 0.9, 0.99):
        path.write_bytes(whole[: int(len(whole) * fraction)])
        assert not is_whole(path), fraction
    path.write_bytes(whole[:-1])
    assert not is_whole(path)
    path.write_bytes(whole)
    assert is_whole(path)


def test_is_whole_refuses_what_load_image_refuses(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    assert is_whole(path)
    assert not is_whole(path, max_pixels=64 * 63)
    (tmp_path / "notes.jpg").write_text("not a photo")
    assert not is_whole(tmp_path / "notes.jpg")
    assert not is_whole(tmp_path / "missing.jpg")


def test_an_inbox_photo_swapped_for_a_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    """The worker checks for a link before it opens the photo; a swap in between must not be
    read through the link (O_NOFOLLOW on the open itself)."""
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), "red").save(outside)
    link = tmp_path / "inbox.png"
    link.symlink_to(outside)
    assert load_image(link).pixels.shape == (8, 8, 3)  # style images may be links
    with pytest.raises(InputError, match=r"inbox\.png: a symlink"):
        load_image(link, follow_symlinks=False)


def test_a_transparency_key_is_flattened_before_any_reduce_so_it_tints_no_edge(tmp_path) -> None:
    """An RGB PNG whose pure green is transparent (tRNS): green must become white, and the
    edge between it and red a blend of white and red only (g == b), never green's tint."""
    pixels = np.zeros((400, 3000, 3), dtype=np.uint8)
    pixels[:, :1501] = (0, 255, 0)  # not on a reduce block boundary
    pixels[:, 1501:] = (255, 0, 0)
    path = tmp_path / "keyed.png"
    Image.fromarray(pixels).save(path, transparency=(0, 255, 0))
    loaded = load_image(path, long_side=256).pixels
    assert np.abs(loaded[..., 1] - loaded[..., 2]).max() < 1.0
    assert loaded[:, 0].min() > 254  # the keyed half is white
