"""Crash and restart: SIGKILL the real daemon at random moments, then check nothing was lost.

    python -m bench.crash_harness [--photos 100] [--kills 20] [--seed 0] [--no-burst]
                                  [--fsync-delay-ms 50] [--workdir DIR] [--out bench/results]
    python -m bench.crash_harness --distributed [--photos 24] [--kills 3] [--coordinator-kills 1]

(--distributed: several hosts through Redis; see bench/cluster_crash.py.)

A daemon under systemd dies the hard way now and then (out of memory, power cut, kill -9), and
Restart= starts it again on the same folders. Whatever moment the kill lands in, the next start
must finish the work exactly once. So: distinct small photos (32x24) go into the inbox, spread
over three tiny presets (32 px, 3, 5 and 8 evaluations: a job takes about 0.2-0.5 s on a CPU);
the real daemon runs as a subprocess and is SIGKILLed `--kills` times, each time after a random
delay — some during start-up (requeue, temp clean-up, model load), most after READY, landing in
settle, intake, a step, the output write or the move of the original — and restarted. Half the
photos are dropped before the first start and the rest in bursts while the daemon runs, so kills
also land among fresh drops (`--no-burst`: all up front). A final `run --once` then finishes.

Every os.fsync in the daemon is slowed by `--fsync-delay-ms` (default 50, as on a slow disk or a
NAS; see tests/daemon_harness.slow_fsync_env): on this machine's disk an fsync takes ~0.2 ms, and
the windows for writing an output and moving an original would be too thin for a random kill to
hit; with six fsyncs a job they take about as long as the stylising. After each kill the folders
and the journal show where it landed; the table counts those.

At the end, for each photo: exactly one image and one sidecar for its preset (matched by the
sidecar's input_sha256), every image decodes in full at the preset's size, no `.stylebox-tmp-*`
file anywhere, its original in outbox/originals (none left in the inbox, none in failed/), and a
journal (read with sqlite3, read-only) whose every row is done with outputs that exist. Prints a
table, writes crash_harness_<stamp>.json; exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bench.report import save_report
from daemon.config import load_config
from tests.daemon_harness import (
    JOB_SECONDS,
    START_SECONDS,
    STYLES,
    Daemon,
    daemon_env,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    sha256,
    slow_fsync_env,
    temp_files,
    write_config,
)

PHOTO_SIZE = (32, 24)  # width, height: smaller than the preset, so never resized
SIZE = 32
PRESETS = {
    "quick": {"style": str(STYLES / "swirl.png"), "size": SIZE, "steps": 3},
    "middle": {"style": str(STYLES / "stained_glass.png"), "size": SIZE, "steps": 5},
    "long": {"style": str(STYLES / "swirl.png"), "size": SIZE, "steps": 8},
}
DEFAULT_PRESET = "middle"  # its photos go in the inbox's top folder, the others in preset folders
JOB_SECONDS_ESTIMATE = 0.35  # a 32 px job with 3-8 evaluations on a CPU, for the kill window
FSYNCS_PER_JOB = 6  # image and sidecar: file and folder each; the original's move: two folders
EARLY_KILL_SHARE = 0.2  # this share of kills (at least one) lands before READY, during start-up
EARLY_KILL_SECONDS = (0.2, 2.5)  # VGG-19 takes ~3 s to load
# Random kills are not what the crash-loop guard is for: with the default 3 attempts, a photo
# hit by three kills in a row would be given up on, and rightly so for a photo that crashes us.
MAX_ATTEMPTS = 1000
READY_LINE = "outputs go to"  # what Daemon.wait_ready waits for


@dataclass(frozen=True)
class Photo:
    """One dropped photo: where it went, its bytes' sha256 and the preset it must get."""

    name: str
    relative: str  # below the inbox
    preset: str
    sha256: str
    data: bytes = field(repr=False)


@dataclass
class Kill:
    """One run of the daemon that ended in SIGKILL, and what it was doing then."""

    run: int
    seconds_after_start: float
    ready: bool
    dropped: int  # photos dropped during this run
    stage: str


