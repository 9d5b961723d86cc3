"""What the daemon's default preset costs per photo: the engine seconds, evaluations and objective
each sidecar records, this checkout's daemon against another one's, on the same photos.

    python -m bench.daemon_engine [--size 512] [--photos tubingen golden_gate] [--against DIR]

Each tree's `stylebox run --once` (cwd = the tree: its own package) runs on a fresh temporary
inbox holding the photos from ../shared/data/photos, with the shipped starry_night painting and
every other setting at its default; the trees take turns, one daemon at a time. Prints one row
per photo and tree and the ratio of the engine seconds, saves JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.report import save_report
from bench.time_to_quality import data_file

REPO = Path(__file__).resolve().parents[1]
PAINTING = REPO / "styles" / "starry_night.jpg"


def run_daemon(tree: Path, photos: list[Path], size: int, folder: Path) -> list[dict]:
    """One `stylebox run --once` of `tree` over `photos`: each result's sidecar."""
    shutil.rmtree(folder, ignore_errors=True)
    for root in ("inbox", "outbox", "state"):  # the daemon never makes its roots
        (folder / root).mkdir(parents=True)
    for photo in photos:
        shutil.copy(photo, folder / "inbox" / photo.name)
    config = {
        "inbox": str(folder / "inbox"),
        "outbox": str(folder / "outbox"),
        "state_dir": str(folder / "state"),
        "device": "cpu",
        "presets": {"starry_night": {"style": str(PAINTING), "size": size}},
        "routing": {"default_preset": "starry_night"},
        "originals": {"policy": "keep"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "daemon", "run", "--config", str(path), "--once"]
    subprocess.run(command, cwd=tree, check=True, capture_output=True)
    sidecars = sorted((folder / "outbox" / "starry_night").glob("*.json"))
    return [json.loads(sidecar.read_text()) for sidecar in sidecars]


def main() -> None:
    """Alternate the trees' daemons, print and save what their sidecars say."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--photos", nargs="+", default=["tubingen", "golden_gate"])
    parser.add_argument("--against", type=Path, help="another checkout: the old default")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    photos = [data_file("photos", name) for name in args.photos]
    trees = {"ours": REPO} | ({"old": args.against} if args.against else {})
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, tree in trees.items():
            sidecars = run_daemon(tree, photos, args.size, Path(scratch) / name)
            rows[name] = [
                {
                    "photo": sidecar["source"],
                    "seconds": sidecar["seconds"]["stylise"],
                    "evaluations": sidecar["evaluations"],
                    "objective": sidecar["losses"]["total"],
                }
                for sidecar in sidecars
            ]
            for row in rows[name]:
                print(
                    f"{name:5s} {row['photo']:24s} {row['seconds']:7.1f} s "
                    f"{row['evaluations']:4d} evaluations, objective {row['objective']:.5g}",
                    flush=True,
                )
    report = {"size": args.size, "trees": {k: str(v) for k, v in trees.items()}, "rows": rows}
    if args.against:
        pairs = list(zip(rows["ours"], rows["old"], strict=True))
        report["seconds_ratio"] = statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)
        report["objective_ratio"] = [a["objective"] / b["objective"] for a, b in pairs]
        print(f"engine seconds, ours / old: median {report['seconds_ratio']:.3f}")
        print("objective, ours / old:", ", ".join(f"{r:.4f}" for r in report["objective_ratio"]))
    print("saved", save_report(args.out, f"daemon_engine_{args.size}", report))


if __name__ == "__main__":
    main()
