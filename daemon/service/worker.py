"""The one thread that owns the model and the device, and takes jobs from the journal in order.

A job's life: claim (running) -> load -> stylise -> outbox.deliver -> journal.mark_done -> original
disposed. Photos of one preset with one output size may share the stylise step (`batch_size`),
each still its own job from end to end. A job's errors, of whatever type, are sorted at its edge
(`_settle`, then finish.py): a bad photo is quarantined at once, a transient fault is retried with
backoff, a stop releases the job untouched, and a CUDA error that poisons the process stops the
daemon so systemd restarts it. What fails outside a job's steps (the journal itself, a bug) ends the
thread and, through `fatal`, the daemon. The daemon's other broad excepts keep the watcher's
threads alive (logged) and turn anything unexpected into exit code 1 (cli.py).
"""

from __future__ import annotations

import math
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from daemon import __version__, pipeline
from daemon.config import Config, Preset
from daemon.engine import device, transfer
from daemon.errors import InputError
from daemon.media import decode
from daemon.outbox import Outbox, atomic_write, open_outbox
from daemon.service import pause
from daemon.service.finish import Finisher, Outcome, Superseded, classify, holds
from daemon.service.journal import Job, Journal, JournalError
from daemon.service.metrics import Metrics

if TYPE_CHECKING:
    from loguru import Logger

T = TypeVar("T")
HEARTBEAT_STALE_SECONDS = 120.0  # one evaluation never takes this long; a stuck worker does
IDLE_WAIT_SECONDS = 1.0
# How often a running job's progress goes to the journal (for `status` and the web page), and its
# picture so far to state_dir/previews/<job id>.jpg: each costs the worker a few milliseconds.
PROGRESS_SECONDS = 2.0
PREVIEW_SECONDS = 5.0
PREVIEWS_DIR = "previews"
# How far down the queue to look for a batch's mates, per place in the batch: a queue that mixes
# portrait and landscape photos holds enough of one size within it, and each look reads a header.
CANDIDATES_PER_PLACE = 4


class StopRequested(BaseException):
    """Raised inside the engine's callback to abandon the current job; BaseException so that no
    `except Exception` can record a shutdown as a failure."""


class DevicePoisoned(Exception):
    """A CUDA error after which the process cannot use the device again."""


@dataclass(frozen=True)
class _Task:
    """A claimed job whose photo is checked and loaded, on its way through the engine."""

    job: Job
    source: Path
    planned: Path  # the output's path, recorded in the journal
    photo: decode.LoadedImage
    log: Logger


