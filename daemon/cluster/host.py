"""A worker host: Dramatiq worker threads, one per device, each with its model loaded once, taking
assignments from the broker and reporting each job's end to the coordinator.

Used by `stylebox worker` and, with queue.local_worker, inside the coordinator. The host writes
results into the shared outbox, where the coordinator planned them (temp name, fsync, rename: never
a partial file), and never touches the journal, which is the coordinator's alone. Its config's
`inbox` and `outbox` are where this host mounts the coordinator's (the coordinator's paths in an
assignment are mapped onto them), and nothing outside them is read or written.

Delivery is at least once, so each job is checked before it is painted and again before its result
is published: a result from the same bytes already there (a job redelivered after a worker was
thought dead) is reported done as it is, and a job another live host (or another thread here) has
in hand is left to it. What this host cannot do (the share not visible here, a preset that differs)
is handed back without costing the job an attempt, and the host stops taking jobs while the share
is missing, so that another host does it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
from loguru import logger

from daemon import __version__
from daemon.cluster import broker as brokers
from daemon.cluster.deaths import DeathCount
from daemon.cluster.messages import Assignment, Order, Report
from daemon.config import Config
from daemon.errors import InputError
from daemon.jobs.executor import Executor, Models, Painting
from daemon.jobs.outcome import Outcome
from daemon.jobs.work import Ended, Loaded, Snapshot
from daemon.outbox import Outbox, published
from daemon.paths import named_within, really_within
from daemon.service.backoff import backoff_seconds
from daemon.service.environment import EnvironmentWatch
from daemon.service.loops import Loop

SHARE_MARK = ".stylebox-share"  # written by the coordinator in its outbox: the share is mounted
SHARE_PAUSE_SECONDS = 30.0  # a host that cannot see a photo takes no jobs for this long
REPORT_TRIES_SECONDS = 60.0  # a report waits this long for Redis to come back
STOPPING_REPORT_SECONDS = 2.0  # ... or this long once the host is stopping


class ShareMissing(OSError):
    """The share is not mounted on this host, or not where its config says: another host (or
    this one, later) can do the job."""


def worker_name() -> str:
    """How a host is named in the roster, the sidecars and `stylebox status`."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Host:
    """The worker side of the queue; `start`, then `stop` (which releases what is running).
    `config` may be swapped on reload; an assignment keeps the one it began with."""

    def __init__(self, config: Config, models: list[Models], *, name: str = "") -> None:
        self.config = config
        self.name = name or worker_name()
        self.broker = brokers.connect(config.queue)
        self._deaths = DeathCount(self.broker.client)
        self.broker.add_middleware(self._deaths)
        self.fatal: BaseException | None = None  # a device that cannot be used again
        self._stop = threading.Event()
        identity = {"host": socket.gethostname(), "pid": os.getpid(), "name": self.name}
        self._free: queue.SimpleQueue[Executor] = queue.SimpleQueue()
        for each in models:
            self._free.put(Executor(each, worker=identity, stopping=self._stop.is_set))
        self._devices = [str(each.device) for each in models]
        self._own = threading.local()
        self._lock = threading.Lock()  # the maps below, shared by the worker threads
        self._jobs: dict[int, dict[str, Any]] = {}  # in hand here, from receipt to report
        self._paused_until = 0.0
        self._holding = False  # the share is missing here (or the device is gone): no jobs
        self._started = time.time()
        roots = {"inbox": config.inbox, "outbox": config.outbox}
        self._environment = EnvironmentWatch(roots, ("outbox",))
        self._worker = brokers.consumer(self.broker, self._carry_out, brokers.STYLIZE, len(models))
        # One message per thread: no photo waits behind a long job while another host idles.
        self._worker.queue_prefetch = len(models)
        self._roster = _Roster(self)  # woken when a job arrives or leaves: said at once

    def start(self) -> None:
        self._worker.start()
        self._roster.start()
        logger.info(
            "worker {} taking jobs from {} on {}",
            self.name,
            self.config.queue.shown_url,
            ", ".join(self._devices),
        )

    def stop(self, timeout: float) -> None:
        """Stop taking jobs within about `timeout`; running ones end at their next evaluation,
        reported released (or, with Redis away, sent again by the coordinator)."""
        self._stop.set()
        self._roster.wake()
        try:  # Dramatiq waits up to its timeout twice: for the threads, then the consumers
            self._worker.stop(timeout=int(timeout * 1000 / 2))
        except (brokers.RedisError, dramatiq.BrokerConnectionError) as exc:
            logger.warning("stopping with the queue's Redis away: {}", exc)
        self._roster.request_stop()
        self._roster.join(timeout=1.0)
        with contextlib.suppress(brokers.RedisError):  # else unheard-of after the heartbeat
            brokers.sign_off(self.broker.client, self.name)

    def waiting(self) -> str | None:
        """A fault of the environment this host waits out (its outbox full, a share gone)."""
        return self._environment.holding

    def problem(self) -> str | None:
        """Why this host cannot go on, in a line; None while it can."""
        if self.fatal is not None:
            return f"the device is unusable: {self.fatal}"
        if self._stop.is_set():
            return None
        return self._roster.problem()

    # -- the actor, in a Dramatiq worker thread ---------------------------------------------

    def _carry_out(self, payload: dict[str, Any]) -> None:
        """One assignment; never raises (Dramatiq would dead-letter the message), and reports
        every job it took: the coordinator sends again what it does not hear about."""
        try:
            assignment = Assignment.from_dict(payload)
        except Exception as exc:
            logger.opt(exception=exc).error(
                "an assignment could not be read ({}); is this host's stylebox the "
                "coordinator's version ({})?",
                exc,
                __version__,
            )
            return
        config = self.config  # one config for the whole assignment, even if a reload swaps it
        taken = self._take(assignment.orders)
        try:
            try:
                reports = self._assignment(assignment, taken, config)
            except Exception as exc:  # a bug between the steps: each job is still reported
                logger.opt(exception=exc).error("an assignment failed: {}", exc)
                reports = [self._failure(order, exc, self._executor()) for order in taken]
            for report in reports:
                self._report(report)
        finally:
            with self._lock:
                for order in taken:
                    self._jobs.pop(order.id, None)
            self._roster.wake()

    def _take(self, orders: tuple[Order, ...]) -> list[Order]:
        """The orders no one else has in hand, now listed in this host's roster line."""
        try:
            lines = brokers.live_roster(self.broker.client, self.config.queue.heartbeat_seconds)
        except brokers.RedisError:
            lines = {}
        elsewhere = {
            job: name for name, line in lines.items() if name != self.name for job in line["jobs"]
        }
        taken = []
        with self._lock:
            for order in orders:
                holder = "this host" if order.id in self._jobs else elsewhere.get(order.id)
                if holder is not None:
                    logger.bind(job=order.id).info("already in hand on {}; left to it", holder)
                    continue
                self._jobs[order.id] = {}  # its progress from the first evaluation
                taken.append(order)
        self._roster.wake()
        return taken

    def _executor(self) -> Executor:
        """This thread's device, taken once from the pool."""
        if not hasattr(self._own, "executor"):
            self._own.executor = self._free.get_nowait()
        return self._own.executor

    def _assignment(
        self, assignment: Assignment, orders: list[Order], config: Config
    ) -> list[Report]:
        reports: list[Report] = []
        ready: list[Loaded] = []
        executor = self._executor()
        by_job = {order.id: order for order in orders}
        for order in orders:
            if self._stop.is_set():
                reports.append(self._ended(order, Outcome.RELEASED, "the worker is stopping"))
                continue
            if self._holding:  # taken just before the hold began
                reason = f"{self.name} takes no jobs now: it cannot see the share"
                reports.append(self._ended(order, Outcome.HANDED_BACK, reason))
                continue
            try:
                prepared = self._prepare(order, assignment, config, executor)
            except Exception as exc:
                reports.append(self._failure(order, exc, executor))
                continue
            if isinstance(prepared, Report):
                reports.append(prepared)
            else:
                ready.append(prepared)
        if ready:
            preset = config.presets[by_job[ready[0].work.job_id].preset]
            outbox = Outbox(config.outbox, file_mode=assignment.writing.file_mode)
            painting = Painting(
                preset, assignment.writing, outbox, assignment.max_input_pixels, self._progress
            )
            endings = executor.paint(ready, painting)
            reports += [self._report_of(by_job[e.work.job_id], e) for e in endings]
            if executor.poisoned is not None:
                self.fatal = executor.poisoned
                self._stop.set()
                self._hold(True, "the device is unusable")
                logger.critical("the device is unusable ({}); this worker exits", self.fatal)
        return reports

    def _prepare(
        self, order: Order, assignment: Assignment, config: Config, executor: Executor
    ) -> Loaded | Report:
        """The order's photo, checked and loaded, or the report of a job settled here."""
        log = logger.bind(job=order.id)
        source = self._here(order.source, assignment.inbox, config.inbox)
        planned = self._here(order.planned, assignment.outbox, config.outbox)
        if published(planned, order.content_hash) is not None:
            log.info("{} was already published; reported done", planned.name)
            return self._ended(order, Outcome.DONE)
        preset = config.presets.get(order.preset)
        if preset is None or preset.fingerprint != order.fingerprint:
            differs = "is not configured" if preset is None else "differs (styles or parameters)"
            reason = (
                f"preset {order.preset!r} {differs} on {self.name}; give every host the "
                "coordinator's presets"
            )
            log.error("{}", reason)
            return self._ended(order, Outcome.HANDED_BACK, reason)
        if self._deaths.deaths(order.id) > assignment.max_attempts:
            reason = "a worker died during each of its attempts"
            return self._ended(order, Outcome.FAILED, reason)
        if not source.exists() and not source.is_symlink():
            raise ShareMissing(
                errno.ENOENT,
                f"not found on {self.name} (is the inbox share mounted at {config.inbox}?)",
                str(source),
            )
        work = order.as_work(source, planned)
        return executor.load(work, preset, assignment.max_input_pixels)

    @staticmethod
    def _here(path: str, theirs: str, ours: Path) -> Path:
        """The coordinator's `path`, inside its folder `theirs`, on this host: inside `ours`,
        through no link out of it."""
        named = named_within(path, theirs)
        if named is None:
            raise InputError(f"{path}: not inside the coordinator's {theirs}")
        here = ours / named.relative_to(theirs)
        if not really_within(here.parent.resolve(), [ours]):
            raise InputError(f"{here}: its folder leads out of {ours} (a link)")
        return here

    def _report_of(self, order: Order, ended: Ended) -> Report:
        """The executor's ending as the coordinator hears it."""
        log = logger.bind(job=order.id)
        if ended.outcome is Outcome.DONE:
            assert ended.delivery is not None
            log.success("published {}", ended.delivery.image)
            return self._ended(order, Outcome.DONE)
        if ended.outcome is Outcome.DEVICE_LOST:  # another host does it
            reason = f"{ended.reason} on {self.name}"
            return self._ended(order, Outcome.HANDED_BACK, reason)
        if ended.outcome is Outcome.PAUSED:  # not the photo's fault: back, and no job here
            self._environment.fault(ended.reason)
            self._hold(True, ended.reason)
            return self._ended(order, Outcome.HANDED_BACK, f"{ended.reason} on {self.name}")
        if ended.outcome not in (Outcome.FAILED, Outcome.RELEASED):  # a FAILED one is logged
            log.warning("{}: {}", ended.outcome, ended.reason)
        return self._ended(order, ended.outcome, ended.reason)

    def _progress(self, snapshot: Snapshot) -> None:
        """How far a job is, for this host's roster line."""
        with self._lock:
            if snapshot.work.job_id in self._jobs:
                self._jobs[snapshot.work.job_id] = snapshot.progress.as_dict()

    # -- at least once, reported once ---------------------------------------------------------

    def _failure(self, order: Order, exc: Exception, executor: Executor) -> Report:
        """The report of an order that failed before the executor painted it."""
        if isinstance(exc, ShareMissing):
            # Not the photo's fault, nor this attempt's: handed back, and no job taken here
            # for a while, so that another host does it.
            self._paused_until = time.monotonic() + SHARE_PAUSE_SECONDS
            self._hold_while_share_missing()
            logger.bind(job=order.id).warning("{}; handed back", exc)
            reason = f"{Path(order.source).name}: {exc}"
            return self._ended(order, Outcome.HANDED_BACK, reason)
        as_sent = order.as_work(Path(order.source), Path(order.planned))
        return self._report_of(order, executor.failed(as_sent, exc))

    def _ended(self, order: Order, outcome: Outcome, reason: str = "") -> Report:
        return Report(order.id, order.content_hash, order.dispatch, outcome, self.name, reason)

    def _report(self, report: Report) -> None:
        """Send one report, waiting out a Redis restart (not long once stopping)."""
        started = time.monotonic()
        tries = 0
        while True:
            try:
                brokers.send(self.broker, brokers.RESULTS, brokers.FINISHED, report.as_dict())
                break
            except brokers.RedisError as exc:
                limit = STOPPING_REPORT_SECONDS if self._stop.is_set() else REPORT_TRIES_SECONDS
                if time.monotonic() - started > limit:
                    logger.bind(job=report.job_id).error(
                        "could not report {} ({}); the coordinator will send the job again",
                        report.outcome,
                        exc,
                    )
                    return
                tries += 1
                time.sleep(backoff_seconds(tries, first_seconds=0.1, most_seconds=2.0))

    # -- the roster, in its own thread ----------------------------------------------------------

    def roster_line(self) -> dict[str, Any]:
        """This host's line in the roster: what it has in hand and how far, and whether it takes
        jobs (checked first: the share may have gone)."""
        self._hold_while_share_missing()
        with self._lock:
            jobs = {str(job): dict(progress) for job, progress in self._jobs.items()}
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "devices": self._devices,
            "started": self._started,
            "taking_jobs": not self._holding,
            "version": __version__,
            "jobs": jobs,
        }

    def _hold_while_share_missing(self) -> None:
        """Take no jobs while this host cannot see the share (the coordinator's mark is missing
        from the outbox, or a photo was not found here lately), so that other hosts take them."""
        try:
            missing = not (self.config.outbox / SHARE_MARK).is_file()
        except OSError:  # a stale NFS handle, an I/O error: as good as missing
            missing = True
        if missing:
            self._hold(True, f"{self.config.outbox / SHARE_MARK} is missing")
        elif (waits := self._environment.problem()) is not None:
            self._hold(True, waits)
        elif time.monotonic() < self._paused_until:
            self._hold(True, "a photo was not found here")
        elif self.fatal is None:
            self._hold(False, "")

    def _hold(self, hold: bool, why: str) -> None:
        """Stop (or go back to) reading the jobs queue; what is in hand carries on."""
        with self._lock:
            if hold == self._holding:
                return
            consumer = self._worker.consumers.get(brokers.JOBS)
            if consumer is None:
                return
            self._holding = hold
        if hold:
            consumer.pause()
            logger.warning("taking no jobs: {}", why)
        else:
            consumer.resume()
            logger.info("taking jobs again")
        self._roster.wake()


class _Roster(Loop):
    """Every few seconds, and whenever a job arrives or leaves (`wake`): the host's line in the
    roster, which is how the coordinator and the other hosts know what it has in hand."""

    name = "roster"

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host
        self._trouble: Exception | None = None

    def step(self) -> float:
        try:
            brokers.report_in(self.host.broker.client, self.host.name, self.host.roster_line())
            if self._trouble is not None:
                logger.info("the queue's Redis answers again")
            self._trouble = None
        except Exception as exc:  # Redis away, or the share erroring: said once, kept on
            if self._trouble is None:
                logger.warning("the roster could not be written ({}); retrying", exc)
            self._trouble = exc
        return brokers.ROSTER_SECONDS
