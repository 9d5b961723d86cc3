"""Daemon overhead: what the always-on daemon costs when idle, or with only tiny photos to do.

    python -m bench.daemon_overhead [--jobs 200] [--idle-seconds 30] [--quick]

A daemon lives on a home server or NAS for months, mostly idle, so three figures matter more than
its speed on one photo:

- idle CPU, as % of one core, from the process's user + system CPU time over a quiet window after
  READY: in native mode (inotify), in poll mode at the shipped 5 s and at 1 s, and once more in
  native mode after a run of jobs (torch's worker threads may keep spinning once work stops);
- latency from a photo settling to its job starting: job started_at (journal) - the file's last
  write time (mtime) - settle_seconds; in poll mode it includes the wait for the next poll, so
  each photo there is dropped after a random pause (a user's photo arrives at any phase of the
  poll: dropping each right after the last job ends would land at the same phase every time);
- resident memory (RSS) after 10 jobs and after --jobs jobs of distinct tiny photos, and their
  ratio: a slow leak per job is what ends a months-long run, and tiny photos make it show quickly.

The real daemon runs as a subprocess (as tests/daemon_harness.py starts it) on a temporary folder
with a tiny preset (32 px, 2 evaluations) and settle_seconds 0.2, so jobs cost little and the
daemon's own machinery dominates. One daemon per watch mode, one after another, never overlapping:
two daemons on a 2-core machine would measure each other. The journal is read with sqlite3
read-only, as `stylebox status` reads it. Prints a table, writes daemon_overhead_<stamp>.json.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.report import save_report
from daemon.config import load_config
from tests.daemon_harness import STYLES, Daemon, photo_bytes, wait_for, write_config

SETTLE_SECONDS = 0.2
TINY_PRESET = {"style": str(STYLES / "swirl.png"), "size": 32, "steps": 2}
PHOTO_SIZE = (32, 24)  # width, height: 4:3, smaller than the preset, so never resized up or down
LATENCY_PHOTOS = 10
RSS_EARLY_JOBS = 10  # the "after 10 jobs" figure; the ratio compares the end against it
BATCH_JOBS = 10  # photos dropped together in the memory run, to keep the worker busy
QUIET_AFTER_READY_SECONDS = 2.0  # the startup scan, observer threads and log queue settle first
JOB_TIMEOUT_SECONDS = 120.0  # a 32 px job takes well under a second; a shared CPU can stall it
FINAL_STATES = ("done", "failed", "quarantined")


@dataclass(frozen=True)
class Mode:
    """One daemon to start: its watch settings and which measurements it takes part in."""

    name: str
    watch: dict[str, Any]
    latency: bool = True
    memory: bool = False  # the long run of --jobs photos, then idle CPU once more


MODES = (
    Mode("native", {"mode": "native"}, memory=True),
    Mode("poll 5 s (shipped)", {"mode": "poll", "poll_interval_seconds": 5.0}),
    Mode("poll 1 s", {"mode": "poll", "poll_interval_seconds": 1.0}),
    # The shipped settle_seconds sets the settle thread's tick to 0.5 s instead of 0.05 s.
    Mode("native, settle 2 s (shipped)", {"mode": "native", "settle_seconds": 2.0}, latency=False),
)


@dataclass
class ModeResult:
    """What one daemon measured; None where the mode does not take that measurement."""

    mode: str
    watch: dict[str, Any]
    startup_seconds: float
    threads: int
    load_average: tuple[float, float, float]  # at start-up: the machine may be shared
    idle_cpu_percent: float
    latency_seconds: list[float] = field(default_factory=list)
    end_to_end_seconds: list[float] = field(default_factory=list)  # mtime -> job done
    rss_mib_by_jobs: dict[int, float] = field(default_factory=dict)
    idle_cpu_percent_after_jobs: float | None = None
    jobs_seconds: float | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by every thread of process `pid`."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` now, in MiB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """CPU used by `pid` over `seconds` of wall time, as % of one core."""
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a wait for a condition
    cpu_after, wall_after = cpu_seconds(pid), time.monotonic()
    return 100 * (cpu_after - cpu_before) / (wall_after - wall_before)


class JournalReader:
    """The daemon's journal, opened read-only (the daemon keeps WAL on, so readers never block)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self._conn.row_factory = sqlite3.Row

    def finished(self) -> dict[str, sqlite3.Row]:
        """Jobs in a final state by their photo's file name."""
        marks = ",".join("?" * len(FINAL_STATES))
        rows = self._conn.execute(
            f"SELECT source_path, state, started_at, finished_at, error FROM jobs"
            f" WHERE state IN ({marks})",
            FINAL_STATES,
        ).fetchall()
        return {Path(row["source_path"]).name: row for row in rows}

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class Bench:
    """One daemon on its own temporary folder, and the photos dropped into it."""

    def __init__(self, folder: Path, mode: Mode) -> None:
        watch = {
            "settle_seconds": SETTLE_SECONDS,
            "rescan_interval_seconds": 300.0,
            **mode.watch,
        }
        self.watch = watch
        self.settle_seconds = float(watch["settle_seconds"])
        self.config_path = write_config(
            folder,
            presets={"tiny": TINY_PRESET},
            routing={"default_preset": "tiny"},
            watch=watch,
            logging={"level": "INFO"},  # the shipped level: DEBUG would log more per job
        )
        config = load_config(self.config_path)
        self.inbox = config.inbox
        self.journal_path = config.journal_path
        self.dropped: dict[str, int] = {}  # file name -> mtime_ns right after its last write
        self._next_variant = 0
        started = time.monotonic()
        self.daemon = Daemon(self.config_path)
        self.daemon.wait_ready()
        self.startup_seconds = time.monotonic() - started
        self.pid = self.daemon.process.pid
        self.journal = JournalReader(self.journal_path)

    def drop(self, count: int) -> list[str]:
        """Write `count` distinct tiny photos into the inbox; their names."""
        names = []
        for _ in range(count):
            variant = self._next_variant
            self._next_variant += 1
            name = f"photo_{variant:04d}.jpg"
            path = self.inbox / name
            path.write_bytes(photo_bytes(variant, size=PHOTO_SIZE))
            self.dropped[name] = os.stat(path).st_mtime_ns
            names.append(name)
        return names

    def wait_finished(self, names: list[str]) -> dict[str, sqlite3.Row]:
        """Wait until every job for `names` is in a final state; fail if one did not end done."""

        def rows() -> dict[str, sqlite3.Row] | None:
            finished = self.journal.finished()
            return finished if all(name in finished for name in names) else None

        finished = wait_for(
            rows, f"{len(names)} job(s) to finish", timeout=JOB_TIMEOUT_SECONDS, daemon=self.daemon
        )
        failed = [f"{n}: {finished[n]['error']}" for n in names if finished[n]["state"] != "done"]
        if failed:
            raise RuntimeError("jobs did not succeed:\n" + "\n".join(failed))
        return finished

    def latency(self, photos: int) -> tuple[list[float], list[float]]:
        """Drop photos one at a time, each after the last finished; settle->start and end-to-end."""
        to_start, to_done = [], []
        poll_interval = (
            self.watch.get("poll_interval_seconds", 0) if self.watch["mode"] == "poll" else 0
        )
        phases = random.Random(0)  # the same pauses every run
        for _ in range(photos):
            time.sleep(phases.uniform(0, poll_interval))  # a random phase, not a wait
            (name,) = self.drop(1)
            row = self.wait_finished([name])[name]
            written = self.dropped[name] / 1e9
            to_start.append(row["started_at"] - written - self.settle_seconds)
            to_done.append(row["finished_at"] - written)
        return to_start, to_done

    def stop(self) -> None:
        """Ask the daemon to stop (SIGTERM) and wait for it; kill it if it will not."""
        self.journal.close()
        try:
            self.daemon.send(signal.SIGTERM)
            self.daemon.wait_exit(30)
        finally:
            self.daemon.kill()


