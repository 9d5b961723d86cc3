"""The local driver: the one thread that takes jobs from the journal in order and has the
executor (daemon/jobs) paint them on this host's device.

A job's life: claim (running) -> checked and planned -> loaded -> painted and published by the
executor -> its ending applied (finish.py: journal, events, the original). Photos of one preset
with one output size may share a batch (`batch_size`), each still its own job from end to end.
The executor sorts a job's errors into a typed outcome; here each is applied: a bad photo is
quarantined at once, a transient fault retried with backoff, a stop releases the job untouched,
and a device that cannot be used again stops the daemon so that systemd restarts it. What fails
outside a job's steps (the journal itself, a bug) ends the thread and, through `fatal`, the
daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from daemon.config import Config, Preset
from daemon.errors import JournalDiskError
from daemon.jobs.executor import Executor, Models, Painting, header_output_size
from daemon.jobs.outcome import DevicePoisoned, Outcome
from daemon.jobs.previews import preview_path
from daemon.jobs.work import Ended, Loaded, Snapshot
from daemon.outbox import Outbox, open_outbox
from daemon.service import pause
from daemon.service.environment import WRITABLE, EnvironmentWatch, watched_of
from daemon.service.finish import Finisher
from daemon.service.journal import Job, JobState, Journal, JournalError
from daemon.service.loops import IDLE_WAIT_SECONDS, Loop
from daemon.service.metrics import Metrics
from daemon.service.planning import CANDIDATES_PER_PLACE, checked_and_planned, work_of, writing_of

# How often a running job's progress goes to the journal (for `status` and the web page), and its
# picture so far to state_dir/previews/<job id>.jpg: each costs the worker a few milliseconds.
PROGRESS_SECONDS = 2.0
PREVIEW_SECONDS = 5.0


class Worker(Loop):
    """Takes queued jobs in order, alone or in batches; `config` may be swapped on reload
    between them."""

    name = "worker"

    def __init__(
        self,
        config: Config,
        journal: Journal,
        models: Models,
        *,
        metrics: Metrics | None = None,
        on_status: Callable[[str], None] = lambda text: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._config = config
        self.journal = journal
        self.metrics = metrics or Metrics(
            device=str(models.device), presets=config.presets, counts=journal.counts
        )
        self.on_status = on_status
        self.clock = clock
        self.finish = Finisher(journal, self.metrics, on_status=on_status, clock=clock)
        identity = {"host": socket.gethostname(), "pid": os.getpid()}
        self.executor = Executor(
            models, worker=identity, stopping=lambda: self.stopping, clock=clock
        )
        self._pause = pause.PauseWatch(on_status, held="no new job starts")
        self.environment = EnvironmentWatch(watched_of(config), WRITABLE)
        self._stranded: set[int] = set()  # running in the journal when it could not be written
        self._jobs: dict[int, Job] = {}  # the batch in the executor, by job id
        self._progress: dict[int, Snapshot] = {}  # the last report per job of the batch
        self._side_failed = False  # a progress report or preview failed in this batch
        self._reported_at = self._previewed_at = 0.0

    @property
    def config(self) -> Config:
        """The config in force; the loop swaps it on reload."""
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        if config.paintings != self._config.paintings:  # a reload named another folder
            self.environment.rewatch(watched_of(config))
        self._config = config

    def recover(self) -> None:
        """At start-up: the jobs a crash left running are queued again."""
        recovered = self.journal.requeue_running()
        if recovered:
            logger.warning(
                "{} job(s) were running when the daemon last stopped; requeued", recovered
            )

    def warm_up(self, preset: Preset) -> None:
        """Load the model (and this preset's styles) before the daemon says it is ready."""
        self.executor.warm_up(preset, self.config.max_input_pixels)

    # -- the loop ----------------------------------------------------------------------------

    def waiting(self) -> str | None:
        """What holds work back from outside the daemon (a disk full, a share gone), if
        anything: for `/healthz`, the page and `status`, not a reason to restart."""
        return self.environment.holding

    def step(self) -> float:
        if self.environment.problem() is not None or self._pause.holds(self.config):
            return IDLE_WAIT_SECONDS
        try:
            self._release_stranded()
            job = self.journal.claim_next()
            if job is None:
                return self._idle_wait()
            self._process(job)
        except JournalDiskError as exc:  # the disk under the journal: waited out, not fatal
            self._stranded |= set(self._jobs)
            self._jobs = {}
            self.environment.fault(str(exc))
        return 0.0

    def _release_stranded(self) -> None:
        """Jobs whose end could not be written while the journal's disk was at fault go back
        to the queue, as after a crash (a published result is found and kept)."""
        for job_id in sorted(self._stranded):
            job = self.journal.get(job_id)
            if job is not None and job.state is JobState.RUNNING:  # else its end was written
                self.journal.release(job_id)
            self._stranded.discard(job_id)

    def ended_by(self, exc: Exception) -> None:
        if isinstance(exc, DevicePoisoned):  # said where it was found
            self.fatal = exc
        else:
            super().ended_by(exc)

    def _idle_wait(self) -> float:
        wake_at = self.journal.next_wake_time()
        if wake_at is None:
            return IDLE_WAIT_SECONDS
        return min(IDLE_WAIT_SECONDS, max(0.0, wake_at - self.clock()))

    def _process(self, head: Job) -> None:
        """Paint the claimed `head` job, with the queued photos that can share its batch."""
        config = self.config  # one config for the whole batch, even if a reload swaps it
        outbox = open_outbox(config)
        first = self._load(head, config, outbox)
        if first is None:
            self._exit_if_poisoned()
            return
        preset = config.presets[head.preset]
        batch = [first, *self._mates(first, preset, config, outbox)]
        names = ", ".join(each.work.source.name for each in batch)
        self.on_status(f"stylising {names} ({preset.name})")
        self._progress, self._side_failed = {}, False
        self._reported_at = self._previewed_at = 0.0
        try:
            painting = Painting(
                preset, writing_of(config), outbox, config.max_input_pixels, self._on_progress
            )
            endings = self.executor.paint(batch, painting)
        finally:  # previews are for running jobs only
            self._progress = {}
            for each in batch:
                preview_path(config.state_dir, each.work.job_id).unlink(missing_ok=True)
        for ended in endings:
            self._apply(ended, config)
        self._jobs = {}
        self._exit_if_poisoned()
        self.on_status("idle")

    def _exit_if_poisoned(self) -> None:
        """A device that cannot be used again ends the worker, and the daemon with it."""
        if self.executor.poisoned is not None:
            logger.critical(
                "the device is unusable ({}); exiting so the service restarts",
                self.executor.poisoned,
            )
            raise DevicePoisoned(str(self.executor.poisoned))

    def _load(self, job: Job, config: Config, outbox: Outbox) -> Loaded | None:
        """The claimed job, checked, planned and loaded; None when it ended here instead."""
        if self.finish.gave_up_on_crashes(config, job):
            return None
        self._jobs[job.id] = job
        try:
            planned = checked_and_planned(job, config, outbox, self.journal)
            work = work_of(job, planned)
            return self.executor.load(work, config.presets[job.preset], config.max_input_pixels)
        except JournalError:
            raise  # the journal itself failing is not the photo's fault: the worker stops
        except Exception as exc:
            work = work_of(job, Path(job.planned_output or job.source_path))
            self._apply(self.executor.failed(work, exc), config)
            return None

    def _mates(self, first: Loaded, preset: Preset, config: Config, outbox: Outbox) -> list[Loaded]:
        """Queued photos to paint with `first`, claimed and loaded: of its preset, with its
        output size, never attempted, up to batch_size and what the device's memory holds.

        A job on its second attempt or later runs alone: the photo may be what crashed the
        daemon, and a batch must not spend its mates' attempts on it.
        """
        if first.work.attempt > 1 or config.batch_size == 1:
            return []
        room = min(config.batch_size, self.executor.room(first.size)) - 1
        mates: list[Loaded] = []
        limit = CANDIDATES_PER_PLACE * config.batch_size
        for job in self.journal.batch_candidates(self._jobs[first.work.job_id], limit=limit):
            self.beat()
            if len(mates) >= room or self.stopping:
                break
            # The header alone, so a photo of another size is neither claimed nor decoded.
            source = Path(job.source_path)
            if header_output_size(source, preset, config.max_input_pixels) != first.size:
                continue
            claimed = self.journal.claim(job.id)
            if claimed is None:
                continue
            loaded = self._load(claimed, config, outbox)
            if loaded is None:
                continue
            if loaded.size != first.size:
                self.journal.release(claimed.id)  # its header misled; it runs on its own turn
                del self._jobs[claimed.id]
                continue
            mates.append(loaded)
        return mates

    def _apply(self, ended: Ended, config: Config) -> None:
        """An ending from the executor, into the journal (finish.py)."""
        job = self._jobs.pop(ended.work.job_id)
        if ended.outcome is Outcome.DONE:
            assert ended.delivery is not None and ended.sidecar is not None
            self.finish.done(config, job, ended.delivery, ended.sidecar)
        elif ended.outcome is Outcome.RELEASED:
            self.journal.release(job.id)
        elif ended.outcome is Outcome.DEVICE_LOST:  # back in the queue, as after a crash
            self.journal.mark_retry(job.id, ended.reason, self.clock())
        elif ended.outcome is Outcome.PAUSED:  # not the photo's fault: unattempted, held
            self.journal.release(job.id, error=ended.reason)
            self.environment.fault(ended.reason)
        else:
            self.finish.ended(config, job, ended.outcome, ended.reason)

    # -- progress, for `status` and the page --------------------------------------------------

    def _on_progress(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        self.beat()
        self.metrics.evaluated()
        self._progress[snapshot.work.job_id] = snapshot
        if now - self._reported_at >= PROGRESS_SECONDS:
            self._reported_at = now
            self._on_the_side(self._report_progress)
        if now - self._previewed_at >= PREVIEW_SECONDS:
            self._previewed_at = now
            self._on_the_side(self._write_previews)

    def _on_the_side(self, report: Callable[[], None]) -> None:
        """Run a report for the page, which must never fail the job: a failure is logged (once
        a batch) and the job goes on."""
        try:
            report()
        except Exception as exc:
            if not self._side_failed:
                self._side_failed = True
                logger.opt(exception=exc).warning("progress for the web page: {}", exc)

    def _report_progress(self) -> None:
        """How far each photo of the batch is, into the journal for other processes to read."""
        self.journal.record_progress({job_id: s.progress for job_id, s in self._progress.items()})

    def _write_previews(self) -> None:
        """Each photo as painted so far, for the page."""
        for job_id, snapshot in self._progress.items():
            snapshot.write_preview(preview_path(self.config.state_dir, job_id))
