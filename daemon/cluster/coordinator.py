"""The coordinator: what takes the local worker's place in `stylebox run` when queue.url is set.

The journal stays the queue of record; the broker only carries. A dispatcher thread claims due
jobs (as many as the live worker hosts have devices, and one more each, so no device waits for a
round trip), plans their outputs, and sends them; the results thread applies each host's report
through the same Finisher as the single-host worker. Every few seconds it reconciles: a running
job that Redis no longer holds and that no live host reports painting (Redis was emptied or
restarted, a report was lost, the coordinator was killed) is finished from the outbox when its
result is there, and sent again when it is not. A worker killed mid-job needs none of this: its
message is requeued by Dramatiq once its heartbeat stops (queue.heartbeat_seconds).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from loguru import logger

from daemon.cluster import broker as brokers
from daemon.cluster.host import SHARE_MARK, Host
from daemon.cluster.messages import Assignment, Order, Report
from daemon.config import Config, Preset
from daemon.engine.device import Models
from daemon.jobs.executor import header_output_size
from daemon.jobs.outcome import Outcome, classify
from daemon.jobs.progress import JobProgress
from daemon.outbox import Delivery, atomic_write, open_outbox, published
from daemon.service import pause
from daemon.service.finish import Finisher
from daemon.service.journal import Dispatch, Job, JobState, Journal, JournalError
from daemon.service.loops import IDLE_WAIT_SECONDS, Loop, stalled
from daemon.service.metrics import Metrics
from daemon.service.planning import CANDIDATES_PER_PLACE, checked_and_planned, writing_of

RECONCILE_SECONDS = 5.0  # how long a job may be unaccounted for before it is sent again
STOP_SECONDS = 2.5  # each of the local worker and the results thread, out of the daemon's 8 s
HAND_BACK_SECONDS = 5.0  # a job a host could not do waits this long, so another host takes it


class Coordinator(Loop):
    """Dispatcher (the loop), results and (with queue.local_worker) a worker host of its own;
    the same face to the service as the single-host Worker. `config` may be swapped on reload."""

    name = "dispatcher"

    def __init__(
        self,
        config: Config,
        journal: Journal,
        models: Models,
        *,
        metrics: Metrics,
        on_status: Callable[[str], None] = lambda text: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fatal: BaseException | None = None
        super().__init__()
        self._config = config
        self.journal = journal
        self.models = models
        self.clock = clock
        self.on_status = on_status
        self.finish = Finisher(journal, metrics, on_status=on_status, clock=clock)
        self.broker = brokers.connect(config.queue)
        self._results = brokers.consumer(self.broker, self._on_report, brokers.FINISHED, 1)
        self._host = Host(config, [models]) if config.queue.local_worker else None
        self._lock = threading.Lock()  # one job's end at a time: a report, or the reconciling
        self._missing: dict[int, float] = {}  # job id -> when it was first unaccounted for
        self._reconciled_at = 0.0
        self._away = False  # Redis unreachable: said once
        self._pause = pause.PauseWatch(on_status, held="no new job is sent")

    # -- the service's side (as Worker) ---------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    @property
    def fatal(self) -> BaseException | None:
        """What ends the daemon: the journal failing, a bug, or the local device unusable."""
        if self._fatal is None and self._host is not None:
            return self._host.fatal
        return self._fatal

    @fatal.setter
    def fatal(self, cause: BaseException | None) -> None:
        self._fatal = cause

    @config.setter
    def config(self, config: Config) -> None:
        """A reload: the dispatcher and the local worker host take it for their next job."""
        self._config = config
        if self._host is not None:
            self._host.config = config

    def recover(self) -> None:
        """Jobs a stop or crash left running stay so: the hosts may be painting them, and the
        reconciling finds out which were lost."""
        running = len(self.journal.running())
        if running:
            logger.info("{} job(s) were out with workers at the last stop; reconciling", running)

    def warm_up(self, preset: Preset) -> None:
        """Load the model (and this preset's styles) when this host paints too."""
        if self._host is not None:
            self.models.for_settings(preset.settings)

    def start(self) -> None:
        # The mark tells worker hosts the share is mounted where their config says.
        mark = self.config.outbox / SHARE_MARK
        atomic_write(mark, lambda file: file.write(b"stylebox outbox\n"), replace=True)
        self._results.start()
        if self._host is not None:
            self._host.start()
        super().start()
        logger.info("coordinating through {}", self.config.queue.shown_url)

    def join(self, timeout: float) -> bool:
        """Stop the local worker (its job is reported released), then the results thread."""
        if self._host is not None:
            self._host.stop(STOP_SECONDS)
        try:  # Dramatiq waits up to its timeout twice: for the threads, then the consumers
            self._results.stop(timeout=int(STOP_SECONDS * 1000 / 2))
        except (brokers.RedisError, dramatiq.BrokerConnectionError) as exc:
            logger.warning("stopping with the queue's Redis away: {}", exc)
        self._thread.join(max(0.1, timeout - 2 * STOP_SECONDS))
        return not self._thread.is_alive()

    def problem(self) -> str | None:
        if self._fatal is not None:
            return f"the coordinator stopped: {self._fatal}"
        if self._host is not None and (problem := self._host.problem()):
            return problem
        return stalled("the dispatcher", self._thread, self._heartbeat)

    def waiting(self) -> str | None:
        """What holds this host's own painting back from outside, if it paints (the hosts
        report theirs in the roster)."""
        return self._host.waiting() if self._host is not None else None

    # -- the dispatcher ---------------------------------------------------------------------------

    def step(self) -> float:
        """Reconcile when it is due, then send the next job; what fails beyond Redis being
        away (the journal failing, a bug) ends the loop."""
        try:
            if time.monotonic() - self._reconciled_at >= brokers.ROSTER_SECONDS:
                self._reconcile()
            # Paused: nothing more is sent; what the hosts have in hand finishes.
            sent = not self._pause.holds(self.config) and self._dispatch()
            if self._away:
                logger.info("the queue's Redis answers again")
                self._away = False
        except brokers.RedisError as exc:
            if not self._away:
                logger.warning("the queue's Redis is unreachable ({}); retrying", exc)
            self._away, sent = True, False
        return 0.0 if sent else IDLE_WAIT_SECONDS

    def _dispatch(self) -> bool:
        """Send the next due job (with its batch-mates) if a device is free for it."""
        lines = brokers.live_roster(self.broker.client, self.config.queue.heartbeat_seconds)
        devices = sum(len(line["devices"]) for line in lines.values() if line.get("taking_jobs"))
        if self.journal.counts()[JobState.RUNNING] >= 2 * devices:
            return False
        with self._lock:
            job = self.journal.claim_next()
            if job is None:
                return False
            config = self.config
            ready = self._plan(job, config)
            if ready is None:
                return True
            jobs = [ready, *self._mates(ready, config)]
        self._send(jobs, config)
        return True

    def _plan(self, job: Job, config: Config) -> Job | None:
        """The claimed job with its output planned; None when it ended here instead."""
        if self.finish.gave_up_on_crashes(config, job):
            return None
        try:
            checked_and_planned(job, config, open_outbox(config), self.journal)
        except JournalError:
            raise
        except Exception as exc:
            outcome, reason = classify(exc, Path(job.source_path).name)
            self.finish.ended(config, job, outcome, reason)
            return None
        return self.journal.get(job.id)

    def _mates(self, head: Job, config: Config) -> list[Job]:
        """Queued jobs to send with `head` (batch_size), claimed and planned: of its preset,
        with its output size (read from the headers), never attempted."""
        if head.attempts > 1 or config.batch_size == 1:
            return []
        preset = config.presets[head.preset]
        size = header_output_size(Path(head.source_path), preset, config.max_input_pixels)
        if size is None:
            return []
        mates: list[Job] = []
        limit = CANDIDATES_PER_PLACE * config.batch_size
        for job in self.journal.batch_candidates(head, limit=limit):
            if len(mates) >= config.batch_size - 1:
                break
            if header_output_size(Path(job.source_path), preset, config.max_input_pixels) != size:
                continue
            if (claimed := self.journal.claim(job.id)) is None:
                continue
            if (planned := self._plan(claimed, config)) is not None:
                mates.append(planned)
        return mates

    def _send(self, jobs: list[Job], config: Config) -> None:
        """One assignment for these running jobs; recorded first, so that a report of an older
        sending is known for one, and a lost one is sent again."""
        dispatch = Dispatch(uuid.uuid4().hex, self.clock())
        fingerprint = config.presets[jobs[0].preset].fingerprint
        assignment = Assignment(
            orders=tuple(Order.of(job, fingerprint, dispatch.id) for job in jobs),
            inbox=str(config.inbox),
            outbox=str(config.outbox),
            writing=writing_of(config),
            max_input_pixels=config.max_input_pixels,
            max_attempts=config.retries.max_attempts,
            sent_at=self.clock(),
        )
        ids = [job.id for job in jobs]
        self.journal.note_dispatch(ids, dispatch)
        message = brokers.send(self.broker, brokers.JOBS, brokers.STYLIZE, assignment.as_dict())
        self.journal.note_dispatch(ids, dataclasses.replace(dispatch, message=message))
        for job in jobs:
            logger.bind(job=job.id).info(
                "{} -> preset {}: sent to the workers", Path(job.source_path).name, job.preset
            )

    # -- reconciling --------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Account for every running job: in a live host's hands, or waiting in Redis's queue,
        or else finished from the outbox, or sent again. (A message taken by a host that died
        is neither once its roster line is old: Dramatiq requeues it too, and the second
        delivery finds the first in hand or published.) Also copies the hosts' progress into
        the journal."""
        self._reconciled_at = time.monotonic()
        brokers.forget_silent(self.broker.client)
        lines = brokers.live_roster(self.broker.client, self.config.queue.heartbeat_seconds)
        painting: dict[int, JobProgress | None] = {}  # None: in hand, not yet painting
        for name, line in lines.items():
            for job_id, progress in line["jobs"].items():
                painting[job_id] = JobProgress.from_dict({**progress, "worker": name})
        reported = {job: p for job, p in painting.items() if p is not None}
        if reported:
            self.journal.record_progress(reported)
        now = time.monotonic()
        for job in self.journal.running():
            message = job.details.dispatch and job.details.dispatch.message
            if job.id in painting or (
                message and brokers.queued(self.broker, brokers.JOBS, message)
            ):
                self._missing.pop(job.id, None)
                continue
            if now - self._missing.setdefault(job.id, now) < RECONCILE_SECONDS:
                continue  # its report may be on its way
            self._missing.pop(job.id, None)
            with self._lock:
                current = self.journal.get(job.id)
                if current is None or current.state != JobState.RUNNING:
                    continue
                if self._finished_in_outbox(current):
                    continue
                logger.bind(job=job.id).warning(
                    "{}: not carried by Redis nor painted by a worker; sending it again",
                    Path(job.source_path).name,
                )
                self._send([current], self.config)

    def _finished_in_outbox(self, job: Job) -> bool:
        """Done, if its result is published (a report lost with Redis, or a coordinator killed
        before it read it)."""
        if job.planned_output is None:
            return False
        planned = Path(job.planned_output)
        sidecar = published(planned, job.content_hash)
        if sidecar is None:
            return False
        delivery = Delivery(image=planned, sidecar=planned.with_suffix(".json"))
        self.finish.done(self.config, job, delivery, sidecar)
        return True

    # -- the results thread (Dramatiq's) ------------------------------------------------------

    def _on_report(self, payload: dict[str, Any]) -> None:
        """Apply one host's report; never raises (Dramatiq would dead-letter it)."""
        try:
            report = Report.from_dict(payload)
            with self._lock:
                self._apply(report)
        except JournalError as exc:
            self.fatal = exc
        except Exception as exc:
            logger.opt(exception=exc).critical("a worker's report could not be applied")
            self.fatal = exc
        self._wake.set()

    def _apply(self, report: Report) -> None:
        job = self.journal.get(report.job_id)
        log = logger.bind(job=report.job_id)
        if job is None or job.content_hash != report.content_hash:
            log.warning("{} reported on a job this journal does not have", report.worker)
            return
        if job.state != JobState.RUNNING:
            log.debug(
                "a second report ({}, from {}) ignored: {}",
                report.outcome,
                report.worker,
                job.state,
            )
            return
        latest = job.details.dispatch and job.details.dispatch.id
        if report.outcome is not Outcome.DONE and report.dispatch != latest:
            log.info(
                "a report of an older sending ({}, from {}) ignored", report.outcome, report.worker
            )
            return
        self._missing.pop(job.id, None)
        config = self.config
        if report.outcome is Outcome.RELEASED:
            self.journal.release(job.id)
            log.info("{} stopped before it was done; queued again", report.worker)
            return
        if report.outcome is Outcome.HANDED_BACK:
            self.journal.release(
                job.id, error=report.reason, not_before=self.clock() + HAND_BACK_SECONDS
            )
            log.warning("handed back by {}: {}", report.worker, report.reason)
            return
        if report.outcome is Outcome.DONE:
            if self._finished_in_outbox(job):
                return
            outcome = Outcome.RETRY
            reason = (
                f"{report.worker} reported it done, but no result is at {job.planned_output} "
                "(does that host write to the same share?)"
            )
        else:
            outcome, reason = report.outcome, report.reason
        source = Path(job.source_path)
        if outcome is Outcome.RETRY and not source.exists() and not source.is_symlink():
            outcome, reason = Outcome.CANCELLED, f"{source.name} left the inbox"
        log.info("{} from {}", outcome, report.worker)
        self.finish.ended(config, job, outcome, reason)