class Worker:
    """Takes queued jobs in order, alone or in batches; `config` may be swapped on reload
    between them."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        models: device.Models,
        *,
        metrics: Metrics | None = None,
        on_status: Callable[[str], None] = lambda text: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.journal = journal
        self.models = models
        self.metrics = metrics or Metrics(
            device=str(models.device), presets=config.presets, counts=journal.counts
        )
        self.on_status = on_status
        self.clock = clock
        self.finish = Finisher(journal, self.metrics, on_status=on_status, clock=clock)
        self.fatal: BaseException | None = None  # set when the daemon must exit non-zero
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._heartbeat = time.monotonic()
        self._styles: dict[str, tuple[list[transfer.Style], transfer.StyleTargets]] = {}
        self._alone: set[int] = set()  # jobs whose batch failed: each runs alone next
        self._pause = pause.PauseWatch(on_status, held="no new job starts")
        self._running: list[_Task] = []  # the batch in the engine, for its progress reports
        self._latest: dict[int, transfer.Progress] = {}  # the last report per batch place
        self._best: dict[int, float] = {}  # the lowest objective so far per batch place
        self._side_failed = False  # a progress report or preview failed in this batch
        self._reported_at = self._previewed_at = self._engine_started = 0.0
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)

    # -- control, from the service's thread ------------------------------------------------------

    def start(self) -> None:
        """Start taking jobs."""
        self._thread.start()

    def wake(self) -> None:
        """A job was queued: stop waiting."""
        self._wake.set()

    def request_stop(self) -> None:
        """Take no more jobs; the current one is abandoned at its next evaluation and released."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def healthy(self) -> bool:
        """Alive, and either idle-waiting or making progress within the heartbeat window."""
        return self.problem() is None

    def problem(self) -> str | None:
        """Why the worker is not healthy, in a line; None while it is."""
        if self.fatal is not None:
            return f"the worker stopped: {self.fatal}"
        return stalled("the worker", self._thread, self._heartbeat)

    def recover(self) -> None:
        """At start-up: the jobs a crash left running are queued again."""
        recovered = self.journal.requeue_running()
        if recovered:
            logger.warning(
                "{} job(s) were running when the daemon last stopped; requeued", recovered
            )

    def warm_up(self, preset: Preset) -> None:
        """Load the model (and this preset's styles) before the daemon says it is ready."""
        self.models.for_settings(preset.settings)
        self._styles_for(preset, self.config)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                if self._pause.holds(self.config):
                    self._wake.wait(IDLE_WAIT_SECONDS)
                    self._wake.clear()
                    continue
                job = self.journal.claim_next()
                if job is None:
                    self._wake.wait(self._idle_wait())
                    self._wake.clear()
                    continue
                self._process(job)
        except StopRequested:
            return
        except Exception as exc:  # DevicePoisoned, the journal failing, or a bug between steps
            if not isinstance(exc, DevicePoisoned):
                logger.opt(exception=exc).critical("the worker cannot go on")
            self.fatal = exc

    def _idle_wait(self) -> float:
        wake_at = self.journal.next_wake_time()
        if wake_at is None:
            return IDLE_WAIT_SECONDS
        return min(IDLE_WAIT_SECONDS, max(0.0, wake_at - self.clock()))

    def _process(self, head: Job) -> None:
        """Stylise the claimed `head` job, with the queued photos that can share its batch."""
        config = self.config  # one config for the whole batch, even if a reload swaps it
        outbox = open_outbox(config)
        first = self._guarded(head, partial(self._start, head, config, outbox))
        if first is None:
            return
        preset = config.presets[head.preset]
        tasks = [first, *self._mates(first, preset, config, outbox)]
        batch = f" in a batch of {len(tasks)}" if len(tasks) > 1 else ""
        self.on_status(f"stylising {', '.join(t.source.name for t in tasks)} ({preset.name})")
        for task in tasks:
            task.log.info(
                "{} -> preset {} (attempt {}){}", task.source, preset.name, task.job.attempts, batch
            )
        self._running, self._latest, self._best, self._side_failed = tasks, {}, {}, False
        self._reported_at = self._previewed_at = 0.0
        self._engine_started = time.monotonic()
        try:
            styles, targets = self._styles_for(preset, config)
            results = pipeline.stylise_photos(
                [(task.source.name, task.photo) for task in tasks],
                styles,
                preset.settings,
                self.models,
                targets=targets,
                callback=self._on_progress,
            )
        except StopRequested:
            for task in tasks:
                self.journal.release(task.job.id)
                task.log.info("stopped mid-job; it will run again at the next start")
            raise
        except Exception as exc:
            if len(tasks) == 1 or device.is_poisoned(exc):
                for task in tasks[1:]:  # the device poisoned: back in the queue, as after a crash
                    self.journal.mark_retry(task.job.id, f"device error: {exc}", self.clock())
                self._settle(first.job, exc)
                return
            # Not one photo's failure until one fails alone: an out-of-memory, or a photo
            # the engine cannot take, must not cost its batch-mates an attempt.
            logger.warning("a batch of {} failed ({}); each photo runs alone", len(tasks), exc)
            for task in tasks:
                self.journal.release(task.job.id)
                self._alone.add(task.job.id)
            return
        finally:  # the reports hold the images on the device: not kept past the batch
            self._running, self._latest, self._best = [], {}, {}
            self._remove_previews(tasks, config)
        for task, result in zip(tasks, results, strict=True):
            deliver = partial(self._deliver, task, result, preset, config, outbox, len(tasks))
            self._guarded(task.job, deliver)
        self.on_status("idle")

    def _guarded(self, job: Job, step: Callable[[], T]) -> T | None:
        """One step of a job; None when it failed, the failure settled (see `_settle`)."""
        try:
            return step()
        except JournalError:
            raise  # the journal itself failing is not the photo's fault: the worker stops
        except Exception as exc:
            self._settle(job, exc)
            return None

    def _settle(self, job: Job, exc: Exception) -> None:
        """Sort a job's failure, whatever its type (finish.classify), and end it there; a device
        that cannot be used again raises DevicePoisoned so that the daemon exits."""
        log = logger.bind(job=job.id)
        if device.is_poisoned(exc):
            self.journal.mark_retry(job.id, f"device error: {exc}", self.clock())
            log.critical("the device is unusable ({}); exiting so the service restarts", exc)
            raise DevicePoisoned(str(exc)) from exc
        outcome, reason = classify(exc, Path(job.source_path).name)
        if device.is_out_of_memory(exc):
            device.release_cached_memory()  # give the next attempt the memory this one held
        if outcome is Outcome.FAILED:
            log.opt(exception=exc).error("unexpected error")
        self.finish.ended(self.config, job, outcome, reason)

    def _start(self, job: Job, config: Config, outbox: Outbox) -> _Task | None:
        """The job's photo, checked and loaded; None when the job is settled here already."""
        log = logger.bind(job=job.id)
        source = Path(job.source_path)
        if self.finish.gave_up_on_crashes(config, job):
            return None
        planned = checked_and_planned(job, config, outbox, self.journal)
        photo = pipeline.load_photo(
            source,
            config.presets[job.preset].settings,
            max_pixels=config.max_input_pixels,
            follow_symlinks=False,
        )
        return _Task(job, source, planned, photo, log)

    def _mates(self, first: _Task, preset: Preset, config: Config, outbox: Outbox) -> list[_Task]:
        """Queued photos to stylise with `first`, claimed and loaded: of its preset, with its
        output size, never attempted, up to batch_size and what the device's memory holds.

        A job on its second attempt or later runs alone: the photo may be what crashed the
        daemon, and a batch must not spend its mates' attempts on it.
        """
        if first.job.attempts > 1 or config.batch_size == 1 or first.job.id in self._alone:
            self._alone.discard(first.job.id)
            return []
        size = transfer.output_size(*first.photo.pixels.shape[:2], preset.settings)
        room = min(config.batch_size, pipeline.room_for(size, self.models)) - 1
        mates: list[_Task] = []
        limit = CANDIDATES_PER_PLACE * config.batch_size
        for job in self.journal.batch_candidates(first.job, limit=limit):
            self._heartbeat = time.monotonic()
            if len(mates) >= room or self._stop.is_set():
                break
            if job.id in self._alone:
                continue
            # The header alone, so a photo of another size is neither claimed nor decoded.
            if header_output_size(job, preset, config) != size:
                continue
            claimed = self.journal.claim(job.id)
            if claimed is None:
                continue
            task = self._guarded(claimed, partial(self._start, claimed, config, outbox))
            if task is None:
                continue
            if transfer.output_size(*task.photo.pixels.shape[:2], preset.settings) != size:
                self.journal.release(claimed.id)  # its header misled; it runs on its own turn
                continue
            mates.append(task)
        return mates

    def _deliver(
        self,
        task: _Task,
        result: transfer.Result,
        preset: Preset,
        config: Config,
        outbox: Outbox,
        batch: int,
    ) -> None:
        """Publish the result and its sidecar, then mark the job done."""
        job, source = task.job, task.source
        if source.exists() and not holds(source, job.content_hash):
            # Replaced mid-job: its owner wants the new content, which is a job of its own; a
            # result for the old one would be a second output under one name. (Deleted mid-job:
            # the photo was whole when the job began, so its result is kept.)
            raise Superseded(f"{source.name} changed while it was stylised")
        writer = pipeline.image_writer(
            result,
            task.photo,
            format=config.output.format,
            quality=config.output.quality,
            bit_depth=config.output.bit_depth,
        )
        sidecar = sidecar_for(job, preset, result, source.name, batch, self.clock())
        delivery = outbox.deliver(task.planned, writer, sidecar)
        self.finish.done(config, job, delivery, sidecar, details_for(sidecar))

    def _on_progress(self, progress: transfer.Progress) -> None:
        now = self._heartbeat = time.monotonic()
        if self._stop.is_set():
            raise StopRequested
        self.metrics.evaluated()
        item = progress.item
        self._latest[item] = progress
        best = lower_objective(progress.losses.total, self._best.get(item))
        if best is not None:
            self._best[item] = best
        if now - self._reported_at >= PROGRESS_SECONDS:
            self._reported_at = now
            self._on_the_side(self._report_progress, now)
        if now - self._previewed_at >= PREVIEW_SECONDS:
            self._previewed_at = now
            self._on_the_side(self._write_previews)

    def _on_the_side(self, report: Callable[..., None], *args: Any) -> None:
        """Run a report for the page, which must never fail the job: a failure is logged (once
        a batch) and the job goes on."""
        try:
            report(*args)
        except Exception as exc:
            if not self._side_failed:
                self._side_failed = True
                logger.opt(exception=exc).warning("progress for the web page: {}", exc)

    def _report_progress(self, now: float) -> None:
        """How far each photo of the batch is, into the journal for other processes to read."""
        elapsed = now - self._engine_started
        self.journal.record_progress(
            {
                self._running[item].job.id: progress_line(
                    p, self._best.get(item), elapsed, self.clock()
                )
                for item, p in self._latest.items()
            }
        )

    def _write_previews(self) -> None:
        """Each photo as painted so far, for the page (atomically: never half a file)."""
        (self.config.state_dir / PREVIEWS_DIR).mkdir(exist_ok=True)
        for item, progress in self._latest.items():
            path = preview_path(self.config.state_dir, self._running[item].job.id)
            atomic_write(path, pipeline.preview_writer(progress), replace=True)

    @staticmethod
    def _remove_previews(tasks: list[_Task], config: Config) -> None:
        for task in tasks:
            preview_path(config.state_dir, task.job.id).unlink(missing_ok=True)

    def _styles_for(
        self, preset: Preset, config: Config
    ) -> tuple[list[transfer.Style], transfer.StyleTargets]:
        """Style images and their Gram targets, loaded once per preset version."""
        key = preset.fingerprint
        if key not in self._styles:
            styles = pipeline.load_styles(
                preset.styles, preset.settings, max_pixels=config.max_input_pixels
            )
            self._styles[key] = (styles, transfer.StyleTargets())
        return self._styles[key]