def measure_mode(
    folder: Path, mode: Mode, jobs: int, idle_seconds: float, say: Callable[[str], None]
) -> ModeResult:
    """Start one daemon in `mode` on `folder`, take its measurements, stop it."""
    folder.mkdir()
    bench = Bench(folder, mode)
    try:
        say(f"{mode.name}: ready after {bench.startup_seconds:.1f} s; idle for {idle_seconds:g} s")
        time.sleep(QUIET_AFTER_READY_SECONDS)  # not a wait for a condition: a quiet period
        result = ModeResult(
            mode=mode.name,
            watch=bench.watch,
            startup_seconds=bench.startup_seconds,
            threads=psutil.Process(bench.pid).num_threads(),
            load_average=os.getloadavg(),
            idle_cpu_percent=idle_cpu_percent(bench.pid, idle_seconds),
        )
        if mode.latency:
            say(f"{mode.name}: {LATENCY_PHOTOS} photos one at a time")
            result.latency_seconds, result.end_to_end_seconds = bench.latency(LATENCY_PHOTOS)
        if mode.memory:
            result.rss_mib_by_jobs[len(bench.dropped)] = rss_mib(bench.pid)
            started = time.monotonic()
            while len(bench.dropped) < jobs:
                batch = min(BATCH_JOBS, jobs - len(bench.dropped))
                if len(bench.dropped) < RSS_EARLY_JOBS:  # land exactly on the early sample
                    batch = min(batch, RSS_EARLY_JOBS - len(bench.dropped))
                bench.wait_finished(bench.drop(batch))
                result.rss_mib_by_jobs[len(bench.dropped)] = rss_mib(bench.pid)
                say(
                    f"{mode.name}: {len(bench.dropped)} jobs, "
                    f"RSS {result.rss_mib_by_jobs[len(bench.dropped)]:.1f} MiB"
                )
            result.jobs_seconds = time.monotonic() - started
            time.sleep(QUIET_AFTER_READY_SECONDS)
            result.idle_cpu_percent_after_jobs = idle_cpu_percent(bench.pid, idle_seconds)
        return result
    finally:
        bench.stop()


