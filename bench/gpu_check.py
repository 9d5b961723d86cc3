"""GPU check: correctness against the CPU, then speed and memory on a CUDA device.

    python -m bench.gpu_check [--out DIR] [--quick]

Prints a table and writes gpu_check.json. Figures: seconds per 512 and 1024 px photo with the
default preset, evaluations per second and achieved TFLOP/s at 512 px (fp32, TF32, bf16
autocast), peak memory per size, and time to quality at 512 px against the reference.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.time_to_quality import DATA, compare
from daemon import engine, imaging, pipeline
from daemon.config import StyleImage
from daemon.settings import StyleSettings

PHOTO = DATA / "photos" / "tubingen.jpg"
STYLE = DATA / "styles" / "starry_night.jpg"


def load(device: torch.device, size: int) -> tuple[torch.Tensor, list[engine.Style]]:
    """Photo and painting at `size`, on `device`."""
    settings = StyleSettings(size=size)
    styles = pipeline.load_styles([StyleImage(STYLE)], settings, max_pixels=10**9)
    photo = pipeline.to_tensor(imaging.load_image(PHOTO, long_side=size).pixels).to(device)
    return photo, styles


def cpu_agreement(models: pipeline.Models) -> dict:
    """The same short run on CPU and GPU (TF32 off): objectives should agree closely."""
    settings = StyleSettings(size=64, steps=10)
    results = {}
    for device in ("cpu", str(models.device)):
        model = pipeline.Models(torch.device(device)).for_settings(settings)
        photo, styles = load(torch.device(device), 64)
        results[device] = engine.stylise(model, photo, styles, settings).losses.total
    cpu, gpu = results.values()
    return {"cpu": cpu, "gpu": gpu, "relative_difference": abs(cpu - gpu) / cpu}


def evaluation_speed(models: pipeline.Models, size: int, mode: str, repeats: int = 20) -> dict:
    """Median seconds per objective evaluation (forward + backward) and achieved TFLOP/s."""
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"
    settings = StyleSettings(size=size)
    model = models.for_settings(settings)
    photo, styles = load(models.device, size)
    grams = engine.style_grams_for(model, settings, styles, size)
    objective = engine.Objective(model, settings, photo, grams)
    x = photo[None].clone().requires_grad_(True)

    def once() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss, _ = objective(x)
        loss.backward()

    with FlopCounterMode(display=False) as counter:
        once()
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
        "seconds_per_evaluation": seconds,
        "evaluations_per_second": 1 / seconds,
        "tflop_per_evaluation": flops / 1e12,
        "tflops": flops / seconds / 1e12,
    }


def photo_time(models: pipeline.Models, size: int) -> dict:
    """One photo with the default preset, end to end."""
    settings = StyleSettings(size=size)
    model = models.for_settings(settings)
    photo, styles = load(models.device, size)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    started = time.perf_counter()
    result = engine.stylise(model, photo, styles, settings)
    torch.cuda.synchronize()
    return {
        "size": size,
        "seconds": time.perf_counter() - started,
        "objective": result.losses.total,
        "evaluations": result.evaluations,
        "budget": result.budget,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def peak_memory(models: pipeline.Models, size: int) -> dict:
    """Peak GPU memory of one evaluation at `size` (what bounds the largest photo)."""
    settings = StyleSettings(size=size)
    model = models.for_settings(settings)
    photo = torch.rand(3, size * 3 // 4, size, device=models.device) * 255
    style = engine.Style(torch.rand(3, size, size, device=models.device) * 255)
    grams = engine.style_grams_for(model, settings, [style], size)
    torch.cuda.reset_peak_memory_stats()
    objective = engine.Objective(model, settings, photo, grams)
    x = photo[None].clone().requires_grad_(True)
    objective(x)[0].backward()
    torch.cuda.synchronize()
    return {"size": size, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    """Run every check (a failing one is reported, the rest still run), print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    models = pipeline.Models(pipeline.resolve_device("cuda"))
    small, large = (128, 256) if args.quick else (512, 1024)
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    def section(name: str, run) -> None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            report[name] = run()
        except Exception as exc:  # report and go on: device time is scarce
            traceback.print_exc()
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, json.dumps(report[name]), flush=True)

    section("cpu_agreement", lambda: cpu_agreement(models))
    torch.backends.cudnn.benchmark = True
    section("speed", lambda: [evaluation_speed(models, small, m) for m in ("fp32", "tf32", "bf16")])
    section(
        "photos",
        lambda: [photo_time(models, small), photo_time(models, large)],
    )
    section("memory", lambda: [peak_memory(models, s) for s in (small, large, 2 * large)])
    section("time_to_quality", lambda: compare(small, "cuda", PHOTO, STYLE, 300, args.out))
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"\n{report['device']}, torch {report['torch']}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
