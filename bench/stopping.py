"""Where to stop: the best objective after every evaluation of full-length runs, and what each
candidate stopping rule would have given on them.

    python -m bench.stopping [--sizes 256 512] [--evaluations 300] [--history 100]
                             [--pairs tubingen:starry_night ...]
    python -m bench.stopping --analyse bench/results/stopping_*.json

A run here never stops early (the engine's stopping test is switched off), so each trail shows
the whole way to `--evaluations`. A rule "stop once the best objective fell by less than
`tolerance` (relative) over the last `window` evaluations" is then replayed on every trail: the
evaluation it stops at, and its objective as a ratio of the trail's last. The engine is
deterministic on the CPU, so a run that stops there gives that objective.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.report import save_report
from bench.time_to_quality import PAINTINGS, PHOTOS, data_file
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import batch_run, transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.settings import StyleSettings

REPO = Path(__file__).resolve().parents[1]
WINDOWS = (5, 10, 15, 20, 30)
TOLERANCES = (0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02)


def trail(models: Models, photo: str, painting: str, size: int, evaluations: int) -> dict:
    """One run of `evaluations`, never stopped early: its best objective after each one."""
    settings = StyleSettings(size=size, steps=evaluations)
    model = models.for_settings(settings)
    loaded = pipeline.load_photo(data_file("photos", photo), settings, max_pixels=10**9)
    styles = pipeline.load_styles(
        [StyleImage(data_file("styles", painting))], settings, max_pixels=10**9
    )
    result = transfer.stylize(model, pipeline.to_tensor(loaded.pixels), styles, settings)
    return {
        "photo": photo,
        "painting": painting,
        "size": size,
        "seconds": result.seconds,
        "trail": [best for _, best in result.history],
    }


def stop_at(values: list[float], window: int, tolerance: float) -> int:
    """The number of evaluations after which the engine's test stops (all if it never does)."""
    for n in range(window + 1, len(values) + 1):
        if batch_run.stalled_over(values[:n], window, tolerance):
            return n
    return len(values)


def analyse(trails: list[dict]) -> list[dict]:
    """Every rule on every trail: evaluations used and objective against the trail's last."""
    rows = []
    for window in WINDOWS:
        for tolerance in TOLERANCES:
            stops = [stop_at(t["trail"], window, tolerance) for t in trails]
            ratios = [
                t["trail"][s - 1] / t["trail"][-1] for t, s in zip(trails, stops, strict=True)
            ]
            rows.append(
                {
                    "window": window,
                    "tolerance": tolerance,
                    "median_evaluations": statistics.median(stops),
                    "max_evaluations": max(stops),
                    "median_ratio": statistics.median(ratios),
                    "worst_ratio": max(ratios),
                    "stops": stops,
                }
            )
    return rows


def print_rules(rows: list[dict], sizes: list[int]) -> None:
    """The rules whose worst pair stays within 3 %, fewest evaluations first."""
    print(f"rules over {len(rows[0]['stops'])} trails at {sizes} px (ratio: objective / last)")
    print(f"{'window':>6} {'tol':>7} {'median evals':>12} {'max':>5} {'median':>7} {'worst':>7}")
    for row in sorted(rows, key=lambda r: r["median_evaluations"]):
        print(
            f"{row['window']:6d} {row['tolerance']:7.4f} {row['median_evaluations']:12.0f} "
            f"{row['max_evaluations']:5d} {row['median_ratio']:7.4f} {row['worst_ratio']:7.4f}"
        )


def main() -> None:
    """Run the trails (or read saved ones), replay the rules, print, save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--history", type=int, default=0, help="L-BFGS pairs kept (0: default)")
    parser.add_argument("--pairs", nargs="+", help="photo:painting (default: 4 photos x 2)")
    parser.add_argument("--analyse", type=Path, nargs="+", help="saved stopping_*.json files")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if args.analyse:
        trails = [t for path in args.analyse for t in json.loads(path.read_text())["trails"]]
    else:
        # never stop early: the whole trail
        batch_run.STOPPING = {
            name: (window, 0.0) for name, (window, _) in batch_run.STOPPING.items()
        }
        if args.history:
            transfer.LBFGS_HISTORY = args.history
        pairs = (
            [p.split(":") for p in args.pairs]
            if args.pairs
            else [(photo, painting) for photo in PHOTOS for painting in PAINTINGS]
        )
        models = Models(resolve_device("cpu"))
        trails = []
        for size in args.sizes:
            for photo, painting in pairs:
                trails.append(trail(models, photo, painting, size, args.evaluations))
                last = trails[-1]
                print(
                    f"{size} {photo} x {painting}: {last['trail'][-1]:.5g} "
                    f"in {last['seconds']:.0f} s",
                    flush=True,
                )
        report = {"evaluations": args.evaluations, "history": args.history, "trails": trails}
        print("saved", save_report(args.out, "stopping", report))
    print_rules(analyse(trails), sorted({t["size"] for t in trails}))


if __name__ == "__main__":
    main()
