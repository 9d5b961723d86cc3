"""decode.py on what shares and cameras hand over (issue 23): files whose end is not there yet
(preallocated, their tail still zeros), files of several frames or pages, headers over the pixel
limit, and Pillow's warnings, which must not reach stderr raw. Real files, made here."""

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.errors import InputError
from daemon.media.decode import is_complete, is_whole, load_image, pixel_shape

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


def preallocated(data: bytes, written_bytes: int) -> bytes:
    """What a preallocating writer has left on disk after `written_bytes`: the rest zeros."""
    return data[:written_bytes] + bytes(len(data) - written_bytes)


def saved(image: Image.Image, format: str, **options) -> bytes:
    """`image` saved in `format`."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """A picture no encoder can shrink much, so a half file is half the picture."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# -- a file whose end is not there yet ----------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"quality": 90}, {"quality": 90, "progressive": True}], ids=["baseline", "progr"]
)
def test_a_preallocated_jpeg_is_never_whole_before_its_last_byte(
    tmp_path: Path, options: dict
) -> None:
    """Zeros are valid entropy-coded data: a JPEG whose tail is still zeros often decodes in
    full, and only the missing EOI marker says it is not done."""
    data = saved(noise(64, 48), "JPEG", **options)
    path = tmp_path / "photo.jpg"
    for written in range(2, len(data), max(1, len(data) // 97)):
        path.write_bytes(preallocated(data, written))
        assert not is_whole(path), written
        assert not is_complete(path), written
    path.write_bytes(data)
    assert is_whole(path)


def test_a_preallocated_png_is_never_whole_before_its_last_byte(tmp_path: Path) -> None:
    data = saved(noise(64, 48), "PNG")
    path = tmp_path / "photo.png"
    for written in range(8, len(data), max(1, len(data) // 97)):
        path.write_bytes(preallocated(data, written))
        assert not is_whole(path), written
    path.write_bytes(data)
    assert is_whole(path)


def test_whole_jpegs_reach_their_eoi(tmp_path: Path) -> None:
    """The shared photos (camera files, EXIF and its thumbnail's own EOI inside APP1 among
    them), one with bytes after its EOI (some cameras append a trailer), one with restart
    markers."""
    photos = sorted((DATA / "photos").glob("*.jp*g")) + sorted((REPO / "styles").glob("*.jp*g"))
    assert photos
    for photo in photos:
        assert is_complete(photo), photo.name
    trailer = tmp_path / "trailer.jpg"
    trailer.write_bytes(saved(noise(32, 24), "JPEG") + b"\x00" * 64 + b"vendor trailer")
    assert is_complete(trailer)
    restarts = tmp_path / "restarts.jpg"
    restarts.write_bytes(saved(noise(64, 48), "JPEG", restart_marker_blocks=1))
    assert is_complete(restarts)
    assert is_whole(restarts)


def test_bmp_and_tiff_have_no_end_to_check(tmp_path: Path) -> None:
    """Their zeros are pixels: a preallocated half file is whole as far as decoding goes, which
    is why the watcher asks who writes the file (test_share_writes)."""
    for format in ("BMP", "TIFF"):
        data = saved(noise(64, 48), format)
        path = tmp_path / f"photo.{format.lower()}"
        path.write_bytes(preallocated(data, len(data) // 2))
        assert is_whole(path), format


# -- several frames or pages --------------------------------------------------------------------


def test_an_animation_gives_its_first_frame_and_says_so(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "lime", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = load_image(path)
    assert loaded.frames == 3
    assert loaded.note == "an animation of 3 frames: the first was used"
    np.testing.assert_allclose(loaded.pixels[0, 0], (255, 0, 0), atol=2)


def test_a_tiff_of_pages_gives_its_largest_page_and_says_so(tmp_path: Path) -> None:
    """A pyramid stored small first (or a scan with a thumbnail page): the full size is wanted;
    pixel_shape, which groups photos by size, must see the same page."""
    pages = [
        Image.new("RGB", (16, 12), "red"),
        Image.new("RGB", (64, 48), "lime"),
        Image.new("RGB", (32, 24), "blue"),
    ]
    path = tmp_path / "pyramid.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    loaded = load_image(path)
    assert loaded.pixels.shape == (48, 64, 3)
    np.testing.assert_allclose(loaded.pixels[0, 0], (0, 255, 0), atol=2)
    assert loaded.frames == 3
    assert loaded.note == "a TIFF of 3 pages: page 2 (64x48, the largest) was used"
    assert pixel_shape(path) == (48, 64)
    assert is_whole(path)
    # Over the limit, the largest page within it.
    smaller = load_image(path, max_pixels=32 * 24)
    assert smaller.pixels.shape == (24, 32, 3)
    assert smaller.note == "a TIFF of 3 pages: page 3 (32x24, the largest) was used"
    assert pixel_shape(path, max_pixels=32 * 24) == (24, 32)
    too_small = r"pyramid\.tif: 16x12 is 192 pixels, over the limit of 100 "
    with pytest.raises(InputError, match=too_small):
        load_image(path, max_pixels=100)


def test_one_frame_says_nothing(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (8, 6), "red").save(path)
    loaded = load_image(path)
    assert (loaded.frames, loaded.note) == (1, None)


def test_pillows_warnings_never_reach_stderr(tmp_path: Path) -> None:
    """An animated PNG with its animation chunk twice (seen from some editors) makes Pillow warn,
    raw, on stderr, at each open; the picture itself is fine. A process of its own: pytest would
    catch the warning."""
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (16, 12), colour) for colour in ("red", "lime")]
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    data = buffer.getvalue()
    start = data.index(b"acTL") - 4
    end = start + 12 + struct.unpack(">I", data[start : start + 4])[0]
    path = tmp_path / "twice.png"
    path.write_bytes(data[:end] + data[start:end] + data[end:])
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from daemon.media.decode import is_whole, load_image, pixel_shape\n"
        "path = Path(sys.argv[1])\n"
        "assert is_whole(path)\n"
        "print(pixel_shape(path), load_image(path).pixels.shape)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "(12, 16) (12, 16, 3)"
    assert done.stderr == ""


# -- too many pixels ----------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` greyscale pixels and holds one row: enough for a
    header check, never decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def test_a_huge_png_is_refused_in_the_configured_terms(tmp_path: Path) -> None:
    """30000 x 30000 is past Pillow's own bomb limit, which refuses it in Image.open: the reason
    must still quote the configured limit and name the file, not Pillow's figure."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(30_000, 30_000))
    with pytest.raises(InputError) as refused:
        load_image(path, max_pixels=50_000_000)
    reason = str(refused.value)
    assert reason.startswith("huge.png: ")
    assert "900,000,000 pixels, over the limit of 50,000,000 (max_input_pixels)" in reason
    assert str(Image.MAX_IMAGE_PIXELS) not in reason.replace(",", "")
    assert not is_whole(path, max_pixels=50_000_000)


def test_a_configured_limit_above_pillows_own_is_the_one_in_force(tmp_path: Path) -> None:
    """A panorama of 15000 x 15000 is over twice Pillow's default limit; a user who allows it
    (max_input_pixels 300 MP) must not be refused by Pillow."""
    path = tmp_path / "panorama.png"
    path.write_bytes(png_header_only(15_000, 15_000))
    assert pixel_shape(path, max_pixels=300_000_000) == (15_000, 15_000)
    with pytest.raises(InputError, match=r"over the limit of 200,000,000 \(max_input_pixels\)"):
        pixel_shape(path, max_pixels=200_000_000)


def test_the_sidecar_says_which_frame_of_an_animation_was_painted(tmp_path: Path) -> None:
    """Through the real daemon: an animated GIF is painted from its first frame, and its
    result's sidecar says so (issue 23, Why 10)."""
    from daemon_harness import stylebox, write_config

    config = write_config(tmp_path)
    frames = [Image.new("RGB", (48, 36), colour) for colour in ("red", "lime", "blue")]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    frames[0].save(inbox / "moving.gif", save_all=True, append_images=frames[1:], duration=100)
    run = stylebox("run", "--config", config, "--once", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    sidecar = json.loads((tmp_path / "outbox" / "swirl" / "moving.json").read_text())
    assert sidecar["input_frames"] == 3
    assert "first" in sidecar["input_note"], sidecar["input_note"]
    assert "Warning" not in run.stderr  # no raw Pillow warnings
