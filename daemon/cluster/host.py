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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import dramatiq
from loguru import logger

from daemon import __version__, pipeline
from daemon.cluster import broker as brokers
from daemon.cluster.messages import HANDED_BACK, RELEASED, Assignment, Order, Report
from daemon.config import Config, Preset
from daemon.engine import device, transfer
from daemon.errors import InputError
from daemon.media import decode
from daemon.outbox import Outbox, published
from daemon.service.finish import Outcome, Superseded, classify, holds
from daemon.service.worker import (
    StopRequested,
    check_photo,
    lower_objective,
    progress_line,
    sidecar_for,
)

SHARE_MARK = ".stylebox-share"  # written by the coordinator in its outbox: the share is mounted
SHARE_PAUSE_SECONDS = 30.0  # a host that cannot see a photo takes no jobs for this long
REPORT_TRIES_SECONDS = 60.0  # a report waits this long for Redis to come back
STOPPING_REPORT_SECONDS = 2.0  # ... or this long once the host is stopping
TRIES_SECONDS = 7 * 86400


class ShareMissing(OSError):
    """The share is not mounted on this host, or not where its config says: another host (or
    this one, later) can do the job."""


def worker_name() -> str:
    """How a host is named in the roster, the sidecars and `stylebox status`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def devices_for(name: str) -> list[str]:
    """One device per worker thread: `auto` means every CUDA device (else the CPU)."""
    import torch

    if name == "auto" and torch.cuda.is_available():
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [str(device.resolve_device(name))]


@dataclass(frozen=True)
class _Ready:
    """An order whose photo is checked and loaded, with the preset it was checked against."""

    order: Order
    preset: Preset
    source: Path  # on this host
    planned: Path  # on this host
    photo: decode.LoadedImage


class Host:
    """The worker side of the queue; `start`, then `stop` (which releases what is running).
    `config` may be swapped on reload; an assignment keeps the one it began with."""

    def __init__(self, config: Config, models: list[device.Models], *, name: str = "") -> None:
        self.config = config
        self.name = name or worker_name()
        self.broker = brokers.connect(config.queue)
        self.fatal: BaseException | None = None  # a device that cannot be used again
        self._free: queue.SimpleQueue[device.Models] = queue.SimpleQueue()
        for each in models:
            self._free.put(each)
        self._devices = [str(each.device) for each in models]
        self._own = threading.local()
        self._styles: dict[tuple[str, str], tuple[list[transfer.Style], Any]] = {}
        self._lock = threading.Lock()  # the maps below, shared by the worker threads
        self._jobs: dict[int, dict[str, Any]] = {}  # in hand here, from receipt to report
        self._counted: Counter[int] = Counter()  # attempts `_deaths` counted, until reported
        self._stop = threading.Event()
        self._changed = threading.Event()  # a job arrived or left: the roster says so at once
        self._paused_until = 0.0
        self._holding = False  # the share is missing here (or the device is gone): no jobs
        self._started = time.time()
        dramatiq.Actor(
            self._carry_out,
            broker=self.broker,
            actor_name=brokers.STYLISE,
            queue_name=brokers.JOBS,
            priority=0,
            options={},
        )
        self._worker = dramatiq.Worker(
            self.broker,
            queues={brokers.JOBS},
            worker_threads=len(models),
            worker_timeout=brokers.POLL_MILLISECONDS,
        )
        # One message per thread: no photo waits behind a long job while another host idles.
        self._worker.queue_prefetch = len(models)
        self._roster = threading.Thread(target=self._report_in, name="roster", daemon=True)

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
        self._changed.set()
        try:  # Dramatiq waits up to its timeout twice: for the threads, then the consumers
            self._worker.stop(timeout=int(timeout * 1000 / 2))
        except (brokers.RedisError, dramatiq.BrokerConnectionError) as exc:
            logger.warning("stopping with the queue's Redis away: {}", exc)
        self._roster.join(timeout=1.0)
        with contextlib.suppress(brokers.RedisError):  # else unheard-of after the heartbeat
            brokers.sign_off(self.broker.client, self.name)

    def problem(self) -> str | None:
        """Why this host cannot go on, in a line; None while it can."""
        if self.fatal is not None:
            return f"the device is unusable: {self.fatal}"
        if (
            self._roster.ident is not None
            and not self._roster.is_alive()
            and not self._stop.is_set()
        ):
            return "the worker's roster thread is not running"
        return None

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
                reports = [self._failure(order, exc) for order in taken]
            for report in reports:
                self._report(report)
        finally:
            with self._lock:
                for order in taken:
                    self._jobs.pop(order.id, None)
            self._changed.set()

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
        self._changed.set()
        return taken

    def _models(self) -> device.Models:
        """This thread's device, taken once from the pool."""
        if not hasattr(self._own, "models"):
            self._own.models = self._free.get_nowait()
        return self._own.models

    def _assignment(
        self, assignment: Assignment, orders: list[Order], config: Config
    ) -> list[Report]:
        reports: list[Report] = []
        ready: list[_Ready] = []
        outbox = Outbox(config.outbox, file_mode=assignment.output["file_mode"])
        for order in orders:
            if self._stop.is_set():
                reports.append(self._ended(order, RELEASED, "the worker is stopping"))
                continue
            if self._holding:  # taken just before the hold began
                reason = f"{self.name} takes no jobs now: it cannot see the share"
                reports.append(self._ended(order, HANDED_BACK, reason))
                continue
            try:
                prepared = self._prepare(order, assignment, config)
            except Exception as exc:
                reports.append(self._failure(order, exc))
                continue
            if isinstance(prepared, Report):
                reports.append(prepared)
            else:
                ready.append(prepared)
        if ready:
            reports += self._paint(ready, assignment, outbox)
        return reports

    def _prepare(self, order: Order, assignment: Assignment, config: Config) -> _Ready | Report:
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
            return self._ended(order, HANDED_BACK, reason)
        if self._deaths(order) > assignment.max_attempts:
            return self._ended(order, Outcome.FAILED, "a worker died during each of its attempts")
        if not source.exists() and not source.is_symlink():
            raise ShareMissing(
                errno.ENOENT,
                f"not found on {self.name} (is the inbox share mounted at {config.inbox}?)",
                str(source),
            )
        check_photo(source, order.content_hash)
        photo = decode.load_image(
            source,
            max_pixels=assignment.max_input_pixels,
            long_side=preset.settings.size,
            follow_symlinks=False,
        )
        return _Ready(order, preset, source, planned, photo)

    @staticmethod
    def _here(path: str, theirs: str, ours: Path) -> Path:
        """The coordinator's `path`, inside its folder `theirs`, on this host: inside `ours`,
        through no link out of it."""
        relative = PurePath(os.path.normpath(path))
        if not relative.is_relative_to(theirs) or ".." in relative.parts:
            raise InputError(f"{path}: not inside the coordinator's {theirs}")
        here = ours / relative.relative_to(theirs)
        if not here.parent.resolve().is_relative_to(ours.resolve()):
            raise InputError(f"{here}: its folder leads out of {ours} (a link)")
        return here

    def _paint(self, ready: list[_Ready], assignment: Assignment, outbox: Outbox) -> list[Report]:
        """Stylise the loaded photos together, then publish each; a batch that fails is tried
        again one photo at a time, so that one photo's fault costs its mates nothing."""
        models = self._models()
        preset = ready[0].preset
        batch = f" in a batch of {len(ready)}" if len(ready) > 1 else ""
        for each in ready:
            logger.bind(job=each.order.id).info(
                "{} -> preset {} on {}{}", each.source, preset.name, models.device, batch
            )
        started = time.monotonic()
        try:
            styles, targets = self._styles_for(preset, models, assignment.max_input_pixels)
            size = transfer.output_size(*ready[0].photo.pixels.shape[:2], preset.settings)
            if len(ready) > pipeline.room_for(size, models):
                raise MemoryError(f"{len(ready)} photos at {size} do not fit on {models.device}")
            results = pipeline.stylise_photos(
                [(each.source.name, each.photo) for each in ready],
                styles,
                preset.settings,
                models,
                targets=targets,
                callback=lambda progress: self._progress(ready, progress, started),
            )
        except StopRequested:
            return [self._ended(each.order, RELEASED, "the worker stopped") for each in ready]
        except Exception as exc:
            if device.is_poisoned(exc):
                self.fatal = exc
                self._stop.set()
                self._hold(True, "the device is unusable")
                reason = f"device error on {self.name}: {exc}"
                logger.critical("the device is unusable ({}); this worker exits", exc)
                return [self._ended(each.order, HANDED_BACK, reason) for each in ready]
            if len(ready) == 1:
                return [self._failure(ready[0].order, exc)]
            logger.warning("a batch of {} failed ({}); each photo runs alone", len(ready), exc)
            return [r for each in ready for r in self._paint([each], assignment, outbox)]
        reports = []
        for each, result in zip(ready, results, strict=True):
            try:
                reports.append(self._publish(each, result, assignment, outbox, len(ready)))
            except Exception as exc:
                reports.append(self._failure(each.order, exc))
        return reports

    def _publish(
        self,
        ready: _Ready,
        result: transfer.Result,
        assignment: Assignment,
        outbox: Outbox,
        batch: int,
    ) -> Report:
        order, source = ready.order, ready.source
        if published(ready.planned, order.content_hash) is not None:
            logger.bind(job=order.id).info("published meanwhile by another worker; ours dropped")
            return self._ended(order, Outcome.DONE)
        if source.exists() and not holds(source, order.content_hash):
            raise Superseded(f"{source.name} changed while it was stylised")
        output = assignment.output
        writer = pipeline.image_writer(
            result,
            ready.photo,
            format=output["format"],
            quality=output["quality"],
            bit_depth=output["bit_depth"],
        )
        job = order.as_job()
        sidecar = sidecar_for(job, ready.preset, result, source.name, batch, time.time())
        sidecar["worker"] = {**sidecar["worker"], "name": self.name}
        outbox.deliver(ready.planned, writer, sidecar)
        logger.bind(job=order.id).success("published {}", ready.planned)
        return self._ended(order, Outcome.DONE)

    def _progress(self, ready: list[_Ready], progress: transfer.Progress, started: float) -> None:
        if self._stop.is_set():
            raise StopRequested
        job_id = ready[progress.item].order.id
        if job_id in self._jobs:
            best = lower_objective(progress.losses.total, self._jobs[job_id].get("objective"))
            elapsed = time.monotonic() - started
            self._jobs[job_id] = progress_line(progress, best, elapsed, time.time())

    def _styles_for(self, preset: Preset, models: device.Models, max_pixels: int):
        """Style images and their Gram targets, once per preset version and device."""
        key = (preset.fingerprint, str(models.device))
        with self._lock:
            if key not in self._styles:
                styles = pipeline.load_styles(preset.styles, preset.settings, max_pixels=max_pixels)
                self._styles[key] = (styles, transfer.StyleTargets())
            return self._styles[key]

    # -- at least once, reported once ---------------------------------------------------------

    def _deaths(self, order: Order) -> int:
        """Counts this attempt of the job; what is left of the count once attempts report is
        how many died unreported (a photo that kills its worker must not do so forever)."""
        key = _tries_key(order.id, order.content_hash)
        try:
            with self.broker.client.pipeline() as both:
                deaths, _ = both.incr(key).expire(key, TRIES_SECONDS).execute()
        except brokers.RedisError:
            return 0  # not counted while Redis is away; the report waits for it anyway
        with self._lock:
            self._counted[order.id] += 1
        return int(deaths)

    def _failure(self, order: Order, exc: Exception) -> Report:
        log = logger.bind(job=order.id)
        if isinstance(exc, ShareMissing):
            # Not the photo's fault, nor this attempt's: handed back, and no job taken here
            # for a while, so that another host does it.
            self._paused_until = time.monotonic() + SHARE_PAUSE_SECONDS
            self._hold_while_share_missing()
            log.warning("{}; handed back", exc)
            return self._ended(order, HANDED_BACK, f"{Path(order.source).name}: {exc}")
        outcome, reason = classify(exc, Path(order.source).name)
        if outcome is Outcome.FAILED:
            log.opt(exception=exc).error("unexpected error")
        else:
            log.warning("{}: {}", outcome, reason)
        return self._ended(order, outcome, reason)

    def _ended(self, order: Order, outcome: str, reason: str = "") -> Report:
        return Report(order.id, order.content_hash, order.dispatch, str(outcome), self.name, reason)

    def _report(self, report: Report) -> None:
        """Send one report, waiting out a Redis restart (not long once stopping); the attempt
        no longer counts as a death once it is sent."""
        started = time.monotonic()
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
                time.sleep(0.5)
        with self._lock:
            counted = self._counted[report.job_id] > 0
            if counted:
                self._counted[report.job_id] -= 1
                if not self._counted[report.job_id]:
                    del self._counted[report.job_id]
        if counted:
            with contextlib.suppress(brokers.RedisError):
                self.broker.client.decr(_tries_key(report.job_id, report.content_hash))

    # -- the roster, in its own thread ----------------------------------------------------------

    def _report_in(self) -> None:
        """Every few seconds, and whenever a job arrives or leaves: this host's line in the
        roster (what it has in hand, how far), and whether it takes jobs."""
        trouble = None
        while not self._stop.is_set():
            try:
                self._hold_while_share_missing()
                with self._lock:
                    jobs = {str(job): dict(progress) for job, progress in self._jobs.items()}
                brokers.report_in(
                    self.broker.client,
                    self.name,
                    {
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "devices": self._devices,
                        "started": self._started,
                        "taking_jobs": not self._holding,
                        "version": __version__,
                        "jobs": jobs,
                    },
                )
                if trouble is not None:
                    logger.info("the queue's Redis answers again")
                trouble = None
            except Exception as exc:  # Redis away, or the share erroring: said once, kept on
                if trouble is None:
                    logger.warning("the roster could not be written ({}); retrying", exc)
                trouble = exc
            self._changed.wait(brokers.ROSTER_SECONDS)
            self._changed.clear()

    def _hold_while_share_missing(self) -> None:
        """Take no jobs while this host cannot see the share (the coordinator's mark is missing
        from the outbox, or a photo was not found here lately), so that other hosts take them."""
        try:
            missing = not (self.config.outbox / SHARE_MARK).is_file()
        except OSError:  # a stale NFS handle, an I/O error: as good as missing
            missing = True
        if missing:
            self._hold(True, f"{self.config.outbox / SHARE_MARK} is missing")
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
        self._changed.set()


def _tries_key(job_id: int, content_hash: str) -> str:
    return f"{brokers.NAMESPACE}:tries:{job_id}:{content_hash[:16]}"
