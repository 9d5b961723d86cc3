"""Coarse to fine against one scale at a large size, side by side in one run, judged by more than
the top scale's objective.

    python -m bench.coarse_to_fine [--size 1024] [--steps N] [--pairs tubingen:starry_night ...]
                                   [--block PX] [--device cpu] [--out bench/results]
                                   [--finer-share K] [--checkpoints N ...]
                                   [--ways coarse-to-fine one-scale native]

For each photo x painting (../shared/data): the photo at `--size` (upsampled with LANCZOS when
it is smaller: the shared photos are 1024 px at most, and a larger painting needs a larger
photo), painted by the engine as the daemon paints it, once coarse to fine (engine.stages) and
once at one scale (`single_scale`), plus a native run at 512 px. Each result is scored by

- its objective at its own size (the run's last best), and
- the objective of its downsample to 512 px, with the 512 px run's targets, against the native
  512 px run's own: a picture that keeps the painting's large structures scores lower there,
  which the top scale's objective cannot see (VGG's receptive fields are fixed in pixels).

Wall seconds are the whole stylisation (targets, every stage). `--steps` caps the budget (the
first stage's; finer ones get stages.FINER_STAGE_SHARE of it): say so beside the figures. Sheets
(photo, one scale, coarse to fine: whole, and their centres at full size) per pair are saved
under --out to be looked at. Prints
a table and writes coarse_to_fine_<size>_<stamp>.json.

To choose how long the top stage runs, `--finer-share 1` gives it the first stage's budget and
`--checkpoints 33 50 66` scores its best picture after that many of its evaluations, as a run
whose top stage had that budget would return it (the same trajectory, stopped there): one run
prices every budget. `--ways` leaves out runs already made (their figures are deterministic on
one machine and thread count; their seconds are not, so compare seconds within one run only).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.report import save_report
from bench.time_to_quality import data_file
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import stages, transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.memory import fit_for
from daemon.engine.objective import Objective
from daemon.engine.settings import StyleSettings

JUDGE_SIDE = 512


def photo_at(stem: str, side: int) -> torch.Tensor:
    """A shared photo as a (3, H, W) tensor with its long side `side` (LANCZOS either way)."""
    with Image.open(data_file("photos", stem)) as source:
        image = source.convert("RGB")
    scale = side / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)


def judged(
    models: Models, settings: StyleSettings, photo: torch.Tensor, styles: list, image: torch.Tensor
) -> float:
    """The objective at JUDGE_SIDE of `image` downsampled there, with that size's targets."""
    small = dataclasses.replace(settings, size=JUDGE_SIDE)
    model = models.for_settings(small)
    size = transfer.fit_size(*photo.shape[-2:], JUDGE_SIDE)
    content = transfer.resize(photo, size)
    grams = transfer.style_grams_for(model, small, styles, JUDGE_SIDE)
    with torch.no_grad():
        _, terms = Objective(model, small, content, grams).per_item(
            transfer.resize(image, size)[None]
        )
    return float(terms[0, 0])


def run(
    models: Models,
    settings: StyleSettings,
    photo: torch.Tensor,
    styles: list,
    block: int | None,
    checkpoints: tuple[int, ...] = (),
) -> tuple[transfer.Result, float, dict[int, torch.Tensor]]:
    """One stylisation as the daemon runs it; its result, wall seconds, and the top stage's
    best picture after each of `checkpoints` evaluations of it."""
    model = models.for_settings(settings)
    pictures: dict[int, torch.Tensor] = {}

    def seen(progress: transfer.Progress) -> None:
        position = progress.position
        if position.stage == position.stages and progress.evaluation in checkpoints:
            pictures[progress.evaluation] = progress.picture()

    started = time.perf_counter()
    fit = fit_for(models.memory_budget_bytes(), 1, block)
    result = transfer.stylize(
        model, photo, styles, settings, precision=models.precision, fit=fit, callback=seen
    )
    return result, time.perf_counter() - started, pictures


SHEET_SIDE = 1024  # px, each picture's long side on a sheet: the whole composition at a glance
CROP_SIDE = 512  # px, the square cut from each picture's centre at full size: its strokes


def sheets(images: list[torch.Tensor], labels: list[str], path: Path) -> None:
    """Two sheets to look at: the pictures side by side at most SHEET_SIDE px each (their
    large structures), and beside `path` a `_crop` one of their centres at full size (the
    texture a print shows), so a 2048 or 4096 px comparison is looked at whole and up close
    without a 6000 px wide file."""
    pictures = [Image.fromarray(pipeline.to_pixels(i).round().astype("uint8")) for i in images]
    whole = []
    for picture in pictures:
        scale = min(1.0, SHEET_SIDE / max(picture.size))
        size = (round(picture.width * scale), round(picture.height * scale))
        whole.append(picture.resize(size, Image.LANCZOS) if scale < 1 else picture)
    _sheet(whole, labels, path)
    crops = []
    for picture in pictures:
        left, top = (picture.width - CROP_SIDE) // 2, (picture.height - CROP_SIDE) // 2
        crops.append(picture.crop((left, top, left + CROP_SIDE, top + CROP_SIDE)))
    _sheet(crops, labels, path.with_name(f"{path.stem}_crop{path.suffix}"))


