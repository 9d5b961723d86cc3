"""Memory per output size: the peak of one objective evaluation, and the largest photo that fits.

    python -m bench.memory [--sizes 128 256 512 1024] [--budget-gib 4] [--device auto]

A photo too large for the machine fails only once it is being stylised (or, on a CPU, drives the
host into swap), so the `size` a preset may ask for should come from a measured line, not a guess.
For each size, one evaluation of transfer.Objective (forward and backward through the real Caffe
VGG-19) on a 4:3 photo whose long side is that size, with the style Grams of styles/swirl.png.

Each size runs in a fresh subprocess of this module: a process's peak RSS only ever goes up, and
the allocator keeps what an earlier, larger size freed. The child reads its RSS (psutil) after
`import torch` and after the model loads (the model's own baseline), then resets its peak RSS,
VmHWM (by writing 5 to /proc/self/clear_refs), after the setup and reads it after the evaluation,
so the peak is the evaluation's, model and targets included (psutil has no peak field and
ru_maxrss cannot be reset, so VmHWM is read from /proc/self/status). With CUDA (--device cuda or
auto), the same child also reports torch.cuda.max_memory_allocated over the evaluation.

The line memory = a + b * pixels is fitted by least squares on the evaluation peaks; the largest
4:3 long side under --budget-gib follows from it. One evaluation is not a whole job: L-BFGS keeps
2 * history_size flat copies of the image (transfer._optimize: history 100), which is shown beside
it as a computed, not measured, addition. Prints a table and writes memory_<stamp>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.report import save_report

STYLE = Path(__file__).resolve().parents[1] / "styles" / "swirl.png"
ASPECT = (3, 4)  # height : width of the photo: a landscape 4:3 camera frame
GIB = 2**30
MIB = 2**20
CHILD_TIMEOUT_SECONDS = 600


def rss_kib() -> int:
    """This process's resident set size now, in KiB."""
    return psutil.Process().memory_info().rss // 1024


