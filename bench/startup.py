"""Fixed costs of a run: what a one-shot `stylebox stylize` (and every container start) pays
before and after its evaluations, phase by phase, in a fresh process each time.

    python -m bench.startup [--repeats 3] [--size 64] [--device cpu] [--against DIR]

Each repeat starts two fresh interpreters: one runs the phases below in order and reports each
one's wall time (imports, weights and network, photo and painting, style targets, the first
evaluation, a second one, saving); the other runs the whole `stylebox stylize` command, 1
evaluation, timed from outside. `--against DIR` (another checkout, e.g. `git worktree add DIR
REV`) times that tree's whole command too, alternating with this one's, so the two are compared
on the same load. The medians are printed and saved under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import save_report

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "samples" / "grace_hopper.jpg"
STYLE = REPO / "styles" / "starry_night.jpg"

# Runs in the child; prints one JSON line of {phase: seconds}.
_PHASES = """
import json, sys, time
from pathlib import Path
marks = [("start", time.perf_counter())]
def mark(name): marks.append((name, time.perf_counter()))
import torch
mark("import torch")
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.settings import StyleSettings
mark("import stylebox")
size, device_name, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
settings = StyleSettings(size=size, steps=1)
models = Models(resolve_device(device_name))
model = models.for_settings(settings)
mark("weights and network")
photo = pipeline.load_photo(Path(sys.argv[4]), settings, max_pixels=10**8)
styles = pipeline.load_styles([StyleImage(Path(sys.argv[5]))], settings, max_pixels=10**8)
mark("photo and painting")
content = pipeline.to_tensor(photo.pixels).to(models.device)
grams = transfer.style_grams_for(model, settings, styles, size)
mark("style targets")
objective = transfer.Objective(model, settings, content, grams)
for name in ("first evaluation", "second evaluation"):
    x = content[None].clone().requires_grad_(True)
    loss, _ = objective(x)
    loss.backward()
    mark(name)
result = transfer.stylize(model, content, styles, settings)
writer = pipeline.image_writer(result, photo, format="jpeg", quality=92, bit_depth=8)
with open(out, "wb") as file:
    writer(file)
mark("a 1-evaluation run and saving")
print(json.dumps({b[0]: round(b[1] - a[1], 4) for a, b in zip(marks, marks[1:])}))
"""


def phases(size: int, device: str, folder: Path) -> dict[str, float]:
    """One fresh process through the phases: seconds each."""
    command = [sys.executable, "-c", _PHASES, str(size), device, str(folder / "phases.jpg")]
    command += [str(PHOTO), str(STYLE)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def whole_command(size: int, device: str, folder: Path, tree: Path = REPO) -> float:
    """Wall seconds of the whole `stylebox stylize` command of `tree`, 1 evaluation."""
    command = [sys.executable, "-m", "daemon", "stylize", str(PHOTO), "--style", str(STYLE)]
    command += ["--size", str(size), "--steps", "1", "--device", device]
    command += ["--out", str(folder / f"whole_{tree.name}.jpg")]
    started = time.perf_counter()
    # cwd first on sys.path under -m: the tree's own daemon package is the one imported.
    subprocess.run(command, cwd=tree, capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    """Print and save the median of each phase and of the whole command."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--against", type=Path, help="another checkout, timed alternately")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    wholes: list[float] = []
    others: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            runs.append(phases(args.size, args.device, Path(scratch)))
            wholes.append(whole_command(args.size, args.device, Path(scratch)))
            if args.against:
                others.append(whole_command(args.size, args.device, Path(scratch), args.against))
    medians = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    for name, seconds in medians.items():
        print(f"{name:32s} {seconds:7.3f} s")
    print(f"{'whole stylebox stylize command':32s} {statistics.median(wholes):7.3f} s")
    if others:
        ratio = statistics.median(others) / statistics.median(wholes)
        print(f"{'the same from ' + str(args.against):32s} {statistics.median(others):7.3f} s")
        print(f"{'speed-up':32s} {ratio:7.2f}x")
    report = {"size": args.size, "device": args.device, "repeats": args.repeats}
    report |= {"against": str(args.against), "against_seconds": others}
    report |= {"phases": medians, "runs": runs, "whole_command_seconds": wholes}
    print("saved", save_report(args.out, "startup", report))


if __name__ == "__main__":
    main()