def _sheet(tiles: list[Image.Image], labels: list[str], path: Path) -> None:
    """Images side by side, each labelled, as a JPEG."""
    width, height = sum(t.width for t in tiles), max(t.height for t in tiles) + 24
    canvas = Image.new("RGB", (width, height), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for tile, label in zip(tiles, labels, strict=True):
        canvas.paste(tile, (x, 24))
        draw.text((x + 6, 6), label, fill="black")
        x += tile.width
    canvas.save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=None, help="cap (default: the engine's)")
    parser.add_argument("--pairs", nargs="+", default=["tubingen:starry_night"])
    parser.add_argument("--block", type=int, default=None, help="force blocks of PX")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--finer-share", type=float, default=stages.FINER_STAGE_SHARE)
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[])
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    args = parser.parse_args()
    stages.FINER_STAGE_SHARE = args.finer_share
    models = Models(resolve_device(args.device), args.precision)
    rows: list[dict[str, Any]] = []
    for pair in args.pairs:
        rows += bench_pair(models, args, pair)
    print(f"{'pair':<28} {'way':<32} {'seconds':>8} {'evals':>6} {'objective':>11} {'at 512':>11}")
    for row in rows:
        print(
            f"{row['pair']:<28} {row['way']:<32} {row['seconds']:8.1f} {row['evaluations']:6d} "
            f"{row['objective']:11.4g} {row['objective_at_512']:11.4g}"
        )
    report = {
        "size": args.size,
        "steps": args.steps,
        "finer_share": args.finer_share,
        "precision": models.precision,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    print("saved", save_report(args.out, f"coarse_to_fine_{args.size}", report))


WAYS = {"coarse-to-fine": "coarse to fine", "one-scale": "one scale", "native": "native 512"}


def bench_pair(models: Models, args: argparse.Namespace, pair: str) -> list[dict[str, Any]]:
    """The rows of one photo x painting; its sheet saved when both large runs were made."""
    photo_stem, painting_stem = pair.split(":")
    settings = StyleSettings(size=args.size, steps=args.steps)
    source = [StyleImage(data_file("styles", painting_stem))]
    styles = pipeline.load_styles(source, settings, max_pixels=10**9)
    photo = photo_at(photo_stem, args.size)
    native = dataclasses.replace(settings, size=JUDGE_SIDE)
    small_styles = pipeline.load_styles(source, native, max_pixels=10**9)
    rows: list[dict[str, Any]] = []
    made = {}

    def row(way: str, result: transfer.Result, seconds: float, image: torch.Tensor) -> None:
        rows.append(
            {
                "pair": pair,
                "way": way,
                "seconds": seconds,
                "evaluations": result.evaluations,
                "objective": result.losses.total,
                "objective_at_512": judged(models, settings, photo, small_styles, image),
                "stages": [
                    {**dataclasses.asdict(stage), "size": list(stage.size)}
                    for stage in result.stages
                ],
            }
        )

    if "native" in args.ways:
        small_photo = photo_at(photo_stem, JUDGE_SIDE)
        result, seconds, _ = run(models, native, small_photo, small_styles, None)
        row(WAYS["native"], result, seconds, result.image)
    for way, each in (
        ("coarse-to-fine", settings),
        ("one-scale", dataclasses.replace(settings, single_scale=True)),
    ):
        if way not in args.ways:
            continue
        result, seconds, pictures = run(
            models, each, photo, styles, args.block, tuple(args.checkpoints)
        )
        made[way] = result
        row(WAYS[way], result, seconds, result.image)
        before = sum(stage.evaluations for stage in result.stages[:-1])
        for evaluations, picture in sorted(pictures.items()):
            if len(result.stages) == 1 or evaluations == result.stages[-1].evaluations:
                continue
            at, best = result.history[before + evaluations - 1]
            begun = result.stages[-2].ended
            top = dataclasses.replace(
                result.stages[-1], evaluations=evaluations, seconds=at - begun, ended=at
            )
            cut = dataclasses.replace(
                result,
                losses=dataclasses.replace(result.losses, total=best),
                evaluations=before + evaluations,
                stages=[*result.stages[:-1], top],
            )
            row(f"{WAYS[way]}, top stage {evaluations}", cut, at, picture)
    if len(made) == 2:
        args.out.mkdir(parents=True, exist_ok=True)
        sheets(
            [photo, made["one-scale"].image, made["coarse-to-fine"].image],
            ["photo", "one scale", "coarse to fine"],
            args.out / f"coarse_to_fine_{args.size}_{photo_stem}_{painting_stem}.jpg",
        )
    return rows


if __name__ == "__main__":
    main()
