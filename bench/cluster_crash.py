"""The crash harness across hosts (`python -m bench.crash_harness --distributed`): a real
redis-server, a coordinator and two `stylebox worker` processes on loopback, the same photos and
checks as the single-host harness.

Half the photos are dropped up front and the rest in bursts. Each of `--kills` times, a worker
seen with a job in hand (its roster line) is SIGKILLed and started again; halfway through, Redis
is killed and started empty; with `--coordinator-kills`, the coordinator is SIGKILLed too and
started again. Then the harness waits for the journal to say every photo is done and checks, as
the single-host harness does, that each photo has exactly one image and sidecar, no temp file is
left, every original is in outbox/originals, and the journal agrees; and that both workers made
results. The coordinator has no local worker, so every photo crosses the broker.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.crash_harness import (
    DEFAULT_PRESET,
    MAX_ATTEMPTS,
    PRESETS,
    Kill,
    Report,
    check,
    count_log_errors,
    drop_photos,
    make_photos,
)
from daemon.config import load_config
from tests.cluster_harness import RedisServer, cluster_configs, painting
from tests.daemon_harness import JOB_SECONDS, START_SECONDS, Daemon, journal_rows

WORKERS = 2
WAIT_FOR_A_JOB_SECONDS = 20.0  # a worker with nothing in hand by then is killed idle


def run_distributed(
    workdir: Path,
    *,
    photos: int,
    kills: int,
    seed: int,
    coordinator_kills: int = 0,
    say: Callable[[str], None] = lambda text: None,
) -> Report:
    """Run the cluster through the kills and the Redis restart, then check the folders."""
    started = time.monotonic()
    rng = random.Random(seed)
    redis_server = RedisServer(workdir / "redis")
    coordinator_config, worker_configs = cluster_configs(
        workdir,
        redis_server.url,
        WORKERS,
        presets=PRESETS,
        routing={"default_preset": DEFAULT_PRESET},
        retries={"max_attempts": MAX_ATTEMPTS, "backoff_seconds": 0.5},
    )
    config = load_config(coordinator_config)
    report = Report(
        photos=photos,
        kills=kills,
        runs=1 + WORKERS,
        seed=seed,
        burst=True,
        fsync_delay_ms=0.0,
        kill_window_seconds=0.0,
    )
    processes: list[Daemon] = []
    slots: dict[int, str] = {}  # worker pid -> "worker N", whichever run of it

    def start(config: Path, command: str = "run") -> Daemon:
        process = Daemon(config, command=command)
        processes.append(process)
        if command == "run":
            process.wait_ready()
        else:
            process.wait_for_log("taking jobs from", timeout=START_SECONDS)
        return process

    try:
        coordinator = start(coordinator_config)
        workers = [start(config, "worker") for config in worker_configs]
        for index, worker in enumerate(workers):
            slots[worker.process.pid] = f"worker {index + 1}"
        all_photos = make_photos(photos)
        up_front, later = all_photos[: photos // 2], all_photos[photos // 2 :]
        drop_photos(up_front, config.inbox)
        events = ["worker"] * kills + ["coordinator"] * coordinator_kills
        rng.shuffle(events)
        events.insert(len(events) // 2, "redis")
        bursts = [later[start :: len(events)] for start in range(len(events))]
        client = redis_server.client()
        for number, (event, burst) in enumerate(zip(events, bursts, strict=True), 1):
            drop_photos(burst, config.inbox)
            time.sleep(rng.uniform(0.0, 0.5))  # the random moment, not a wait for a condition
            # Each event waits for a worker with a job in hand (for a kill, the one it kills).
            index = rng.randrange(WORKERS)
            victims = [workers[index]] if event == "worker" else workers
            deadline = time.monotonic() + WAIT_FOR_A_JOB_SECONDS
            while time.monotonic() < deadline and not _busy(client, victims):
                time.sleep(0.02)
            when = "mid-job" if _busy(client, victims) else "idle"
            if event == "redis":
                redis_server.restart()
                client = redis_server.client()
                stage = f"Redis restarted empty, {when}"
            elif event == "coordinator":
                coordinator.kill()
                coordinator = start(coordinator_config)
                report.runs += 1
                stage = f"coordinator SIGKILLed, {when}"
            else:
                workers[index].kill()
                workers[index] = start(worker_configs[index], "worker")
                slots[workers[index].process.pid] = f"worker {index + 1}"
                report.runs += 1
                stage = f"worker SIGKILLed, {when}"
            say(f"event {number}: {stage}; dropped {len(burst)}")
            report.stages[stage] = report.stages.get(stage, 0) + 1
            report.kill_log.append(
                Kill(number, round(time.monotonic() - started, 3), True, len(burst), stage)
            )
        deadline = time.monotonic() + START_SECONDS + photos * JOB_SECONDS / 10
        while time.monotonic() < deadline:
            rows = journal_rows(config.journal_path)
            if len(rows) == photos and all(row["state"] == "done" for row in rows):
                break
            time.sleep(0.25)
        say("every photo done" if time.monotonic() < deadline else "timed out")
        for process in [coordinator, *workers]:
            process.send(signal.SIGTERM)
        for process in [coordinator, *workers]:
            code = process.wait_exit(20)
            if code != 0:
                report.problems.append(f"{process.stderr_path.name}: exited {code} on SIGTERM")
        report.final_exit_code = coordinator.process.returncode
    finally:
        for process in processes:
            process.kill()
        redis_server.stop()
    check(report, all_photos, config.inbox, config.outbox, config.journal_path)
    report.makers = _makers(config.outbox, slots)
    if len(report.makers) < WORKERS:
        report.problems.append(f"results from {len(report.makers)} worker(s), not {WORKERS}")
    count_log_errors(report, sorted(workdir.glob("*-*.stderr")))
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _busy(client, processes: list[Daemon]) -> bool:
    """Whether any of these worker processes has a job in hand (its roster line says so)."""
    return any(painting(client, process.process.pid) for process in processes)


def _makers(outbox: Path, slots: dict[int, str]) -> dict[str, int]:
    """Results per worker (each run of it counted with it), from the sidecars."""
    made: Counter[str] = Counter()
    for preset in PRESETS:
        for sidecar in sorted((outbox / preset).glob("*.json")):
            pid = json.loads(sidecar.read_text())["worker"]["pid"]
            made[slots.get(pid, f"pid {pid}")] += 1
    return dict(made)
