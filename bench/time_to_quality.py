"""Time to quality: stylebox's defaults against the reference (bench/reference.py), side by
side in one process, on the same photo, painting and objective.

    python -m bench.time_to_quality [--size 256] [--photo ...] [--style ...] [--device cpu]

Both outputs are saved as 8-bit PNGs and scored with the objective at the output size; the figure
that matters is the wall time stylebox needs to reach the reference's final objective, as a ratio
of the reference's time.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from bench.reference import reference_stylise
from bench.report import save_report
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import transfer
from daemon.engine.settings import DEFAULT_PRECISION, PRECISIONS, StyleSettings
from daemon.media import decode, encode

# ../shared/data beside the repo; STYLEBOX_DATA points elsewhere (a GPU machine without it).
DATA = Path(
    os.environ.get("STYLEBOX_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)


def score(model, image: torch.Tensor, photo: torch.Tensor, styles, settings) -> float:
    """The objective of an image as saved (8-bit), at its own size."""
    eight_bit = image.round().clamp(0, 255)
    grams = transfer.style_grams_for(model, settings, styles, max(eight_bit.shape[-2:]))
    objective = transfer.Objective(
        model, settings, transfer.resize(photo, eight_bit.shape[-2:]), grams
    )
    with torch.no_grad():
        return objective(eight_bit[None].to(photo.device))[1].total


def first_time_at_or_below(history: list[tuple[float, float]], target: float) -> float | None:
    """Seconds until the running objective first reached `target`."""
    return next((seconds for seconds, loss in history if loss <= target), None)


def compare(
    size: int,
    device: str,
    photo_path: Path,
    style_path: Path,
    evaluations: int,
    out: Path,
    precision: str = DEFAULT_PRECISION,
) -> dict:
    """Run the reference and stylebox side by side; returns the figures as plain data."""
    settings = StyleSettings(size=size)
    models = device.Models(device.resolve_device(device))
    model = models.for_settings(settings)
    styles = pipeline.load_styles([StyleImage(style_path)], settings, max_pixels=10**9)
    photo_pixels = decode.load_image(photo_path, long_side=size).pixels
    photo = pipeline.to_tensor(photo_pixels).to(models.device)
    out.mkdir(parents=True, exist_ok=True)

    ref_image, ref_history = reference_stylise(model, photo, styles, settings, evaluations)
    ours = transfer.stylise(model, photo, styles, settings, precision=precision)
    rows = {}
    for name, image, seconds in (
        ("reference", ref_image, ref_history[-1][0]),
        ("stylebox", ours.image, ours.seconds),
    ):
        path = out / f"ttq_{name}_{size}.png"
        encode.save_image(pipeline.to_pixels(image), path, format="png")
        rows[name] = {
            "objective_8bit": score(model, image, photo, styles, settings),
            "seconds": seconds,
            "output": str(path),
        }
    target = rows["reference"]["objective_8bit"]
    reached = first_time_at_or_below(ours.history, target)
    return {
        "size": size,
        "device": str(models.device),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "reference_evaluations": evaluations,
        "stylebox_evaluations": ours.evaluations,
        "stylebox_budget": ours.budget,
        "rows": rows,
        "stylebox_seconds_to_reference_objective": reached,
        "ratio": None if reached is None else reached / rows["reference"]["seconds"],
    }


def print_table(summary: dict) -> None:
    """The figures as a short table."""
    rows, reached = summary["rows"], summary["stylebox_seconds_to_reference_objective"]
    print(f"time to quality at {summary['size']} px on {summary['device']}")
    print(f"{'':10} {'objective (8-bit)':>18} {'seconds':>8}")
    for name, row in rows.items():
        print(f"{name:10} {row['objective_8bit']:18.5g} {row['seconds']:8.1f}")
    if reached is None:
        print("stylebox did not reach the reference's objective")
    else:
        print(
            f"stylebox reached the reference's objective after {reached:.1f} s: "
            f"ratio {summary['ratio']:.2f} of the reference's time"
        )


def main() -> None:
    """Run both, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--photo", type=Path, default=DATA / "photos" / "tubingen.jpg")
    parser.add_argument("--style", type=Path, default=DATA / "styles" / "starry_night.jpg")
    parser.add_argument("--evaluations", type=int, default=300, help="the reference's budget")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    summary = compare(
        args.size,
        args.device,
        args.photo,
        args.style,
        args.evaluations,
        args.out,
        args.precision,
    )
    print_table(summary)
    save_report(args.out, f"time_to_quality_{args.size}", summary)


if __name__ == "__main__":
    main()
