"""Throughput: photos per minute for N photos of one preset, one at a time against batched.

    python -m bench.throughput [--photos 8] [--batch 8] [--size 256] [--steps 300] [--device auto]
    python -m bench.throughput --daemon [same options]
    python -m bench.throughput --workers 0,1,2 [same options]

The photos are distinct crops of ../shared/data/photos, all 4:3 so that they share an output
size (a batch holds one size). Both ways run the engine with the same budget, side by side in one
process; the table gives photos per minute, the batched/sequential ratio, and how far each photo's
final objective moved between the two (batching must not change a result beyond noise).

With --daemon, the same photos go through the real daemon instead (`stylebox run --once`, as a
subprocess), with batch_size 1 and then --batch: what a user gets, the first photo of a drop
included (the worker takes it alone, before the others are queued). The time is the journal's,
from the first job's start to the last one's end, so the model's load does not count.

With --workers, the same photos go through a coordinator (queue.url, no local worker) and N
`stylebox worker` processes on this machine, for each N given, one after the other, with a real
redis-server on loopback: the time is the coordinator's journal's, from the first job sent to the
last one reported; 0 workers is the single-host daemon, for what the queue costs. On one machine
the workers share its cores, so this measures what the queue
costs, not what N GPU hosts gain (each of those brings its own device).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.report import save_report
from bench.time_to_quality import DATA
from daemon import pipeline
from daemon.config import StyleImage, load_config
from daemon.engine import transfer
from daemon.engine.settings import DEFAULT_EVALUATIONS, DEFAULT_PRECISION, PRECISIONS, StyleSettings
from daemon.media import decode, encode
from tests.cluster_harness import RedisServer, cluster_configs
from tests.daemon_harness import START_SECONDS, Daemon, journal_rows, write_config


def distinct_photos(count: int, size: int) -> list[torch.Tensor]:
    """`count` different 4:3 photos at `size` px: each shared photo's largest 4:3 window, then
    the same windows mirrored."""
    windows = []
    for path in sorted((DATA / "photos").iterdir()):
        pixels = pipeline.to_tensor(decode.load_image(path, long_side=2 * size).pixels)
        h, w = pixels.shape[-2:]
        crop_h = min(h, w * 3 // 4)
        crop_w = crop_h * 4 // 3
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        window = pixels[:, top : top + crop_h, left : left + crop_w]
        windows.append(transfer.resize(window, (size * 3 // 4, size)))
    photos = windows + [window.flip(-1) for window in windows]
    if count > len(photos):
        raise SystemExit(f"at most {len(photos)} distinct photos from {DATA / 'photos'}")
    return photos[:count]


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so that the clock reads what was done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    photos: int,
    batch: int,
    size: int,
    steps: int,
    device: str,
    style: Path,
    precision: str = DEFAULT_PRECISION,
) -> dict:
    """Sequential, then batched, on the same photos, targets and budget."""
    settings = StyleSettings(size=size, steps=steps)
    models = device.Models(device.resolve_device(device))
    model = models.for_settings(settings)
    styles = pipeline.load_styles([StyleImage(style)], settings, max_pixels=10**9)
    images = distinct_photos(photos, size)
    targets = transfer.StyleTargets()
    warm_up = dataclasses.replace(settings, steps=3)  # cuDNN's and the allocator's first calls
    transfer.stylize(model, images[0], styles, warm_up, targets=targets, precision=precision)

    synchronise(models.device)
    started = time.perf_counter()
    sequential = [
        transfer.stylize(model, p, styles, settings, targets=targets, precision=precision)
        for p in images
    ]
    synchronise(models.device)
    sequential_seconds = time.perf_counter() - started

    if models.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(models.device)
    started = time.perf_counter()
    batched = []
    for first in range(0, len(images), batch):
        chunk = images[first : first + batch]
        batched += transfer.stylize_batch(
            model, chunk, styles, settings, targets=targets, precision=precision
        )
    synchronise(models.device)
    batched_seconds = time.perf_counter() - started

    pairs = [(s.losses.total, b.losses.total) for s, b in zip(sequential, batched, strict=True)]
    moved = [abs(b - s) / s for s, b in pairs]
    return {
        "device": str(models.device),
        "device_name": torch.cuda.get_device_name() if models.device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": precision if models.device.type == "cuda" else "fp32",
        "photos": photos,
        "batch": batch,
        "size": list(images[0].shape[-2:]),
        "steps": steps,
        "sequential_seconds": sequential_seconds,
        "batched_seconds": batched_seconds,
        "sequential_photos_per_minute": 60 * photos / sequential_seconds,
        "batched_photos_per_minute": 60 * photos / batched_seconds,
        "ratio": sequential_seconds / batched_seconds,
        "batched_peak_gib": (
            torch.cuda.max_memory_allocated(models.device) / 2**30
            if models.device.type == "cuda"
            else None
        ),
        "objective_moved_median": statistics.median(moved),
        "objective_moved_max": max(moved),
        "objectives": pairs,
    }


def measure_daemon(
    photos: int, batch: int, size: int, steps: int, device: str, style: Path, workdir: Path
) -> dict:
    """The daemon with batch_size 1, then `batch`, each on its own copy of the photos."""
    images = distinct_photos(photos, size)
    preset = {"style": str(style), "size": size, "steps": steps}
    runs = {}
    for batch_size in (1, batch):
        folder = workdir / f"batch-{batch_size}"
        _save_photos(images, folder / "inbox")
        config = write_config(
            folder,
            presets={"p": preset},
            routing={"default_preset": "p"},
            device=device,
            batch_size=batch_size,
        )
        daemon = Daemon(config, once=True)
        if daemon.wait_exit(timeout=24 * 3600) != 0:
            raise SystemExit(f"the daemon failed:\n{daemon.log_tail()}")
        rows = journal_rows(load_config(config).journal_path)
        runs[batch_size] = {
            "seconds": _span(rows),
            "batches": sorted(json.loads(row["details"])["batch"] for row in rows),
        }
    return {
        "mode": "daemon",
        "device_name": f"the daemon, device {device}",
        "threads": torch.get_num_threads(),
        "precision": DEFAULT_PRECISION,
        "photos": photos,
        "batch": batch,
        "size": list(images[0].shape[-2:]),
        "steps": steps,
        "sequential_seconds": runs[1]["seconds"],
        "batched_seconds": runs[batch]["seconds"],
        "sequential_photos_per_minute": 60 * photos / runs[1]["seconds"],
        "batched_photos_per_minute": 60 * photos / runs[batch]["seconds"],
        "ratio": runs[1]["seconds"] / runs[batch]["seconds"],
        "batch_of_each_photo": runs[batch]["batches"],
    }


def _save_photos(images: list[torch.Tensor], inbox: Path) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        encode.save_image(pipeline.to_pixels(image), inbox / f"photo_{index:02d}.png", format="png")


def _span(rows: list[dict]) -> float:
    """From the first job's start to the last one's end, in the journal."""
    return max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)


def _between_jobs(rows: list[dict]) -> float:
    """The median time a worker spends per job on anything but painting: from one report
    applied to the next, less the next one's stylising (photo read, publish, both messages,
    the coordinator's journal and the original's move)."""
    by_worker: dict[int, list[dict]] = {}
    for row in rows:
        details = json.loads(row["details"])
        by_worker.setdefault(details["worker"]["pid"], []).append(
            {"finished": row["finished_at"], "stylise": details["seconds"]}
        )
    gaps = []
    for jobs in by_worker.values():
        jobs.sort(key=lambda job: job["finished"])
        for before, after in itertools.pairwise(jobs):
            gaps.append(after["finished"] - before["finished"] - after["stylise"])
    return statistics.median(gaps) if gaps else float("nan")


def measure_workers(
    photos: int, counts: list[int], size: int, steps: int, device: str, style: Path, workdir: Path
) -> dict:
    """A coordinator and N worker processes through Redis, for each N in `counts`; N = 0 is
    the single-host daemon, no queue at all (what the queue costs, side by side)."""
    images = distinct_photos(photos, size)
    preset = {"style": str(style), "size": size, "steps": steps}
    runs = {}
    for count in counts:
        folder = workdir / f"workers-{count}"
        redis_server = RedisServer(folder / "redis")
        processes: list[Daemon] = []
        try:
            coordinator_config, worker_configs = cluster_configs(
                folder,
                redis_server.url,
                count,
                presets={"p": preset},
                routing={"default_preset": "p"},
                device=device,
                logging={"level": "INFO"},
            )
            if count == 0:  # the same config, without the queue
                coordinator_config = write_config(
                    folder,
                    presets={"p": preset},
                    routing={"default_preset": "p"},
                    device=device,
                    logging={"level": "INFO"},
                )
            coordinator = Daemon(coordinator_config)
            processes.append(coordinator)
            coordinator.wait_ready()
            for config in worker_configs:
                worker = Daemon(config, command="worker")
                processes.append(worker)
                worker.wait_for_log("taking jobs from", timeout=START_SECONDS)
            _save_photos(images, folder / "inbox")
            journal = load_config(coordinator_config).journal_path
            deadline = time.monotonic() + 24 * 3600
            while True:
                rows = journal_rows(journal)
                if len(rows) == photos and all(r["state"] == "done" for r in rows):
                    break
                if time.monotonic() > deadline or coordinator.process.poll() is not None:
                    raise SystemExit(f"the coordinator failed:\n{coordinator.log_tail()}")
                time.sleep(0.2)
            makers = [json.loads(r["details"])["worker"]["pid"] for r in rows]
            runs[count] = {
                "seconds": _span(rows),
                "photos_by_worker": sorted(makers.count(pid) for pid in set(makers)),
                "between_jobs_seconds": _between_jobs(rows),
            }
        finally:
            for process in processes:
                process.kill()
            redis_server.stop()
    first = counts[0]
    return {
        "mode": "workers",
        "device": device,
        "threads_per_worker": torch.get_num_threads(),
        "photos": photos,
        "size": list(images[0].shape[-2:]),
        "steps": steps,
        "runs": {
            str(count): {
                **run,
                "photos_per_minute": 60 * photos / run["seconds"],
                "speedup": runs[first]["seconds"] / run["seconds"],
            }
            for count, run in runs.items()
        },
    }


def print_workers_table(summary: dict) -> None:
    h, w = summary["size"]
    print(
        f"throughput through the queue: {summary['photos']} photos {w}x{h} px, "
        f"{summary['steps']} evaluations, device {summary['device']}, all workers on this machine"
    )
    print(
        f"{'workers':>8} {'seconds':>8} {'photos/min':>11} {'speedup':>8} "
        f"{'between jobs':>13}  photos by worker"
    )
    for count, run in summary["runs"].items():
        print(
            f"{count:>8} {run['seconds']:8.1f} {run['photos_per_minute']:11.2f} "
            f"{run['speedup']:8.2f} {run['between_jobs_seconds']:11.3f} s  "
            f"{run['photos_by_worker']}"
        )


def print_table(summary: dict) -> None:
    """The figures as a short table."""
    h, w = summary["size"]
    print(
        f"throughput: {summary['photos']} photos {w}x{h} px, {summary['steps']} evaluations, "
        f"on {summary['device_name']} ({summary['precision']}, {summary['threads']} threads)"
    )
    print(f"{'':12} {'seconds':>8} {'photos/min':>11}")
    print(
        f"{'sequential':12} {summary['sequential_seconds']:8.1f} "
        f"{summary['sequential_photos_per_minute']:11.2f}"
    )
    print(
        f"{'batch ' + str(summary['batch']):12} {summary['batched_seconds']:8.1f} "
        f"{summary['batched_photos_per_minute']:11.2f}"
    )
    print(f"batched/sequential throughput: {summary['ratio']:.2f}x", end="")
    if summary.get("mode") == "daemon":
        print(f"; the daemon's batches, photo by photo: {summary['batch_of_each_photo']}")
    else:
        print(
            f"; final objective moved by {summary['objective_moved_median']:.2%} median, "
            f"{summary['objective_moved_max']:.2%} max"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=DEFAULT_EVALUATIONS)
    parser.add_argument("--style", type=Path, default=DATA / "styles" / "starry_night.jpg")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION)
    parser.add_argument("--daemon", action="store_true", help="through the real daemon")
    parser.add_argument("--workers", help="N worker processes through the queue: 0,1,2 (0: none)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.workers:
        counts = [int(count) for count in args.workers.split(",")]
        with tempfile.TemporaryDirectory(prefix="stylebox-throughput-") as root:
            summary = measure_workers(
                args.photos, counts, args.size, args.steps, args.device, args.style, Path(root)
            )
        print_workers_table(summary)
        save_report(args.out, f"throughput_workers_{args.size}", summary)
        return
    if args.daemon:
        with tempfile.TemporaryDirectory(prefix="stylebox-throughput-") as root:
            summary = measure_daemon(
                args.photos, args.batch, args.size, args.steps, args.device, args.style, Path(root)
            )
    else:
        summary = measure(
            args.photos, args.batch, args.size, args.steps, args.device, args.style, args.precision
        )
    print_table(summary)
    name = "throughput_daemon" if args.daemon else "throughput"
    save_report(args.out, f"{name}_{args.size}", summary)


if __name__ == "__main__":
    main()