@dataclass
class Report:
    """The figures of one harness run; `problems` says what went wrong, photo by photo."""

    photos: int
    kills: int
    runs: int
    seed: int
    burst: bool
    fsync_delay_ms: float
    kill_window_seconds: float
    batch_size: int = 1
    stages: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # photos without an output, or whose original is nowhere
    doubled: int = 0  # photos with more than one output for their preset
    partial: int = 0  # temps, images that do not decode, an image or sidecar without the other
    originals_doubled: int = 0  # photos whose original is in outbox/originals more than once
    left_in_inbox: int = 0
    failed: int = 0  # files in outbox/failed
    journal_done: int = 0
    journal_not_done: int = 0
    max_attempt: int = 0  # the highest "attempt" a sidecar records
    batched: int = 0  # outputs whose sidecar says they shared a batch
    log_errors: int = 0  # ERROR or CRITICAL lines and tracebacks in the daemons' logs
    final_exit_code: int | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # what fails the run
    # Known defects, reported but not failing the run: originals doubled (see the xfail test
    # in tests/test_crash_and_load.py).
    warnings: list[str] = field(default_factory=list)
    kill_log: list[Kill] = field(default_factory=list)
    makers: dict[str, int] = field(default_factory=dict)  # --distributed: results per worker

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.problems


# -- setting up ---------------------------------------------------------------------------------


def make_photos(count: int) -> list[Photo]:
    """`count` distinct photos, not yet dropped: names, places and the preset each must get."""
    photos = []
    names = list(PRESETS)
    for index in range(count):
        preset = names[index % len(names)]
        name = f"photo_{index:04d}.jpg"
        relative = name if preset == DEFAULT_PRESET else f"{preset}/{name}"
        data = photo_bytes(index, size=PHOTO_SIZE)
        photos.append(Photo(name, relative, preset, sha256(data), data))
    if len({photo.sha256 for photo in photos}) != count:
        raise RuntimeError("photo_bytes made two identical photos; the checks would misread them")
    return photos


def drop_photos(photos: list[Photo], inbox: Path) -> None:
    """Write the photos into the inbox, each straight into place."""
    for photo in photos:
        drop(inbox / photo.relative, photo.data)


# -- where a kill landed ---------------------------------------------------------------------


def kill_stage(daemon: Daemon, journal: Path, outbox: Path, since: float) -> str:
    """Where the daemon was when killed, from what it left: log, temps, outputs and the journal.

    Only what this run did counts (`since`: its start, wall clock): a run killed during start-up
    leaves the previous run's leftovers as they were.
    """
    if daemon.count(READY_LINE) == 0:
        return "start-up"
    if any(temp.lstat().st_mtime >= since for temp in temp_files(outbox)):
        return "writing output"
    rows = journal_rows(journal)
    for row in rows:
        source = Path(row["source_path"])
        if row["state"] == "done" and row["finished_at"] >= since and source.exists():
            if (outbox / "originals" / source.name).exists():
                return "moving original (both names)"
            return "done, original not yet moved"
    for row in rows:
        if row["state"] == "running" and row["started_at"] >= since:
            image = Path(row["planned_output"]) if row["planned_output"] else None
            if image is None or not image.exists():
                return "stylising"
            if not image.with_suffix(".json").exists():
                return "image out, sidecar not yet"
            return "outputs out, journal not yet done"
    return "idle, settling or queueing"


# -- the runs --------------------------------------------------------------------------------