def stalled(name: str, thread: threading.Thread, heartbeat: float) -> str | None:
    """Why a loop's thread is not healthy (ended, or no beat for HEARTBEAT_STALE_SECONDS), in a
    line; None while it is."""
    if not thread.is_alive():
        return f"{name} is not running"
    quiet = time.monotonic() - heartbeat
    if quiet >= HEARTBEAT_STALE_SECONDS:
        return f"{name} has made no progress for {quiet:.0f} s"
    return None


def check_photo(source: Path, content_hash: str) -> None:
    """Raise InputError (not a regular file) or Superseded (its bytes changed) for a photo that
    is there but cannot be stylised as it was queued; a missing one is the caller's to judge."""
    if source.is_symlink() or not source.is_file():
        raise InputError(f"{source.name}: not a regular file (symlinks are never followed)")
    if not holds(source, content_hash):
        raise Superseded(f"{source.name} changed after it was queued")


def header_output_size(job: Job, preset: Preset, config: Config) -> tuple[int, int] | None:
    """The output size a queued photo's header promises, None when it cannot be read (the job
    is sorted out on its own turn): what batch-mates are matched by."""
    try:
        shape = decode.pixel_shape(
            Path(job.source_path),
            max_pixels=config.max_input_pixels,
            long_side=preset.settings.size,
        )
    except (InputError, OSError):
        return None
    return transfer.output_size(*shape, preset.settings)


