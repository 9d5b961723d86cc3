"""Time to quality as the user gets it: the whole `stylebox stylize` process with the default
preset against the peer's whole process (bench/reference.py: the seed's algorithm done right,
300 evaluations), per photo x painting, side by side in one run.

    python -m bench.time_to_quality [--size 256] [--pairs tubingen:starry_night ...]
                                    [--against DIR] [--device cpu] [--sheets 2]

Each command is timed from outside, start to exit, and its saved 8-bit PNG is scored here with
the objective at its size, so the figures are what a user waits for and what they get.
`--against DIR` runs another checkout's `stylebox stylize` too (`git worktree add DIR REV`: the
default before a change, reported as "old"). `--sheets N` puts photo, peer, old and ours side by
side for the first N pairs, as JPEGs under --out, to be looked at.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from bench.report import save_report
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.settings import StyleSettings
from daemon.media import decode

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the repo; STYLEBOX_DATA points elsewhere (a GPU machine without it).
DATA = Path(os.environ.get("STYLEBOX_DATA", REPO / ".." / "shared" / "data"))
PHOTOS = ("tubingen", "golden_gate", "hoovertowernight", "child")
PAINTINGS = ("starry_night", "the_scream")


def data_file(folder: str, stem: str) -> Path:
    """`stem` of ../shared/data/<folder>, whatever its suffix."""
    (match,) = (DATA / folder).glob(f"{stem}.*")
    return match


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of a whole command, start to exit."""
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def ours(tree: Path, photo: Path, painting: Path, out: Path, size: int, device: str) -> list[str]:
    """`stylebox stylize` of `tree` with the default preset (cwd = tree: its own package)."""
    return [sys.executable, "-m", "daemon", "stylize", str(photo), "--style", str(painting),
            "--size", str(size), "--device", device, "--out", str(out)]  # fmt: skip


def peer(photo: Path, painting: Path, out: Path, size: int, device: str) -> list[str]:
    """The reference's whole process."""
    return [sys.executable, "-m", "bench.reference", str(photo), str(painting), str(out),
            "--size", str(size), "--device", device]  # fmt: skip


def score(models: Models, image_path: Path, photo: Path, painting: Path, size: int) -> float:
    """The objective of a saved 8-bit image, fp32, at its own size, against photo and painting
    loaded as the commands load them."""
    settings = StyleSettings(size=size)
    model = models.for_settings(settings)
    styles = pipeline.load_styles([StyleImage(painting)], settings, max_pixels=10**9)
    content = pipeline.to_tensor(decode.load_image(photo, long_side=size).pixels)
    saved = pipeline.to_tensor(decode.load_image(image_path).pixels).to(models.device)
    grams = transfer.style_grams_for(model, settings, styles, max(saved.shape[-2:]))
    content = transfer.resize(content.to(models.device), tuple(saved.shape[-2:]))
    objective = transfer.Objective(model, settings, content, grams)
    with torch.no_grad():
        return objective(saved[None])[1].total


def sheet(photo: Path, images: dict[str, Path], out: Path, height: int = 256) -> None:
    """Photo and each result side by side at one height, each labelled."""
    tiles = [("photo", Image.open(photo).convert("RGB"))]
    tiles += [(name, Image.open(path).convert("RGB")) for name, path in images.items()]
    tiles = [
        (name, im.resize((round(im.width * height / im.height), height))) for name, im in tiles
    ]
    canvas = Image.new("RGB", (sum(im.width for _, im in tiles), height + 20), "white")
    x = 0
    for name, im in tiles:
        canvas.paste(im, (x, 20))
        ImageDraw.Draw(canvas).text((x + 4, 4), name, fill="black")
        x += im.width
    canvas.save(out, quality=90)


def measure_pair(
    models: Models, photo: Path, painting: Path, size: int, scratch: Path, against: Path | None
) -> dict:
    """The peer, ours (and the old default of `against`), each timed whole and scored."""
    device = str(models.device)
    commands = {
        "peer": (peer(photo, painting, scratch / "peer.png", size, device), REPO),
        "ours": (ours(REPO, photo, painting, scratch / "ours.png", size, device), REPO),
    }
    if against:
        commands["old"] = (ours(against, photo, painting, scratch / "old.png", size, device),
                           against)  # fmt: skip
    row: dict = {"photo": photo.stem, "painting": painting.stem, "size": size}
    for name, (command, cwd) in commands.items():
        row[f"{name}_seconds"] = timed(command, cwd)
        row[f"{name}_objective"] = score(models, scratch / f"{name}.png", photo, painting, size)
    row["time_ratio"] = row["ours_seconds"] / row["peer_seconds"]
    row["objective_vs_peer"] = row["ours_objective"] / row["peer_objective"]
    if against:
        row["objective_vs_old"] = row["ours_objective"] / row["old_objective"]
        row["old_time_ratio"] = row["old_seconds"] / row["peer_seconds"]
    return row


def main() -> None:
    """Run every pair, print the table with median and worst, save JSON and sheets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", nargs="+", help="photo:painting stems (default 4 x 2)")
    parser.add_argument("--against", type=Path, help="another checkout: the old default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sheets", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    pairs = [p.split(":") for p in args.pairs] if args.pairs else [
        (photo, painting) for photo in PHOTOS for painting in PAINTINGS
    ]  # fmt: skip
    models = Models(resolve_device(args.device))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        for index, (photo_name, painting_name) in enumerate(pairs):
            photo, painting = data_file("photos", photo_name), data_file("styles", painting_name)
            row = measure_pair(models, photo, painting, args.size, scratch, args.against)
            rows.append(row)
            print(
                f"{photo_name} x {painting_name}: ours {row['ours_seconds']:.1f} s, peer "
                f"{row['peer_seconds']:.1f} s (time {row['time_ratio']:.3f}x), objective vs "
                f"peer {row['objective_vs_peer']:.3f}x"
                + (f", vs old {row['objective_vs_old']:.3f}x" if args.against else ""),
                flush=True,
            )
            if index < args.sheets:
                names = [n for n in ("peer", "old", "ours") if (scratch / f"{n}.png").exists()]
                stem = f"{photo_name}_{painting_name}_{args.size}"
                args.out.mkdir(parents=True, exist_ok=True)
                sheet(
                    photo, {n: scratch / f"{n}.png" for n in names}, args.out / f"sheet_{stem}.jpg"
                )
    summary = {}
    for key in ("time_ratio", "objective_vs_peer", "objective_vs_old", "old_time_ratio"):
        values = [row[key] for row in rows if key in row]
        if values:
            summary[key] = {"median": statistics.median(values), "worst": max(values)}
            print(f"{key}: median {summary[key]['median']:.3f}, worst {summary[key]['worst']:.3f}")
    report = {"size": args.size, "device": args.device, "against": str(args.against)}
    report |= {"threads": torch.get_num_threads(), "rows": rows, "summary": summary}
    print("saved", save_report(args.out, f"time_to_quality_{args.size}", report))


if __name__ == "__main__":
    main()
