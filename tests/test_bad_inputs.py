"""A corpus of bad, odd and hostile inputs dropped into one running daemon, and what became of each.

Every entry is generated here (nothing binary is committed) and dropped into the inbox of one real
`stylebox run` subprocess with tiny presets. Each entry must end exactly one expected way:

- stylised: an image and its .json sidecar in outbox/swirl/, at the size the preset implies, the
  original moved intact to outbox/originals/;
- quarantined: moved as itself (a symlink stays a symlink, a FIFO a FIFO) to outbox/failed/ with a
  `.error.json` whose `reason` is one readable line naming the file;
- left alone: dotfiles, which the watcher ignores by design (its own temps are dotfiles).

The daemon must stay up throughout, write nothing outside its inbox, outbox and state_dir, and
still stylise a good photo dropped after the corpus. `pytest -s` prints the count per outcome.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import stat
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from daemon_harness import (
    JOB_SECONDS,
    Daemon,
    Daemons,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    sha256,
    tiny_preset,
    wait_for,
    write_config,
)
from PIL import Image, ImageSequence

from daemon.config import JOURNAL_NAME
from daemon.config.outputs import FAILED_DIR
from daemon.outbox import ERROR_SUFFIX, MAX_NAME_BYTES

PRESET = "swirl"
SIZE = 40  # the preset's long side
STOP_SECONDS = 10.0
# Every bad file fails the watcher's decode check five times before it is handed over anyway
# (~4.5 s at settle_seconds 0.3); then ~1 s per stylised photo on a CPU.
CORPUS_SECONDS = 2 * JOB_SECONDS
LONG_STEM = "long " + "é" * 115  # 235 bytes of UTF-8: with ".jpg", 239 bytes, near NAME_MAX


# -- the corpus's writers -----------------------------------------------------------------------


def encoded(image: Image.Image, format: str, **options) -> bytes:
    """The image saved in `format`."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def photo(variant: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A distinct small RGB photo (see daemon_harness.photo_bytes)."""
    return Image.open(io.BytesIO(photo_bytes(variant, format="PNG", size=size))).convert("RGB")


def truncated(data: bytes) -> bytes:
    """The first half of a file, as a copy cut off mid-way leaves it."""
    return data[: len(data) // 2]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and the CRC of type and body."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming width x height RGB pixels, followed by a tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" + b"\x00" * 30))
        + png_chunk(b"IEND", b"")
    )


def strip_png(width: int, height: int) -> bytes:
    """A width x height RGB gradient, as PNG."""
    x = np.linspace(0, 255, width, dtype=np.float32)[np.newaxis, :, np.newaxis]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, np.newaxis, np.newaxis]
    pixels = np.concatenate(
        [np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
         np.full((height, width, 1), 128, np.float32)],
        axis=2,
    )  # fmt: skip
    return encoded(Image.fromarray(pixels.astype(np.uint8)), "PNG")