def run_harness(
    workdir: Path,
    *,
    photos: int,
    kills: int,
    seed: int,
    burst: bool = True,
    fsync_delay_ms: float = 50.0,
    kill_window_seconds: float | None = None,
    batch_size: int = 1,
    say: Callable[[str], None] = lambda text: None,
) -> Report:
    """Drop, kill and restart `kills` times, finish with --once, and check the folders."""
    started = time.monotonic()
    rng = random.Random(seed)
    config_path = write_config(
        workdir,
        presets=PRESETS,
        routing={"default_preset": DEFAULT_PRESET},
        watch={"settle_seconds": 0.3, "poll_interval_seconds": 0.2, "rescan_interval_seconds": 2},
        retries={"max_attempts": MAX_ATTEMPTS, "backoff_seconds": 0.5},
        logging={"level": "DEBUG"},
        batch_size=batch_size,
    )
    config = load_config(config_path)
    inbox, outbox, journal = config.inbox, config.outbox, config.journal_path
    env = daemon_env(**slow_fsync_env(workdir, fsync_delay_ms / 1000)) if fsync_delay_ms else None
    if kill_window_seconds is None:
        # Spread the kills over the whole workload: each run gets through about half a window.
        job_seconds = JOB_SECONDS_ESTIMATE + FSYNCS_PER_JOB * fsync_delay_ms / 1000
        kill_window_seconds = max(1.0, 2 * photos * job_seconds / max(1, kills))
    report = Report(
        photos=photos,
        kills=kills,
        runs=kills + 1,
        seed=seed,
        burst=burst,
        fsync_delay_ms=fsync_delay_ms,
        kill_window_seconds=kill_window_seconds,
        batch_size=batch_size,
    )

    all_photos = make_photos(photos)
    up_front = all_photos[: photos // 2] if burst else all_photos
    later = all_photos[len(up_front) :]
    per_burst = max(1, -(-len(later) // max(1, kills)))  # ceil, and never 0 (for range)
    bursts = [later[i : i + per_burst] for i in range(0, len(later), per_burst)]
    drop_photos(up_front, inbox)
    early = set(rng.sample(range(1, kills + 1), max(1, round(kills * EARLY_KILL_SHARE))))

    for run in range(1, kills + 1):
        started_at, started_wall = time.monotonic(), time.time()
        daemon = Daemon(config_path, env=env)
        try:
            dropped = 0
            if run in early:
                delay = rng.uniform(*EARLY_KILL_SECONDS)
                time.sleep(delay)  # the random moment of the kill, not a wait for a condition
            else:
                daemon.wait_ready()
                if bursts:
                    batch = bursts.pop(0)
                    drop_photos(batch, inbox)
                    dropped = len(batch)
                time.sleep(rng.uniform(0, kill_window_seconds))  # the random moment of the kill
            seconds = time.monotonic() - started_at
        finally:
            daemon.kill()
        stage = kill_stage(daemon, journal, outbox, since=started_wall)
        report.kill_log.append(
            Kill(run, round(seconds, 3), daemon.count(READY_LINE) > 0, dropped, stage)
        )
        say(f"run {run}: killed after {seconds:.2f} s ({stage}); dropped {dropped}")
    for batch in bursts:  # those whose run was killed before it was ready
        drop_photos(batch, inbox)

    final = Daemon(config_path, once=True, env=env)
    try:
        report.final_exit_code = final.wait_exit(START_SECONDS + photos * JOB_SECONDS / 10)
    finally:
        final.kill()
    if report.final_exit_code != 0:
        report.problems.append(f"the final --once run exited {report.final_exit_code}")
    say(f"final --once run: exit {report.final_exit_code}")

    report.stages = dict(Counter(kill.stage for kill in report.kill_log))
    check(report, all_photos, inbox, outbox, journal)
    count_log_errors(report, sorted(workdir.glob("daemon-*.stderr")))
    report.seconds = round(time.monotonic() - started, 1)
    return report


# -- the checks ------------------------------------------------------------------------------


def count_log_errors(report: Report, logs: list[Path]) -> None:
    """ERROR and CRITICAL lines and tracebacks in the processes' logs, as warnings."""
    for log in logs:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if any(level in line for level in (" ERROR ", " CRITICAL ", "Traceback")):
                report.log_errors += 1
                report.warnings.append(f"{log.name}: {line}")


def check(report: Report, photos: list[Photo], inbox: Path, outbox: Path, journal: Path) -> None:
    """Fill in the figures and problems: outputs, originals, temps and the journal agree."""
    problems = report.problems
    by_sha = {photo.sha256: photo for photo in photos}

    # Outputs: each image with its sidecar, each sidecar naming a photo of ours and its preset.
    outputs: dict[str, list[Path]] = {photo.sha256: [] for photo in photos}
    for preset in PRESETS:
        folder = outbox / preset
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        images = {p.stem: p for p in files if p.suffix != ".json"}
        sidecars = {p.stem: p for p in files if p.suffix == ".json"}
        for stem in sorted(images.keys() ^ sidecars.keys()):
            report.partial += 1
            problems.append(f"{preset}/{stem}: an image or a sidecar without the other")
        for stem in sorted(images.keys() & sidecars.keys()):
            try:
                with Image.open(images[stem]) as image:
                    image.load()
                    size = image.size
            except Exception as exc:
                report.partial += 1
                problems.append(f"{images[stem]}: does not decode: {exc}")
                continue
            if max(size) != SIZE:
                problems.append(f"{images[stem]}: {size}, not {SIZE} px on the long side")
            try:
                sidecar = json.loads(sidecars[stem].read_text(encoding="utf-8"))
            except ValueError as exc:
                report.partial += 1
                problems.append(f"{sidecars[stem]}: not JSON: {exc}")
                continue
            photo = by_sha.get(sidecar.get("input_sha256"))
            if photo is None:
                problems.append(f"{sidecars[stem]}: input_sha256 of no dropped photo")
            elif photo.preset != preset:
                problems.append(f"{images[stem]}: {photo.name} belongs in {photo.preset}")
            else:
                outputs[photo.sha256].append(images[stem])
                report.max_attempt = max(report.max_attempt, int(sidecar.get("attempt", 0)))
                report.batched += int(sidecar.get("batch", 1)) > 1
    temps = temp_files(outbox.parent)
    report.partial += len(temps)
    problems.extend(f"{temp}: a temporary file left behind" for temp in temps)

    # Originals: in outbox/originals, byte for byte; the inbox and failed/ empty.
    originals: Counter[str] = Counter(
        sha256(path.read_bytes()) for path in files_under(outbox / "originals")
    )
    in_inbox = {sha256(path.read_bytes()) for path in files_under(inbox)}
    failed = files_under(outbox / "failed")
    report.left_in_inbox = len(files_under(inbox))
    report.failed = len(failed)
    problems.extend(f"{path}: in failed/" for path in failed)
    problems.extend(f"{path}: still in the inbox" for path in files_under(inbox))
    for photo in photos:
        found = outputs[photo.sha256]
        original_missing = originals[photo.sha256] == 0 and photo.sha256 not in in_inbox
        if not found or original_missing:
            report.lost += 1
        if not found:
            problems.append(f"{photo.relative}: no output in {photo.preset}/")
        if original_missing:
            problems.append(f"{photo.relative}: the original is nowhere")
        if len(found) > 1:
            report.doubled += 1
            problems.append(f"{photo.relative}: {len(found)} outputs: {[p.name for p in found]}")
        if originals[photo.sha256] > 1:
            report.originals_doubled += 1
            report.warnings.append(
                f"{photo.relative}: {originals[photo.sha256]} copies in outbox/originals"
            )

    # The journal: one done row per photo, outputs that exist and name the row's photo.
    rows = journal_rows(journal)
    report.journal_done = sum(row["state"] == "done" for row in rows)
    report.journal_not_done = len(rows) - report.journal_done
    if report.journal_done != len(photos):
        problems.append(f"journal: {report.journal_done} done rows for {len(photos)} photos")
    for row in rows:
        if row["state"] != "done":
            problems.append(f"journal: job {row['id']} ({row['source_path']}) is {row['state']}")
            continue
        if row["content_hash"] not in by_sha:
            problems.append(f"journal: job {row['id']} is for no dropped photo")
        for output in json.loads(row["outputs"]):
            if not Path(output).is_file():
                problems.append(f"journal: job {row['id']}: output {output} does not exist")


# -- the report ------------------------------------------------------------------------------


def print_table(report: Report) -> None:
    """The figures as a short table."""
    if report.makers:
        print(
            f"\ncrash harness, distributed: {report.photos} photos {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]},"
            f" Redis + a coordinator + {len(report.makers)} workers on loopback; {report.kills}"
            f" worker SIGKILLs (seed {report.seed})"
        )
    else:
        print(
            f"\ncrash harness: {report.photos} photos {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}, presets "
            f"{SIZE} px with 3/5/8 evaluations; {report.kills} SIGKILLs (seed {report.seed}, "
            f"window {report.kill_window_seconds:.1f} s, fsync +{report.fsync_delay_ms:g} ms, "
            f"{'half dropped in bursts' if report.burst else 'all dropped up front'}; "
            f"batch_size {report.batch_size})"
        )
    print(f"{'where the kills landed':40} {'kills':>5}")
    for stage, count in sorted(report.stages.items(), key=lambda item: -item[1]):
        print(f"  {stage:38} {count:5d}")
    figures = (
        ("processes started" if report.makers else "runs (kills + final --once)", report.runs),
        ("photos", report.photos),
        ("lost", report.lost),
        ("doubled", report.doubled),
        ("partial", report.partial),
        ("originals doubled", report.originals_doubled),
        ("left in inbox", report.left_in_inbox),
        ("in failed/", report.failed),
        ("journal done / not done", f"{report.journal_done} / {report.journal_not_done}"),
        ("highest attempt in a sidecar", report.max_attempt),
        ("stylised in a batch", report.batched),
        *((f"results by {name}", count) for name, count in sorted(report.makers.items())),
        ("errors in the logs", report.log_errors),
        (
            "coordinator's exit code on SIGTERM" if report.makers else "final --once exit code",
            report.final_exit_code,
        ),
        ("wall seconds", report.seconds),
    )
    for name, value in figures:
        print(f"{name:40} {value!s:>5}")
    if report.problems:
        print(f"\n{len(report.problems)} problem(s):")
        for problem in report.problems[:40]:
            print(f"  {problem}")
    if report.warnings:
        print(f"\n{len(report.warnings)} warning(s), known defects:")
        for warning in report.warnings[:20]:
            print(f"  {warning}")
    print("\nverdict:", "OK" if report.ok else "FAILED")


def main() -> None:
    """Parse the options, run the harness in a temporary folder, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-burst", dest="burst", action="store_false", help="all up front")
    parser.add_argument("--fsync-delay-ms", type=float, default=50.0, help="0: real fsync only")
    parser.add_argument("--kill-window-seconds", type=float, help="default: from the workload")
    parser.add_argument("--batch-size", type=int, default=1, help="the daemon's batch_size")
    parser.add_argument("--workdir", type=Path, help="keep the folders here (default: a temp)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--distributed", action="store_true", help="Redis, coordinator, workers")
    parser.add_argument("--coordinator-kills", type=int, default=0, help="with --distributed")
    args = parser.parse_args()
    if args.photos < 1 or args.kills < 0 or args.batch_size < 1:
        parser.error("--photos and --batch-size must be at least 1 and --kills not negative")
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)

    options: dict[str, Any] = {
        "photos": args.photos,
        "kills": args.kills,
        "seed": args.seed,
        "burst": args.burst,
        "fsync_delay_ms": args.fsync_delay_ms,
        "kill_window_seconds": args.kill_window_seconds,
        "batch_size": args.batch_size,
        "say": say,
    }
    harness: Callable[..., Report] = run_harness
    if args.distributed:
        from bench.cluster_crash import run_distributed

        harness = run_distributed
        options = {
            "photos": args.photos,
            "kills": args.kills,
            "seed": args.seed,
            "coordinator_kills": args.coordinator_kills,
            "say": say,
        }
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = harness(args.workdir, **options)
    else:
        with tempfile.TemporaryDirectory(prefix="stylebox-crash-") as root:
            report = harness(Path(root), **options)
    print_table(report)
    name = "crash_harness_distributed" if args.distributed else "crash_harness"
    path = save_report(args.out, name, {**asdict(report), "ok": report.ok})
    print(f"wrote {path}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
