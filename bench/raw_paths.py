"""What each way of reading a camera RAW costs for one preset-sized picture: time and peak memory.

    python -m bench.raw_paths [--megapixels 24] [--long-side 1024] [--repeats 3]
                              [--out bench/results]

A real photo (../shared/data) scaled to the size is written as a DNG of its Bayer mosaic (pidng)
and as a JPEG q92 of the same pixels. Each way runs in a fresh Python process (its own peak RSS,
VmHWM, and its rise over the imports) and is timed from opening the file to pixels at `--long-side`:

- `demosaic`: LibRaw's full demosaic (AHD), then shrunk: every photosite interpolated;
- `half size`: LibRaw's half-size mode, a 2x2 Bayer cell per pixel, then shrunk (what
  `daemon.media.raw` does when the preset is at most half the sensor's size);
- `preview`: what taking the camera's embedded JPEG preview would cost at best, a full-size
  preview being decoded (with Pillow's DCT draft) and shrunk; a real RAW's preview may be far
  smaller than the preset, which is the other half of the choice (DECISIONS.md).

Prints a table, writes raw_paths_<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.report import save_report
from tests.daemon_harness import DATA
from tests.formats_harness import write_dng

SOURCE = DATA / "photos" / "tubingen.jpg"

_CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np, rawpy
from PIL import Image
way, path, long_side = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
def hwm():  # peak resident KiB of this process's memory (ru_maxrss survives the exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = hwm()
start = time.perf_counter()
if way == "preview":
    with Image.open(path) as image:
        image.draft("RGB", (long_side * 3, long_side * 3))
        image = image.convert("RGB")
        image.thumbnail((long_side, long_side), Image.LANCZOS)
        size = image.size
else:
    with rawpy.imread(str(path)) as raw:
        rgb = raw.postprocess(
            use_camera_wb=True, half_size=way == "half size", output_bps=16, gamma=(2.4, 12.92)
        )
    image = Image.fromarray((rgb >> 8).astype(np.uint8))
    image.thumbnail((long_side, long_side), Image.LANCZOS)
    size = image.size
seconds = time.perf_counter() - start
peak = hwm()
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "rise_mib": (peak - before) / 1024,
                  "size": size}))
"""
WAYS = ("demosaic", "half size", "preview")


def make_files(folder: Path, megapixels: float) -> dict[str, Path]:
    """The DNG and the JPEG of one real photo at `megapixels` (even sides)."""
    with Image.open(SOURCE) as source:
        image = source.convert("RGB")
    scale = math.sqrt(megapixels * 1e6 / (image.width * image.height))
    size = (round(image.width * scale / 2) * 2, round(image.height * scale / 2) * 2)
    image = image.resize(size, Image.LANCZOS)
    jpeg = folder / "preview.jpg"
    image.save(jpeg, format="JPEG", quality=92)
    dng = write_dng(folder / "photo.dng", np.asarray(image), gps=False)
    return {"demosaic": dng, "half size": dng, "preview": jpeg}


def run_once(way: str, path: Path, long_side: int) -> dict[str, Any]:
    """One way, one fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, way, str(path), str(long_side)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--long-side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="stylebox-raw-") as root:
        files = make_files(Path(root), args.megapixels)
        for way in WAYS:
            runs = [run_once(way, files[way], args.long_side) for _ in range(args.repeats)]
            rows.append(
                {
                    "way": way,
                    "file_mb": files[way].stat().st_size / 1e6,
                    "seconds_median": statistics.median(run["seconds"] for run in runs),
                    "peak_mib_max": max(run["peak_mib"] for run in runs),
                    "rise_mib_max": max(run["rise_mib"] for run in runs),
                    "size": runs[0]["size"],
                }
            )
    print(f"{'way':<10} {'file MB':>8} {'seconds':>8} {'peak MiB':>9} {'rise MiB':>9}")
    for row in rows:
        print(
            f"{row['way']:<10} {row['file_mb']:8.1f} {row['seconds_median']:8.2f} "
            f"{row['peak_mib_max']:9.0f} {row['rise_mib_max']:9.0f}"
        )
    report = {"megapixels": args.megapixels, "long_side": args.long_side, "rows": rows}
    print("saved", save_report(args.out, "raw_paths", report))


if __name__ == "__main__":
    main()