def grey16_png() -> bytes:
    """A 16-bit greyscale PNG (mode I;16) using the whole 0..65535 range."""
    grey = np.asarray(photo(7).convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(grey)
    assert image.mode == "I;16"
    return encoded(image, "PNG")


def palette_with_transparency_png() -> bytes:
    """A palette PNG whose colour 0 is transparent (a tRNS chunk)."""
    image = photo(9).quantize(colors=16)
    return encoded(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    """Three frames of one size: a photo first, then flat green and flat blue."""
    frames = [photo(10), Image.new("RGB", (64, 48), "green"), Image.new("RGB", (64, 48), "blue")]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    """Three pages of different shapes: landscape first, so the output's shape names the page."""
    pages = [photo(11, (64, 48)), photo(12, (48, 64)), photo(13, (32, 32))]
    return encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def exif_rotated_jpeg() -> bytes:
    """Stored landscape (64 x 48) with EXIF Orientation 6: upright it is portrait."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return encoded(photo(14), "JPEG", quality=90, exif=exif.tobytes())


def corrupt_exif_jpeg() -> bytes:
    """A good JPEG with an APP1 Exif segment of garbage right after its SOI marker."""
    garbage = b"Exif\x00\x00" + b"MM\x00\x2a\xff\xff\xff\xf0" + random.Random(2).randbytes(200)
    segment = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    jpeg = encoded(photo(15), "JPEG", quality=90)
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + segment + jpeg[2:]


# -- what each entry must become ----------------------------------------------------------------

Kind = Literal["file", "symlink", "fifo"]


@dataclass(frozen=True)
class Stylised:
    """An output of exactly `size` (width, height); with `first_frame`, its colours are those of
    the input's first frame (of several, each coloured differently)."""

    size: tuple[int, int]
    first_frame: bool = False


@dataclass(frozen=True)
class Quarantined:
    """Moved to failed/ as a `kind`, its reason naming it and containing each of `words`."""

    words: tuple[str, ...]
    kind: Kind = "file"


@dataclass(frozen=True)
class LeftAlone:
    """Never touched: still in the inbox, byte for byte, and nothing made from it."""


Expected = Stylised | Quarantined | LeftAlone


@dataclass(frozen=True)
class Case:
    """One corpus entry: its path in the inbox, how to make it, and what it must become."""

    name: str
    make: Callable[[Path, Path], bytes | None]  # (path in the inbox, outside folder) -> its bytes
    expected: Expected

    def __str__(self) -> str:
        return self.name


def data(factory: Callable[[], bytes]) -> Callable[[Path, Path], bytes]:
    """A writer that drops the bytes `factory` makes at the path."""

    def make(path: Path, _outside: Path) -> bytes:
        content = factory()
        drop(path, content)
        return content

    return make


def symlink_to(target: str | Callable[[Path], Path]) -> Callable[[Path, Path], None]:
    """A writer that makes a symlink to `target` (a name beside it, or a path in `outside`)."""

    def make(path: Path, outside: Path) -> None:
        os.symlink(target(outside) if callable(target) else target, path)

    return make


def fifo(path: Path, _outside: Path) -> None:
    """A named pipe: opening it for reading would block until a writer comes."""
    os.mkfifo(path)


def folder_holding_a_photo(path: Path, _outside: Path) -> bytes:
    """A folder named like a photo (the case's parent), with a good photo inside it."""
    assert path.parent.name.endswith(".jpg")
    content = photo_bytes(16)
    drop(path, content)  # makes the folder
    return content


SECRET = photo_bytes(17)  # outside/secret.jpg: a good photo the daemon must never read
STANDARD = (SIZE, SIZE * 48 // 64)  # a 64 x 48 photo at the preset's size: 40 x 30
UNREADABLE = ("not an image",)
# VGG-19 halves the image at each of the four poolings before relu5_1: a side under 16 px at the
# preset's size becomes 0 px inside the network.

CASES = [
    Case("empty.jpg", data(lambda: b""), Quarantined(("empty",))),
    Case("truncated.jpg", data(lambda: truncated(photo_bytes(1))), Quarantined(("truncated",))),
    Case(
        "truncated.png",
        data(lambda: truncated(photo_bytes(2, format="PNG"))),
        Quarantined(("cannot decode",)),
    ),
    Case("noise.jpg", data(lambda: random.Random(1).randbytes(4096)), Quarantined(UNREADABLE)),
    Case(
        "notes.png",
        data(lambda: b"Shopping list: milk, eggs, flour.\n" * 20),
        Quarantined(UNREADABLE),
    ),
    Case(
        "page.png",
        data(lambda: b"<!DOCTYPE html><html><body><img src='cat.png'></body></html>\n"),
        Quarantined(UNREADABLE),
    ),
    Case("bomb.png", data(huge_png_header), Quarantined(("pixels", "limit"))),
    Case(
        "one_pixel.png",
        data(lambda: encoded(Image.new("RGB", (1, 1), "red"), "PNG")),
        Stylised((1, 1)),
    ),
    Case("strip.png", data(lambda: strip_png(20_000, 8)), Stylised((SIZE, 1))),
    # An ordinary 4:1 panorama: 40 x 10 at this preset's size (at 512 px: wider than 32:1).
    Case(
        "panorama.jpg",
        data(lambda: encoded(photo(23, (160, 40)), "JPEG", quality=90)),
        Stylised((SIZE, SIZE // 4)),
    ),
    Case("cmyk.jpg", data(lambda: encoded(photo(3).convert("CMYK"), "JPEG")), Stylised(STANDARD)),
    Case("grey16.png", data(grey16_png), Stylised(STANDARD)),
    Case("grey.png", data(lambda: encoded(photo(8).convert("L"), "PNG")), Stylised(STANDARD)),
    Case("palette.png", data(palette_with_transparency_png), Stylised(STANDARD)),
    Case("animated.gif", data(animated_gif), Stylised(STANDARD, first_frame=True)),
    # Page 2 would come out 30 x 40, page 3 40 x 40.
    Case("pages.tif", data(multipage_tiff), Stylised(STANDARD, first_frame=True)),
    Case("rotated.jpg", data(exif_rotated_jpeg), Stylised(STANDARD[::-1])),
    Case("bad_exif.jpg", data(corrupt_exif_jpeg), Stylised(STANDARD)),
    Case("png_inside.jpg", data(lambda: photo_bytes(4, format="PNG")), Stylised(STANDARD)),
    Case("café 東京.jpg", data(lambda: photo_bytes(5)), Stylised(STANDARD)),
    Case("my holiday photo.jpg", data(lambda: photo_bytes(6)), Stylised(STANDARD)),
    Case(f"{LONG_STEM}.jpg", data(lambda: photo_bytes(18)), Stylised(STANDARD)),
    Case("a..b.jpg", data(lambda: photo_bytes(19)), Stylised(STANDARD)),
    Case("..jpg", data(lambda: photo_bytes(20)), LeftAlone()),  # a dotfile: hidden, ignored
    Case("...jpg", data(lambda: photo_bytes(21)), LeftAlone()),
    Case(
        "secret_link.jpg",
        symlink_to(lambda outside: outside / "secret.jpg"),
        Quarantined(("symlink",), kind="symlink"),
    ),
    Case("loop_a.jpg", symlink_to("loop_b.jpg"), Quarantined(("symlink",), kind="symlink")),
    Case("loop_b.jpg", symlink_to("loop_a.jpg"), Quarantined(("symlink",), kind="symlink")),
    Case("pipe.jpg", fifo, Quarantined(("not a regular file",), kind="fifo")),
    Case("x.jpg/inside.jpg", folder_holding_a_photo, Stylised(STANDARD)),
]


# -- one daemon, the whole corpus -----------------------------------------------------------------


@dataclass
class Run:
    """What the corpus run left behind, gathered once the daemon had stopped."""

    inbox: Path
    outbox: Path
    outside: Path
    written: dict[str, bytes | None]  # case name -> the bytes dropped (None: no regular file)
    sidecars: dict[str, tuple[Path, dict]]  # source file name -> (sidecar path, its document)
    errors: dict[str, tuple[Path, dict]]  # inbox-relative source -> (error path, its document)
    daemon: Daemon
    exit_code: int
    outside_before: dict[str, bytes]
    outside_after: dict[str, bytes]
    top_level: list[str]  # the names in the test's folder afterwards


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in files_under(folder)}


def gather(inbox: Path, outbox: Path) -> tuple[dict, dict]:
    """The sidecars of outbox/swirl by source name, and the error files of failed/ by source."""
    sidecars = {}
    for path in sorted((outbox / PRESET).glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        sidecars[document["source"]] = (path, document)
    errors = {}
    for path in sorted((outbox / FAILED_DIR).glob(f"*{ERROR_SUFFIX}")):
        document = json.loads(path.read_text(encoding="utf-8"))
        source = Path(document["source"]).relative_to(inbox.resolve())
        errors[source.as_posix()] = (path, document)
    return sidecars, errors


def is_settled(case: Case, inbox: Path, sidecars: dict, errors: dict) -> bool:
    """The entry has left the inbox and ended somewhere (or, if left alone, nothing to wait for)."""
    if isinstance(case.expected, LeftAlone):
        return True
    ended = Path(case.name).name in sidecars or case.name in errors
    return ended and not os.path.lexists(inbox / case.name)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Run]:
    """Drop the whole corpus into one running daemon, then one good photo; stop it; gather."""
    folder = tmp_path_factory.mktemp("corpus")
    inbox, outbox, outside = folder / "inbox", folder / "outbox", folder / "outside"
    drop(outside / "secret.jpg", SECRET)
    outside_before = snapshot(outside)
    config = write_config(folder, presets={PRESET: tiny_preset(steps=3)})
    daemons = Daemons()
    try:
        daemon = daemons.start(config)
        daemon.wait_ready()
        written = {}
        for case in CASES:
            (inbox / case.name).parent.mkdir(parents=True, exist_ok=True)
            written[case.name] = case.make(inbox / case.name, outside)

        def settled() -> bool:
            sidecars, errors = gather(inbox, outbox)
            return all(is_settled(case, inbox, sidecars, errors) for case in CASES)

        def unsettled() -> list[str]:
            sidecars, errors = gather(inbox, outbox)
            return [c.name for c in CASES if not is_settled(c, inbox, sidecars, errors)]

        wait_for(
            settled,
            "every entry out of the inbox, stylised or quarantined",
            timeout=CORPUS_SECONDS,
            daemon=daemon,
            state=unsettled,
        )
        # Still up, and still working.
        good = drop(inbox / "after_corpus.jpg", photo_bytes(22))
        wait_for(
            lambda: "after_corpus.jpg" in gather(inbox, outbox)[0],
            "a good photo dropped after the corpus",
            daemon=daemon,
        )
        assert gather(inbox, outbox)[0]["after_corpus.jpg"][1]["input_sha256"] == good
        daemon.send(signal.SIGTERM)
        exit_code = daemon.wait_exit(STOP_SECONDS)
        sidecars, errors = gather(inbox, outbox)
        yield Run(
            inbox=inbox,
            outbox=outbox,
            outside=outside,
            written=written,
            sidecars=sidecars,
            errors=errors,
            daemon=daemon,
            exit_code=exit_code,
            outside_before=outside_before,
            outside_after=snapshot(outside),
            top_level=sorted(p.name for p in folder.iterdir()),
        )
    finally:
        daemons.close()


def outcome(run: Run, case: Case) -> str:
    """What actually became of the entry: stylised, quarantined or left alone (or 'lost')."""
    if Path(case.name).name in run.sidecars:
        return "stylised"
    if case.name in run.errors:
        return "quarantined"
    if os.path.lexists(run.inbox / case.name):
        return "left alone"
    return "lost"


EXPECTED_OUTCOME = {Stylised: "stylised", Quarantined: "quarantined", LeftAlone: "left alone"}


def mean_rgb(image: Image.Image) -> np.ndarray:
    """The mean colour of an image, (3,) floats."""
    return np.asarray(image.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))


def frame_colours(content: bytes) -> list[np.ndarray]:
    """The mean colour of each frame (or page) of an image file."""
    with Image.open(io.BytesIO(content)) as image:
        return [mean_rgb(frame) for frame in ImageSequence.Iterator(image)]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_entry_ends_as_expected(run: Run, case: Case) -> None:
    expected = case.expected
    written = run.written[case.name]
    details = run.errors.get(case.name, (None, {}))[1].get("reason", "")
    assert outcome(run, case) == EXPECTED_OUTCOME[type(expected)], details

    if isinstance(expected, Stylised):
        sidecar_path, sidecar = run.sidecars[Path(case.name).name]
        image_path = sidecar_path.with_suffix(".jpg")
        # Named after the photo; a name too long for the outbox is cut at a character boundary.
        stem = Path(case.name).stem
        if len(stem.encode()) <= MAX_NAME_BYTES - len(".json"):
            assert image_path.stem == stem
        else:
            assert stem.startswith(image_path.stem) and len(image_path.stem) > len(stem) // 2
            assert len(image_path.with_suffix(".json").name.encode()) <= MAX_NAME_BYTES
        with Image.open(image_path) as image:
            image.load()
            assert (image.size, image.format) == (expected.size, "JPEG")
            colours = mean_rgb(image)
        if expected.first_frame:
            frames = frame_colours(written)
            assert len(frames) == 3
            distances = [float(np.abs(colours - frame).max()) for frame in frames]
            assert distances.index(min(distances)) == 0, distances
        assert sidecar["size"] == list(expected.size)
        assert sidecar["input_sha256"] == sha256(written)
        # The original moved out of the inbox, intact.
        originals = {sha256(p.read_bytes()) for p in files_under(run.outbox / "originals")}
        assert sha256(written) in originals
    elif isinstance(expected, Quarantined):
        error_path, error = run.errors[case.name]
        moved = error_path.with_name(error_path.name.removesuffix(ERROR_SUFFIX))
        mode = os.lstat(moved).st_mode
        is_kind = {"file": stat.S_ISREG, "symlink": stat.S_ISLNK, "fifo": stat.S_ISFIFO}
        assert is_kind[expected.kind](mode), f"{moved} is not a {expected.kind}"
        if expected.kind == "file":
            assert moved.read_bytes() == written
            assert error["input_sha256"] == sha256(written)
        reason = error["reason"]
        assert Path(case.name).name in reason, reason
        assert "\n" not in reason and "Traceback" not in reason and len(reason) < 300, reason
        assert all(word in reason for word in expected.words), reason
    else:
        assert (run.inbox / case.name).read_bytes() == written
        # Not even looked at: never hashed (the journal's memo of files), never queued.
        journal = run.daemon.config.parent / "state" / JOURNAL_NAME
        path = (run.inbox / case.name).resolve()
        assert path not in {Path(row["path"]).resolve() for row in journal_rows(journal, "files")}
        assert path not in {Path(row["source_path"]).resolve() for row in journal_rows(journal)}


def test_the_daemon_survives_the_corpus_and_touches_nothing_else(run: Run) -> None:
    outcomes = {case.name: outcome(run, case) for case in CASES}
    counts = Counter(outcomes.values())
    summary = ", ".join(f"{counts[name]} {name}" for name in (*EXPECTED_OUTCOME.values(), "lost"))
    unexpected = [
        f"{case.name} ({outcomes[case.name]}, expected {EXPECTED_OUTCOME[type(case.expected)]})"
        for case in CASES
        if outcomes[case.name] != EXPECTED_OUTCOME[type(case.expected)]
    ]
    print(f"\nbad-input corpus: {summary}; not as expected: {', '.join(unexpected) or 'none'}")

    assert run.exit_code == 0, run.daemon.log_tail()  # up throughout, and a clean stop
    # Nothing written outside the inbox, outbox and state_dir.
    assert run.outside_after == run.outside_before
    logs = [run.daemon.stdout_path.name, run.daemon.stderr_path.name]
    assert run.top_level == sorted(["config.yaml", *logs, "inbox", "outbox", "outside", "state"])
    # Every result and every error belongs to an entry (each entry's own test says which way).
    assert set(run.sidecars) <= {Path(c.name).name for c in CASES} | {"after_corpus.jpg"}
    assert set(run.errors) <= {c.name for c in CASES}
    # The folder named x.jpg is walked, never taken for a file; it stays, emptied.
    assert "x.jpg" not in run.errors
    assert (run.inbox / "x.jpg").is_dir() and not any((run.inbox / "x.jpg").iterdir())
    # The symlink's target was never read: nothing was made from its bytes.
    assert sha256(SECRET) not in {doc["input_sha256"] for _, doc in run.sidecars.values()}
    assert os.readlink(run.outbox / FAILED_DIR / "secret_link.jpg") == str(
        run.outside / "secret.jpg"
    )