def peak_rss_kib() -> int:
    """This process's peak RSS since start or the last reset_peak_rss, in KiB (VmHWM). Not
    daemon_harness's: importing it would load the daemon before the bare reading is taken."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise KeyError("/proc/self/status has no VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def photo_shape(long_side: int) -> tuple[int, int]:
    """(H, W) of a 4:3 landscape photo with this long side, rounded as the engine rounds."""
    from daemon.engine.transfer import fit_size

    return fit_size(*ASPECT, long_side)


def measure_in_child(size: int, device_name: str) -> dict[str, Any]:
    """One evaluation at `size` in this (fresh) process; what it cost, as plain data."""
    rss_start_kib = rss_kib()
    import torch

    from daemon import pipeline
    from daemon.config import StyleImage
    from daemon.engine import transfer
    from daemon.engine.device import Models, resolve_device
    from daemon.engine.settings import StyleSettings

    rss_imports_kib = rss_kib()
    device = resolve_device(device_name)
    cuda = device.type == "cuda"
    settings = StyleSettings(size=size)
    model = Models(device).for_settings(settings)
    gc.collect()
    rss_model_kib = rss_kib()
    hwm_load_kib = peak_rss_kib()
    cuda_model_bytes = torch.cuda.memory_allocated() if cuda else None

    styles = pipeline.load_styles([StyleImage(STYLE)], settings, max_pixels=10**9)
    generator = torch.Generator().manual_seed(0)
    height, width = photo_shape(size)
    photo = (torch.rand(3, height, width, generator=generator) * 255).to(device)
    grams = transfer.style_grams_for(model, settings, styles, size)
    objective = transfer.Objective(model, settings, photo, grams)
    x = photo[None].clone().requires_grad_(True)
    gc.collect()
    hwm_setup_kib = peak_rss_kib()
    rss_setup_kib = rss_kib()
    reset = reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    loss, _ = objective(x)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    hwm_eval_kib = peak_rss_kib()
    return {
        "size": size,
        "height": height,
        "width": width,
        "pixels": height * width,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "evaluation_seconds": seconds,
        "rss_start_mib": rss_start_kib / 1024,
        "rss_imports_mib": rss_imports_kib / 1024,
        "rss_model_mib": rss_model_kib / 1024,
        "model_mib": (rss_model_kib - rss_imports_kib) / 1024,
        "peak_load_mib": hwm_load_kib / 1024,
        "peak_setup_mib": hwm_setup_kib / 1024,
        "rss_setup_mib": rss_setup_kib / 1024,
        # With the reset: the evaluation's own peak; without: the whole process's.
        "peak_evaluation_mib": hwm_eval_kib / 1024,
        "peak_reset": reset,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_model_mib": None if cuda_model_bytes is None else cuda_model_bytes / MIB,
        "cuda_peak_evaluation_mib": torch.cuda.max_memory_allocated() / MIB if cuda else None,
    }


def run_child(size: int, device: str) -> dict[str, Any]:
    """Measure `size` in a fresh interpreter; the JSON line it printed."""
    command = [sys.executable, "-m", "bench.memory", "--child-size", str(size), "--device", device]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"size {size} on {device} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_line(pixels: list[int], mib: list[float]) -> dict[str, float]:
    """Least-squares memory = a + b * pixels: a in MiB, b in bytes per pixel, and the worst miss."""
    slope, intercept = np.polyfit(np.asarray(pixels, float), np.asarray(mib, float), 1)
    misses = [abs(intercept + slope * p - m) / m for p, m in zip(pixels, mib, strict=True)]
    return {"a_mib": intercept, "b_bytes_per_pixel": slope * MIB, "worst_miss": max(misses)}


def largest_long_side(a_mib: float, bytes_per_pixel: float, budget_gib: float) -> int | None:
    """The largest 4:3 long side whose fitted memory is within the budget (None: not even 1 px)."""
    room = budget_gib * GIB - a_mib * MIB
    if room <= 0 or bytes_per_pixel <= 0:
        return None
    side = math.isqrt(int(room / bytes_per_pixel * ASPECT[1] / ASPECT[0])) + 2
    while side > 0:
        height, width = photo_shape(side)
        if a_mib * MIB + bytes_per_pixel * height * width <= budget_gib * GIB:
            return side
        side -= 1
    return None


def summarise(
    rows: list[dict[str, Any]],
    key: str,
    budget_gib: float,
    lbfgs_bytes_per_pixel: int,
    floor_mib: float = 0.0,
) -> dict[str, Any]:
    """The line through `key` over the sizes, and what the budget holds with and without L-BFGS.

    `floor_mib` is a peak every job pays whatever its size (the weights being loaded): a budget
    below it holds no photo at all.
    """
    pixels = [row["pixels"] for row in rows]
    line = fit_line(pixels, [row[key] for row in rows])
    with_history = line["b_bytes_per_pixel"] + lbfgs_bytes_per_pixel
    fits_at_all = floor_mib * MIB <= budget_gib * GIB
    return {
        "measure": key,
        **line,
        "budget_gib": budget_gib,
        "floor_mib": floor_mib,
        "largest_long_side": largest_long_side(line["a_mib"], line["b_bytes_per_pixel"], budget_gib)
        if fits_at_all
        else None,
        "largest_long_side_with_lbfgs_history": largest_long_side(
            line["a_mib"], with_history, budget_gib
        )
        if fits_at_all
        else None,
    }


def print_table(report: dict[str, Any]) -> None:
    """The figures as a short table."""
    rows = report["rows"]
    first = rows[0]
    print(
        f"\nmemory of one objective evaluation (forward + backward, Caffe VGG-19), 4:3 photos; "
        f"{report['cpus']} CPUs, {first['threads']} torch threads, "
        f"load average {report['load_before'][0]:.2f} before"
    )
    model = sorted(row["model_mib"] for row in rows)
    print(
        f"baseline: python {first['rss_start_mib']:.0f} MiB, after imports (torch, torchvision) "
        f"{first['rss_imports_mib']:.0f} MiB, model alone +{model[0]:.0f} to {model[-1]:.0f} MiB "
        f"over the children; peak while loading the weights "
        f"{max(row['peak_load_mib'] for row in rows):.0f} MiB (a floor for any budget)"
    )
    header = f"{'size':>5} {'H x W':>11} {'pixels':>9} {'peak RSS MiB':>12} {'eval s':>7}"
    if report["cuda"]:
        header += f" {'CUDA peak MiB':>13}"
    print(header)
    for row in rows:
        line = (
            f"{row['size']:5d} {row['height']:5d} x {row['width']:<5d}{row['pixels']:9d} "
            f"{row['peak_evaluation_mib']:12.0f} {row['evaluation_seconds']:7.1f}"
        )
        cuda_row = report["cuda_rows_by_size"].get(str(row["size"]))
        if cuda_row:
            line += f" {cuda_row['cuda_peak_evaluation_mib']:13.0f}"
        print(line)
    for fit in report["fits"]:
        print(
            f"{fit['measure']}: memory = {fit['a_mib']:.0f} MiB + "
            f"{fit['b_bytes_per_pixel']:.0f} B x pixels (worst miss {fit['worst_miss']:.1%}); "
            f"in {fit['budget_gib']:g} GiB: long side {fit['largest_long_side']} px for one "
            f"evaluation, {fit['largest_long_side_with_lbfgs_history']} px with L-BFGS's history "
            f"(+{report['lbfgs_bytes_per_pixel']} B/pixel, computed)"
        )


def main() -> None:
    """Measure each size in a child, fit the line, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--budget-gib", type=float, default=4.0)
    parser.add_argument("--device", default="auto", help="auto: CPU RSS, and CUDA where present")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size is not None:
        print(json.dumps(measure_in_child(args.child_size, args.device)))
        return
    if len(args.sizes) < 2:
        parser.error("a line needs at least two --sizes")

    import torch  # only to ask whether CUDA is here; the measuring happens in children

    # Not at the top (it imports torch): a child's first RSS reading is the bare interpreter's.
    from daemon.engine.memory import LBFGS_BYTES_PER_PIXEL

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    load_before = os.getloadavg()
    started = time.monotonic()
    rows, cuda_rows = [], []
    for size in sorted(args.sizes):
        rows.append(run_child(size, "cpu"))
        print(f"[{time.monotonic() - started:5.0f} s] cpu {size}: {json.dumps(rows[-1])}")
        if cuda:
            cuda_rows.append(run_child(size, "cuda" if args.device == "auto" else args.device))
            print(f"[{time.monotonic() - started:5.0f} s] cuda {size}: {json.dumps(cuda_rows[-1])}")
    load_peak_mib = max(row["peak_load_mib"] for row in rows)
    fits = [
        summarise(
            rows, "peak_evaluation_mib", args.budget_gib, LBFGS_BYTES_PER_PIXEL, load_peak_mib
        )
    ]
    if cuda_rows:
        fits.append(
            summarise(cuda_rows, "cuda_peak_evaluation_mib", args.budget_gib, LBFGS_BYTES_PER_PIXEL)
        )
    report = {
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "torch": torch.__version__,
        "cuda": bool(cuda_rows),
        "cuda_device": torch.cuda.get_device_name() if cuda_rows else None,
        "style": str(STYLE),
        "lbfgs_bytes_per_pixel": LBFGS_BYTES_PER_PIXEL,
        "rows": rows,
        "cuda_rows_by_size": {str(row["size"]): row for row in cuda_rows},
        "fits": fits,
        "wall_seconds": time.monotonic() - started,
    }
    print_table(report)
    path = save_report(args.out, "memory", report)
    print(f"wrote {path} ({report['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
