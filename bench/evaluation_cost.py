"""What one evaluation costs inside a run: `transfer.stylise` for a fixed number of evaluations,
in a fresh process per run, this checkout against another one, alternating.

    python -m bench.evaluation_cost [--size 256] [--evaluations 30] [--repeats 3] [--against DIR]
                                    [--history 100]

Each process loads the network and makes the style targets first (not timed), then times the
run: the network's passes, the losses and their gradients, and the optimiser's arithmetic,
which is what a run's evaluations cost beyond the fixed costs of bench.startup. The objective
reached is printed beside the time, so a faster tree that changed the arithmetic shows it.
`--against DIR` is another checkout (`git worktree add DIR REV`); `--history` overrides
LBFGS_HISTORY in this checkout only, to price the history size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.report import save_report
from bench.time_to_quality import DATA

REPO = Path(__file__).resolve().parents[1]

# Runs in the child with cwd = the tree measured; prints one JSON line.
_RUN = """
import json, sys
from pathlib import Path
import torch
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import lbfgs, transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.settings import StyleSettings
size, evaluations, history = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if history:
    transfer.LBFGS_HISTORY = history
settings = StyleSettings(size=size, steps=evaluations)
models = Models(resolve_device("cpu"))
model = models.for_settings(settings)
photo = pipeline.load_photo(Path(sys.argv[4]), settings, max_pixels=10**8)
styles = pipeline.load_styles([StyleImage(Path(sys.argv[5]))], settings, max_pixels=10**8)
content = pipeline.to_tensor(photo.pixels)
targets = transfer.StyleTargets()
transfer.stylize(model, content, styles, StyleSettings(size=size, steps=2), targets=targets)
result = transfer.stylize(model, content, styles, settings, targets=targets)
print(json.dumps({"seconds": result.seconds, "evaluations": result.evaluations,
                  "objective": result.losses.total}))
"""


def run(tree: Path, size: int, evaluations: int, photo: Path, style: Path, history: int) -> dict:
    """One fresh process of `tree`: seconds and objective of a run of `evaluations`."""
    command = [sys.executable, "-c", _RUN, str(size), str(evaluations), str(history)]
    command += [str(photo), str(style)]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Alternate the trees, print medians and the ratio, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photo", type=Path, default=DATA / "photos" / "tubingen.jpg")
    parser.add_argument("--style", type=Path, default=DATA / "styles" / "starry_night.jpg")
    parser.add_argument("--against", type=Path, help="another checkout, run alternately")
    parser.add_argument("--history", type=int, default=0, help="L-BFGS pairs kept, this tree")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    trees = {"this": REPO} | ({"against": args.against} if args.against else {})
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            history = args.history if name == "this" else 0
            photo, style = args.photo.resolve(), args.style.resolve()
            runs[name].append(run(tree, args.size, args.evaluations, photo, style, history))
    per_evaluation = {}
    for name, rows in runs.items():
        seconds = statistics.median(row["seconds"] / row["evaluations"] for row in rows)
        per_evaluation[name] = seconds
        objective = rows[-1]["objective"]
        print(
            f"{name:8s} {trees[name]}: {seconds * 1000:7.1f} ms per evaluation, "
            f"objective {objective:.5g} after {rows[-1]['evaluations']}"
        )
    if args.against:
        print(f"speed-up {per_evaluation['against'] / per_evaluation['this']:.2f}x")
    report = {"size": args.size, "evaluations": args.evaluations, "history": args.history}
    report |= {"trees": {k: str(v) for k, v in trees.items()}, "runs": runs}
    report |= {"seconds_per_evaluation": per_evaluation}
    print("saved", save_report(args.out, "evaluation_cost", report))


if __name__ == "__main__":
    main()