def summarise(results: list[ModeResult]) -> dict[str, Any]:
    """Medians, maxima and the RSS ratio, beside the raw figures."""
    modes = []
    rss: dict[str, Any] = {}
    for result in results:
        row: dict[str, Any] = {**result.__dict__}
        if result.latency_seconds:
            row["latency_median_seconds"] = statistics.median(result.latency_seconds)
            row["latency_max_seconds"] = max(result.latency_seconds)
            row["end_to_end_median_seconds"] = statistics.median(result.end_to_end_seconds)
        modes.append(row)
        by_jobs = result.rss_mib_by_jobs
        if RSS_EARLY_JOBS in by_jobs and len(by_jobs) > 1:
            last = max(by_jobs)
            rss = {
                "mode": result.mode,
                "early_jobs": RSS_EARLY_JOBS,
                "early_mib": by_jobs[RSS_EARLY_JOBS],
                "jobs": last,
                "mib": by_jobs[last],
                "ratio": by_jobs[last] / by_jobs[RSS_EARLY_JOBS],
                "seconds_per_job": (result.jobs_seconds or 0) / max(1, last - min(by_jobs)),
            }
    return {"modes": modes, "rss": rss}


def print_table(summary: dict[str, Any]) -> None:
    """The figures as a short table."""
    print(
        f"\ndaemon overhead: tiny preset ({TINY_PRESET['size']} px, {TINY_PRESET['steps']} "
        f"evaluations), settle {SETTLE_SECONDS:g} s unless noted; {summary['cpus']} CPUs, "
        f"load average {summary['load_before'][0]:.2f} before, {summary['load_after'][0]:.2f} after"
    )
    print(
        f"{'mode':30} {'start s':>7} {'threads':>7} {'idle CPU %':>10} "
        f"{'settle->start s (median/max)':>29} {'drop->done s':>12}"
    )
    for row in summary["modes"]:
        latency = (
            f"{row['latency_median_seconds']:.3f} / {row['latency_max_seconds']:.3f}"
            if row["latency_seconds"]
            else "-"
        )
        done = f"{row['end_to_end_median_seconds']:.2f}" if row["latency_seconds"] else "-"
        print(
            f"{row['mode']:30} {row['startup_seconds']:7.1f} {row['threads']:7d} "
            f"{row['idle_cpu_percent']:10.3f} {latency:>29} {done:>12}"
        )
        if row["idle_cpu_percent_after_jobs"] is not None:
            print(
                f"{'  ... idle again after its jobs':46} {row['idle_cpu_percent_after_jobs']:10.3f}"
            )
    rss = summary["rss"]
    if rss:
        verdict = "within" if rss["ratio"] <= 1.10 else "OVER"
        print(
            f"RSS ({rss['mode']}): {rss['early_mib']:.1f} MiB after {rss['early_jobs']} jobs, "
            f"{rss['mib']:.1f} MiB after {rss['jobs']} jobs: ratio {rss['ratio']:.3f} "
            f"({verdict} the 10 % target); {rss['seconds_per_job']:.2f} s per job in batches"
        )


def main() -> None:
    """Run each mode's daemon in turn, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="photos in the memory run")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="each idle window")
    parser.add_argument("--quick", action="store_true", help="--jobs 30 --idle-seconds 10")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.idle_seconds = 30, 10.0
    if args.jobs < RSS_EARLY_JOBS + 1:
        parser.error(f"--jobs must be above {RSS_EARLY_JOBS}: the ratio compares against that")
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)

    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="stylebox-overhead-") as root:
        for index, mode in enumerate(MODES):
            folder = Path(root) / f"mode{index}"
            results.append(measure_mode(folder, mode, args.jobs, args.idle_seconds, say))
    summary = {
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "jobs": args.jobs,
        "idle_seconds": args.idle_seconds,
        "settle_seconds": SETTLE_SECONDS,
        "preset": TINY_PRESET,
        "photo_size": PHOTO_SIZE,
        "wall_seconds": time.monotonic() - started,
        **summarise(results),
    }
    print_table(summary)
    path = save_report(args.out, "daemon_overhead", summary)
    print(f"wrote {path} ({summary['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
