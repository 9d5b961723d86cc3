"""GPU check: correctness against the CPU, then speed and memory on a CUDA device.

    python -m bench.gpu_check [--out DIR] [--quick] [--only SECTION ...]

Prints each section's figures as it ends and writes gpu_check.json after each. Figures: seconds
per 512 and 1024 px photo with the default preset, evaluations per second and achieved TFLOP/s
at 512 px (fp32, TF32, bf16 autocast), each precision's final objective at 512 px (and the
default twice: the run-to-run noise), 8 photos sequential against batched per precision, peak
memory per size, time to quality at 512 px against the reference, and what torch.compile does to
an evaluation.
cuDNN's autotuner stays off, as in the daemon: its trials need far more memory than a run does
(DECISIONS.md, cuDNN).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench import throughput
from bench.time_to_quality import DATA, measure_pair
from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import device, transfer
from daemon.engine.settings import DEFAULT_PRECISION, PRECISIONS, StyleSettings
from daemon.media import decode

PHOTO = DATA / "photos" / "tubingen.jpg"
STYLE = DATA / "styles" / "starry_night.jpg"
# Enough for a steady pace per evaluation, few enough that every precision fits the time: decides
# the daemon's batch_size default (batched >= 1.5x sequential for 8 photos pays for itself).
THROUGHPUT_EVALUATIONS = 100


def load(device: torch.device, size: int) -> tuple[torch.Tensor, list[transfer.Style]]:
    """Photo and painting at `size`, on `device`."""
    settings = StyleSettings(size=size)
    styles = pipeline.load_styles([StyleImage(STYLE)], settings, max_pixels=10**9)
    photo = pipeline.to_tensor(decode.load_image(PHOTO, long_side=size).pixels).to(device)
    return photo, styles


def cpu_agreement(models: device.Models) -> dict:
    """The same short run on CPU and GPU (TF32 off): objectives should agree closely."""
    settings = StyleSettings(size=64, steps=10)
    results = {}
    for name in ("cpu", str(models.device)):
        model = device.Models(torch.device(name)).for_settings(settings)
        photo, styles = load(torch.device(name), 64)
        result = transfer.stylize(model, photo, styles, settings, precision="fp32")
        results[name] = result.losses.total
    cpu, gpu = results.values()
    return {"cpu": cpu, "gpu": gpu, "relative_difference": abs(cpu - gpu) / cpu}


def evaluation_speed(
    models: device.Models, size: int, mode: str, repeats: int = 20, compiled: bool = False
) -> dict:
    """Median seconds per objective evaluation (forward + backward) and achieved TFLOP/s;
    `compiled`: the network through torch.compile, and how long compiling took."""
    torch.backends.cuda.matmul.allow_tf32 = False  # Grams stay fp32, as in the engine
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    settings = StyleSettings(size=size)
    model = models.for_settings(settings)
    photo, styles = load(models.device, size)
    grams = transfer.style_grams_for(model, settings, styles, size)
    network = torch.compile(model) if compiled else model
    objective = transfer.Objective(network, settings, photo, grams, bf16=mode == "bf16")
    x = photo[None].clone().requires_grad_(True)

    def once() -> None:
        loss, _ = objective(x)
        loss.backward()

    started = time.perf_counter()
    once()
    torch.cuda.synchronize()
    first_seconds = time.perf_counter() - started

    counting = (  # eager: the counter does not see compiled code
        transfer.Objective(model, settings, photo, grams, bf16=mode == "bf16")
        if compiled
        else objective
    )
    with FlopCounterMode(display=False) as counter:
        counting(x)[0].backward()
    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        once()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    seconds = sorted(times)[len(times) // 2]
    flops = counter.get_total_flops()
    return {
        "size": size,
        "mode": mode,
        "compiled": compiled,
        "first_call_seconds": first_seconds,
        "seconds_per_evaluation": seconds,
        "evaluations_per_second": 1 / seconds,
        "tflop_per_evaluation": flops / 1e12,
        "tflops": flops / seconds / 1e12,
    }


def photo_time(models: device.Models, size: int, precision: str = DEFAULT_PRECISION) -> dict:
    """One photo with the default preset, end to end."""
    settings = StyleSettings(size=size)
    model = models.for_settings(settings)
    photo, styles = load(models.device, size)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    started = time.perf_counter()
    result = transfer.stylize(model, photo, styles, settings, precision=precision)
    torch.cuda.synchronize()
    return {
        "size": size,
        "precision": precision,
        "seconds": time.perf_counter() - started,
        "objective": result.losses.total,
        "evaluations": result.evaluations,
        "budget": result.budget,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def peak_memory(models: device.Models, size: int) -> dict:
    """Peak GPU memory of one evaluation at `size` (what bounds the largest photo)."""
    settings = StyleSettings(size=size)
    model = models.for_settings(settings)
    photo = torch.rand(3, size * 3 // 4, size, device=models.device) * 255
    style = transfer.Style(torch.rand(3, size, size, device=models.device) * 255)
    grams = transfer.style_grams_for(model, settings, [style], size)
    torch.cuda.reset_peak_memory_stats()
    objective = transfer.Objective(model, settings, photo, grams)
    x = photo[None].clone().requires_grad_(True)
    objective(x)[0].backward()
    torch.cuda.synchronize()
    return {"size": size, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    """Run every check (a failing one is reported, the rest still run), print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--only", nargs="+", metavar="SECTION", help="run just these sections")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = device.Models(device.resolve_device("cuda"))
    small, large = (128, 256) if args.quick else (512, 1024)
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    def section(name: str, run) -> None:
        if args.only and name not in args.only:
            return
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            report[name] = run()
        except Exception as exc:  # report and go on: device time is scarce
            traceback.print_exc()
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, json.dumps(report[name]), flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))

    section("cpu_agreement", lambda: cpu_agreement(models))
    section("speed", lambda: [evaluation_speed(models, small, m) for m in PRECISIONS])
    section("photos", lambda: [photo_time(models, small), photo_time(models, large)])
    section(
        "precision",
        lambda: [photo_time(models, small, p) for p in (*PRECISIONS, DEFAULT_PRECISION)],
    )
    section(
        "throughput",
        lambda: [
            throughput.measure(8, 8, small, THROUGHPUT_EVALUATIONS, "cuda", STYLE, precision)
            for precision in PRECISIONS
        ],
    )
    section("memory", lambda: [peak_memory(models, s) for s in (small, large, 2 * large)])
    with tempfile.TemporaryDirectory() as scratch:
        section(
            "time_to_quality",
            lambda: measure_pair(models, PHOTO, STYLE, small, Path(scratch), against=None),
        )
    section(
        "compile",
        lambda: [
            evaluation_speed(models, small, DEFAULT_PRECISION, compiled=compiled)
            for compiled in (False, True)
        ],
    )
    print(f"\n{report['device']}, torch {report['torch']}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
