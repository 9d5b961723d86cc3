"""The bf16 path against fp32 on the same photo and painting: the objective after each
evaluation of both, and where each run stopped.

    python -m bench.bf16_path [--size 96] [--steps 150] [--device cpu]

On a CPU without bf16 units bf16 is emulated: the figures then say what the path does to the
quality, not how fast it is (bench.evaluation_cost prices it where the units exist).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import save_report
from bench.time_to_quality import data_file
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.settings import StyleSettings

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    """Both runs, a short table, JSON with both trails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--photo", default="tubingen")
    parser.add_argument("--painting", default="starry_night")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    settings = StyleSettings(size=args.size, steps=args.steps)
    models = Models(resolve_device(args.device))
    model = models.for_settings(settings)
    photo = pipeline.load_photo(data_file("photos", args.photo), settings, max_pixels=10**9)
    painting = [StyleImage(data_file("styles", args.painting))]
    styles = pipeline.load_styles(painting, settings, max_pixels=10**9)
    content = pipeline.to_tensor(photo.pixels)
    report: dict = {"size": args.size, "steps": args.steps, "runs": {}}
    for precision in ("fp32", "bf16"):
        progress: list[transfer.Progress] = []
        result = transfer.stylize(
            model, content, styles, settings, precision=precision, callback=progress.append
        )
        report["runs"][precision] = {
            "objective": result.losses.total,
            "evaluations": result.evaluations,
            "seconds": result.seconds,
            "trail": [step.losses.total for step in progress],
        }
        print(f"{precision}: {result.losses.total:.5g} after {result.evaluations} evaluations")
    print("saved", save_report(args.out, "bf16_path", report))


if __name__ == "__main__":
    main()
