"""The best objective after N evaluations with and without the bound on L-BFGS's trial steps
(`lbfgs.MAX_MOVE`), the same photo and painting, one run after the other.

    python -m bench.step_bound [--size 256] [--steps 60] [--bounds none 255 64 16]
                               [--pair tubingen:starry_night] [--out bench/results]

The engine as the daemon runs it (`transfer.stylize`, the stopping rule on), fp32 or bf16 as
the CPU has it; `none` runs without a bound. Evaluations, not seconds, are compared: a bound
changes which points are evaluated, not what one costs. Prints a line a bound and writes
step_bound_<size>_<stamp>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import save_report
from bench.time_to_quality import data_file
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import lbfgs, transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.settings import StyleSettings
from daemon.media import decode

MARKS = (3, 5, 10, 15, 20, 30, 40, 60, 100, 150, 200, 300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--bounds", nargs="+", default=["none", "255", "64", "16"])
    parser.add_argument("--pair", default="tubingen:starry_night")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    models = Models(resolve_device("cpu"))
    settings = StyleSettings(size=args.size, steps=args.steps)
    photo_stem, painting_stem = args.pair.split(":")
    source = [StyleImage(data_file("styles", painting_stem))]
    styles = pipeline.load_styles(source, settings, max_pixels=10**9)
    loaded = decode.load_image(
        data_file("photos", photo_stem), max_pixels=10**9, long_side=args.size
    )
    photo = pipeline.to_tensor(loaded.pixels)
    model = models.for_settings(settings)
    rows = []
    for bound in args.bounds:
        lbfgs.MAX_MOVE = float("inf") if bound == "none" else float(bound)
        values: list[float] = []
        result = transfer.stylize(
            model,
            photo,
            styles,
            settings,
            precision=models.precision,
            callback=lambda progress, seen=values: seen.append(progress.losses.total),
        )
        best, lowest = [], float("inf")
        for value in values:
            lowest = min(lowest, value)
            best.append(lowest)
        after = {n: best[n - 1] for n in MARKS if n <= len(best)}
        rows.append(
            {
                "bound": bound,
                "evaluations": len(values),
                "objective": result.losses.total,
                "best_after": after,
            }
        )
        marks = " ".join(f"@{n}:{value:.3g}" for n, value in after.items())
        print(f"bound {bound}: {len(values)} evaluations, {result.losses.total:.4g} ({marks})")
    report = {
        "size": args.size,
        "steps": args.steps,
        "pair": args.pair,
        "precision": models.precision,
        "rows": rows,
    }
    print("saved", save_report(args.out, f"step_bound_{args.size}", report))


if __name__ == "__main__":
    main()