def lower_objective(total: float, best: float | None) -> float | None:
    """The best objective so far after one evaluation: a line search's probe may be worse than
    the best, and an inf or NaN is no objective at all."""
    if math.isfinite(total) and (best is None or total < best):
        return total
    return best


def progress_line(
    progress: transfer.Progress, objective: float | None, elapsed: float, now: float
) -> dict[str, Any]:
    """How far a running job is, as `stylebox status` and the page read it from the journal."""
    return {
        "evaluation": progress.evaluation,
        "budget": progress.budget,
        "objective": objective,  # None while every value is inf or NaN
        "elapsed_seconds": round(elapsed, 3),
        "updated_at": now,
    }


def checked_and_planned(job: Job, config: Config, outbox: Outbox, journal: Journal) -> Path:
    """The claimed job's output path, planned now if it is not yet; raises InputError (a photo
    to quarantine) or Superseded when the photo cannot be stylised as it was queued."""
    source = Path(job.source_path)
    preset = config.presets.get(job.preset)
    if preset is None:
        raise InputError(f"{source.name}: preset {job.preset!r} is no longer configured")
    if not source.exists() and not source.is_symlink():
        raise InputError(f"{source}: the photo vanished before it could be processed")
    check_photo(source, job.content_hash)
    if job.planned_output is not None:
        return Path(job.planned_output)
    # Recorded before writing: an attempt after a crash overwrites this same name, and no
    # other unfinished job (a batch-mate called IMG_1.jpg too) is given it.
    taken = journal.planned_outputs()
    planned = str(outbox.plan(preset.name, source.name, job.content_hash, config.output.ext, taken))
    journal.set_planned_output(job.id, planned)
    return Path(planned)


