"""The daemon's peak memory for one big photo: what the readiness check and decode cost.

    python -m bench.decode_memory [--formats jpeg png heic avif jxl dng] [--megapixels 24]
                                  [--out bench/results]

A camera's photo is 24 megapixels or more, while a preset's output is a few hundred pixels
across; the watcher's readiness check and the worker's load must not cost the photo's full size
in float32 (~290 MB at 24 MP) each. For each format, a fresh daemon (a 64 px, two-evaluation
preset, so the stylising itself is small) is started and once it is ready its VmRSS is read and
its VmHWM (peak resident memory) reset by writing 5 to /proc/<pid>/clear_refs; the photo (a real
photo from ../shared/data scaled to the size, saved as JPEG q92, PNG, HEIC or AVIF q90 by
pillow-heif or Pillow, JPEG XL by its plugin, or as a DNG of its Bayer mosaic by pidng) is then
moved into the inbox, and when its job is done VmHWM is read again. Peak minus the resident
memory at rest is what the photo cost. Prints a table, writes decode_memory_<stamp>.json.
"""

from __future__ import annotations

import argparse
import math
import signal
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.report import save_report
from daemon.media.decode import pixel_shape
from tests.daemon_harness import (
    DATA,
    STYLES,
    Daemon,
    photo_cost_kib,
    rss_kib,
    write_config,
)
from tests.formats_harness import write_dng

PRESET = {"style": str(STYLES / "swirl.png"), "size": 64, "steps": 2}
SOURCE = DATA / "photos" / "tubingen.jpg"
MIB = 2**20


SUFFIXES = {"jpeg": "jpg", "png": "png", "heic": "heic", "avif": "avif", "jxl": "jxl", "dng": "dng"}
OPTIONS: dict[str, dict[str, Any]] = {
    "jpeg": {"format": "JPEG", "quality": 92},
    "png": {"format": "PNG"},
    "heic": {"format": "HEIF", "quality": 90},
    "avif": {"format": "AVIF", "quality": 90},
    "jxl": {"format": "JXL", "quality": 90, "effort": 3},
}


def make_photo(folder: Path, fmt: str, megapixels: float) -> Path:
    """A real photo scaled to `megapixels` (its aspect kept, even sides), saved as `fmt`."""
    with Image.open(SOURCE) as source:
        image = source.convert("RGB")
    scale = math.sqrt(megapixels * 1e6 / (image.width * image.height))
    size = (round(image.width * scale / 2) * 2, round(image.height * scale / 2) * 2)
    image = image.resize(size, Image.LANCZOS)
    path = folder / f"big.{SUFFIXES[fmt]}"
    if fmt == "dng":
        return write_dng(path, np.asarray(image), gps=False)
    image.save(path, **OPTIONS[fmt])
    return path


def measure(root: Path, fmt: str, megapixels: float) -> dict[str, Any]:
    """One fresh daemon, one photo of `fmt`: resident memory at rest and the peak over its job."""
    work = root / fmt
    work.mkdir()
    photo = make_photo(work, fmt, megapixels)
    config = write_config(
        work,
        presets={"big": PRESET},
        routing={"default_preset": "big"},
        logging={"level": "INFO", "file": False},
    )
    journal = work / "state" / "journal.sqlite3"
    daemon = Daemon(config)
    try:
        daemon.wait_ready()
        rest_kib = rss_kib(daemon.process.pid) or 0
        (work / "inbox").mkdir(exist_ok=True)
        photo_kib = photo_cost_kib(daemon, photo, work / "inbox", journal, timeout=300)
        daemon.send(signal.SIGTERM)
        daemon.wait_exit(30)
    finally:
        daemon.kill()
    size = pixel_shape(work / "outbox" / "originals" / photo.name, max_pixels=10**9)[::-1]
    return {
        "format": fmt,
        "size": list(size),
        "bytes": (work / "outbox" / "originals" / photo.name).stat().st_size,
        "rest_mib": rest_kib / 1024,
        "peak_mib": (rest_kib + photo_kib) / 1024,
        "photo_mib": photo_kib / 1024,
    }


def main() -> None:
    """Measure each format in a fresh daemon, print the table and save the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", choices=tuple(SUFFIXES), default=["jpeg", "png"])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stylebox-decode-") as root:
        rows = [measure(Path(root), fmt, args.megapixels) for fmt in args.formats]
    print(f"{'format':<6} {'size':>11} {'MB':>6} {'at rest':>9} {'peak':>9} {'photo':>9}")
    for row in rows:
        width, height = row["size"]
        print(
            f"{row['format']:<6} {f'{width}x{height}':>11} {row['bytes'] / 1e6:6.1f} "
            f"{row['rest_mib']:6.0f} MiB {row['peak_mib']:6.0f} MiB {row['photo_mib']:6.0f} MiB"
        )
    print("saved", save_report(args.out, "decode_memory", {"preset": PRESET, "rows": rows}))


if __name__ == "__main__":
    main()
