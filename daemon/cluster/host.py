"""A worker host: Dramatiq worker threads, one per device, each with its model loaded once, taking
assignments from the broker and reporting each job's end to the coordinator.

Used by `stylebox worker` and, with queue.local_worker, inside the coordinator. The host writes
results into the shared outbox, where the coordinator planned them (temp name, fsync, rename: never
a partial file), and never touches the journal, which is the coordinator's alone. Its config's
`inbox` and `outbox` are where this host mounts the coordinator's (the coordinator's paths in an
assignment are mapped onto them), and nothing outside them is read or written.

Delivery is at least once, so each job is checked before it is painted and again before its result
is published: a result from the same bytes already there (a job redelivered after a worker was
thought dead) is reported done as it is, and a job another live host is painting is left to it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import dramatiq
from loguru import logger

from daemon import __version__, pipeline
from daemon.cluster import broker as brokers
from daemon.cluster.messages import RELEASED, Assignment, Order, Report
from daemon.config import Config, Preset
from daemon.engine import device, transfer
from daemon.errors import InputError
from daemon.media import decode
from daemon.service.finish import Outcome, Superseded, classify, holds
from daemon.service.outbox import Outbox, published
from daemon.service.worker import StopRequested, sidecar_for

SHARE_MARK = ".stylebox-share"  # written by the coordinator in its outbox: the share is mounted
SHARE_PAUSE_SECONDS = 30.0  # a host that cannot see a photo takes no jobs for this long
REPORT_TRIES_SECONDS = 60.0  # a report waits this long for Redis to come back
TRIES_SECONDS = 7 * 86400
PROGRESS_SECONDS = 2.0


class ShareMissing(OSError):
    """The share is not mounted on this host, or not where its config says: transient, since
    another host (or this one, later) can do the job."""


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
    """An order whose photo is checked and loaded."""

    order: Order
    source: Path  # on this host
    planned: Path  # on this host
    photo: decode.LoadedImage


class Host:
    """The worker side of the queue; `start`, then `stop` (which releases what is running)."""

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
        self._styles_lock = threading.Lock()
        self._jobs: dict[int, dict[str, Any]] = {}  # what runs here, with its progress
        self._counted: set[int] = set()  # jobs whose attempt `_deaths` counted, until reported
        self._counted_lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()  # a job began here: the roster says so at once
        self._paused_until = 0.0
        self._holding = False  # the share is missing here: the jobs queue is not read
        self._hold_lock = threading.Lock()
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
        """Stop taking jobs; running ones end at their next evaluation, reported released."""
        self._stop.set()
        self._changed.set()
        self._worker.stop(timeout=int(timeout * 1000))
        self._roster.join(timeout=brokers.ROSTER_SECONDS + 1)
        with contextlib.suppress(brokers.BrokerError):  # else unheard-of after the heartbeat
            brokers.sign_off(self.broker.client, self.name)

    def problem(self) -> str | None:
        """Why this host cannot go on, in a line; None while it can."""
        if self.fatal is not None:
            return f"the device is unusable: {self.fatal}"
        return None

    # -- the actor, in a Dramatiq worker thread ---------------------------------------------

    def _carry_out(self, payload: dict[str, Any]) -> None:
        """One assignment; never raises (Dramatiq would dead-letter the message), and reports
        every job it took: the coordinator re-sends what it does not hear about."""
        try:
            assignment = Assignment.from_dict(payload)
            reports = self._assignment(assignment)
        except Exception as exc:
            logger.opt(exception=exc).error(
                "an assignment could not be read ({}); is this host's stylebox the "
                "coordinator's version?",
                exc,
            )
            return
        for report in reports:
            self._report(report)

    def _models(self) -> device.Models:
        """This thread's device, taken once from the pool."""
        if not hasattr(self._own, "models"):
            self._own.models = self._free.get_nowait()
        return self._own.models

    def _assignment(self, assignment: Assignment) -> list[Report]:
        reports: list[Report] = []
        ready: list[_Ready] = []
        outbox = Outbox(self.config.outbox, file_mode=assignment.output["file_mode"])
        for order in assignment.orders:
            if self._stop.is_set() or self._holding:
                # Stopping, or taken just before the hold began: handed back, not attempted.
                reports.append(self._ended(order, RELEASED, "handed back by the worker"))
                continue
            holder = self._held_elsewhere(order)
            if holder is not None:
                logger.bind(job=order.id).info("already being painted by {}; left to it", holder)
                continue
            try:
                prepared = self._prepare(order, assignment)
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

    def _prepare(self, order: Order, assignment: Assignment) -> _Ready | Report:
        """The order's photo, checked and loaded, or the report of a job already settled."""
        log = logger.bind(job=order.id)
        source = self._here(order.source, assignment.inbox, self.config.inbox)
        planned = self._here(order.planned, assignment.outbox, self.config.outbox)
        if published(planned, order.content_hash) is not None:
            log.info("{} was already published; reported done", planned.name)
            return self._ended(order, Outcome.DONE)
        if self._deaths(order) > assignment.max_attempts:
            reason = "a worker died during each of its attempts"
            return self._ended(order, Outcome.FAILED, reason)
        preset = self.config.presets.get(order.preset)
        if preset is None or preset.fingerprint != order.fingerprint:
            differs = "is not configured" if preset is None else "differs (styles or parameters)"
            reason = (
                f"preset {order.preset!r} {differs} on {self.name}; give every host the "
                "coordinator's presets"
            )
            log.error("{}", reason)
            return self._ended(order, Outcome.RETRY, reason)
        if not source.exists() and not source.is_symlink():
            raise ShareMissing(
                errno.ENOENT,
                f"not found on {self.name} (is the inbox share mounted at {self.config.inbox}?)",
                str(source),
            )
        if source.is_symlink() or not source.is_file():
            raise InputError(f"{source.name}: not a regular file (symlinks are never followed)")
        if not holds(source, order.content_hash):
            raise Superseded(f"{source.name} changed after it was queued")
        photo = decode.load_image(
            source,
            max_pixels=assignment.max_input_pixels,
            long_side=preset.settings.size,
            follow_symlinks=False,
        )
        return _Ready(order, source, planned, photo)

    def _here(self, path: str, theirs: str, ours: Path) -> Path:
        """The coordinator's `path`, inside its folder `theirs`, on this host (inside `ours`)."""
        relative = PurePath(os.path.normpath(path))
        if not relative.is_relative_to(theirs) or ".." in relative.parts:
            raise InputError(f"{path}: not inside the coordinator's {theirs}")
        return ours / relative.relative_to(theirs)

    def _paint(self, ready: list[_Ready], assignment: Assignment, outbox: Outbox) -> list[Report]:
        """Stylise the loaded photos together, then publish each; a batch that fails is tried
        again one photo at a time, so that one photo's fault costs its mates nothing."""
        models = self._models()
        preset = self.config.presets[ready[0].order.preset]
        batch = f" in a batch of {len(ready)}" if len(ready) > 1 else ""
        for each in ready:
            self._jobs[each.order.id] = {}  # in hand; its progress from the first evaluation
            logger.bind(job=each.order.id).info(
                "{} -> preset {} on {}{}", each.source, preset.name, models.device, batch
            )
        self._changed.set()
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
                reason = f"device error on {self.name}: {exc}"
                logger.critical("the device is unusable ({}); this worker exits", exc)
                return [self._ended(each.order, Outcome.RETRY, reason) for each in ready]
            if len(ready) == 1:
                return [self._failure(ready[0].order, exc)]
            logger.warning("a batch of {} failed ({}); each photo runs alone", len(ready), exc)
            return [r for each in ready for r in self._paint([each], assignment, outbox)]
        finally:
            for each in ready:
                self._jobs.pop(each.order.id, None)
        reports = []
        for each, result in zip(ready, results, strict=True):
            try:
                reports.append(self._publish(each, result, preset, assignment, outbox, len(ready)))
            except Exception as exc:
                reports.append(self._failure(each.order, exc))
        return reports

    def _publish(
        self,
        ready: _Ready,
        result: transfer.Result,
        preset: Preset,
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
        sidecar = sidecar_for(order.as_job(), preset, result, source.name, batch, time.time())
        sidecar["worker"] = {**sidecar["worker"], "name": self.name}
        outbox.deliver(ready.planned, writer, sidecar)
        logger.bind(job=order.id).success("published {}", ready.planned)
        return self._ended(order, Outcome.DONE)

    def _progress(self, ready: list[_Ready], progress: transfer.Progress, started: float) -> None:
        if self._stop.is_set():
            raise StopRequested
        line = self._jobs.get(ready[progress.item].order.id)
        if line is not None:
            best = line.get("objective")
            total = progress.losses.total
            if total == total and total != float("inf") and (best is None or total < best):
                line["objective"] = total  # a line search's probe may be worse than the best
            line.update(
                evaluation=progress.evaluation,
                budget=progress.budget,
                elapsed_seconds=round(time.monotonic() - started, 3),
                updated_at=time.time(),
            )

    def _styles_for(self, preset: Preset, models: device.Models, max_pixels: int):
        """Style images and their Gram targets, once per preset version and device."""
        key = (preset.fingerprint, str(models.device))
        with self._styles_lock:
            if key not in self._styles:
                styles = pipeline.load_styles(preset.styles, preset.settings, max_pixels=max_pixels)
                self._styles[key] = (styles, transfer.StyleTargets())
            return self._styles[key]

    # -- at least once, reported once ---------------------------------------------------------

    def _held_elsewhere(self, order: Order) -> str | None:
        """The live host that is painting this job now, if another one is (a re-sent job)."""
        try:
            lines = brokers.live_roster(self.broker.client, self.config.queue.heartbeat_seconds)
        except brokers.BrokerError:
            return None
        for name, line in lines.items():
            if name != self.name and str(order.id) in line.get("jobs", {}):
                return name
        return None

    def _deaths(self, order: Order) -> int:
        """Counts this attempt of the job; what is left of the count once attempts report is
        how many died unreported (a photo that kills its worker must not do so forever)."""
        key = _tries_key(order.id, order.content_hash)
        try:
            deaths = int(self.broker.client.incr(key))
            self.broker.client.expire(key, TRIES_SECONDS)
        except brokers.BrokerError:
            return 0  # not counted while Redis is away; the report waits for it anyway
        with self._counted_lock:
            self._counted.add(order.id)
        return deaths

    def _failure(self, order: Order, exc: Exception) -> Report:
        outcome, reason = classify(exc, Path(order.source).name)
        log = logger.bind(job=order.id)
        if outcome is Outcome.FAILED:
            log.opt(exception=exc).error("unexpected error")
        else:
            log.warning("{}: {}", outcome, reason)
        if isinstance(exc, ShareMissing):
            self._paused_until = time.monotonic() + SHARE_PAUSE_SECONDS
            self._hold_while_share_missing()  # at once: the retry must go to another host
        return self._ended(order, outcome, reason)

    def _ended(self, order: Order, outcome: str, reason: str = "") -> Report:
        return Report(order.id, order.content_hash, str(outcome), self.name, reason)

    def _report(self, report: Report) -> None:
        """Send one report, waiting out a Redis restart; the attempt no longer counts as a
        death once it is sent."""
        deadline = time.monotonic() + REPORT_TRIES_SECONDS
        while True:
            try:
                brokers.send(self.broker, brokers.RESULTS, brokers.FINISHED, report.as_dict())
                with self._counted_lock:
                    counted = report.job_id in self._counted
                    self._counted.discard(report.job_id)
                if counted:
                    self.broker.client.decr(_tries_key(report.job_id, report.content_hash))
                return
            except brokers.BrokerError as exc:
                if time.monotonic() > deadline:
                    logger.bind(job=report.job_id).error(
                        "could not report {} ({}); the coordinator will send the job again",
                        report.outcome,
                        exc,
                    )
                    return
                time.sleep(1.0)

    # -- the roster, in its own thread ----------------------------------------------------------

    def _report_in(self) -> None:
        """Every few seconds: this host's line in the roster (what it runs, how far), and
        whether it takes jobs: not while the share is missing here."""
        away = False
        while True:
            self._hold_while_share_missing()
            try:
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
                        "jobs": {str(k): dict(v) for k, v in list(self._jobs.items())},
                    },
                )
                if away:
                    logger.info("the queue's Redis answers again")
                away = False
            except brokers.BrokerError as exc:
                if not away:
                    logger.warning("the queue's Redis is unreachable ({}); retrying", exc)
                away = True
            self._changed.wait(brokers.ROSTER_SECONDS)
            self._changed.clear()
            if self._stop.is_set():
                return

    def _hold_while_share_missing(self) -> None:
        """Take no jobs while this host cannot see the share (its mark is missing from the
        outbox, or a photo was not found here lately), so that other hosts take them."""
        missing = not (self.config.outbox / SHARE_MARK).is_file()
        hold = missing or time.monotonic() < self._paused_until
        with self._hold_lock:
            if hold == self._holding:
                return
            consumer = self._worker.consumers.get(brokers.JOBS)
            if consumer is None:
                return
            self._holding = hold
        if hold:
            consumer.pause()
            why = (
                f"{self.config.outbox / SHARE_MARK} is missing"
                if missing
                else "a photo was not found"
            )
            logger.warning("taking no jobs: {} (is the share mounted here?)", why)
        else:
            consumer.resume()
            logger.info("taking jobs again")


def _tries_key(job_id: int, content_hash: str) -> str:
    return f"{brokers.NAMESPACE}:tries:{job_id}:{content_hash[:16]}"