def preview_path(state_dir: Path, job_id: int) -> Path:
    """Where a running job's picture so far is, for the web page."""
    return state_dir / PREVIEWS_DIR / f"{job_id}.jpg"


def sidecar_for(
    job: Job, preset: Preset, result: transfer.Result, source_name: str, batch: int, now: float
) -> dict[str, Any]:
    """The result's JSON companion: what made it, from what, how, where and by whom."""
    h, w = result.image.shape[-2:]
    return {
        "source": source_name,
        "input_sha256": job.content_hash,
        "preset": preset.name,
        "preset_fingerprint": preset.fingerprint,
        "parameters": asdict(preset.settings),
        "styles": [{"image": s.path.name, "weight": s.weight} for s in preset.styles],
        "size": [w, h],
        "evaluations": result.evaluations,
        "budget": result.budget,
        "losses": asdict(result.losses),
        "seconds": {
            "stylise": round(result.seconds, 3),
            "queued": round(now - job.enqueued_at, 3),
        },
        "device": result.device,
        "precision": result.precision,
        "batch": batch,  # photos stylised together, this one included
        "attempt": job.attempts,
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
        "versions": {
            "stylebox": __version__,
            "torch": device.TORCH_VERSION,
            "python": platform.python_version(),
        },
    }


def details_for(sidecar: dict[str, Any]) -> dict[str, Any]:
    """What the journal keeps of a done job's result, from its sidecar."""
    kept = {key: sidecar[key] for key in ("size", "losses", "evaluations", "device", "batch")}
    return {**kept, "seconds": sidecar["seconds"]["stylise"], "worker": sidecar.get("worker")}
