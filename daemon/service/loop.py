"""The daemon's start-up order, its threads, signal flags, sd_notify and an orderly stop.

Start-up: config -> logging -> folders -> single-instance lock -> journal (crash recovery) ->
model -> worker -> watcher (startup scan) -> READY. Signal handlers only set flags; everything they
ask for happens in the main loop, which also pings the systemd watchdog while watcher and worker
are healthy — so a stuck daemon is restarted instead of silently doing nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from loguru import logger

from daemon.config import Config, Preset, layout_problems, load_config
from daemon.config.paintings import Painting, PaintingsWatch, changes
from daemon.engine import device
from daemon.errors import (
    AlreadyRunning,
    ConfigError,
    ExitCode,
    JournalError,
    StateDirError,
    StyleboxError,
)
from daemon.jobs.previews import PREVIEWS_DIR
from daemon.outbox import open_outbox, remove_stale_temps
from daemon.paths import missing_root as missing
from daemon.service import events, pause
from daemon.service.channels import channels_for
from daemon.service.environment import roots_of
from daemon.service.intake import Intake
from daemon.service.journal import JobState, Journal
from daemon.service.logs import configure_logging
from daemon.service.metrics import Metrics
from daemon.service.roots import RootWatch
from daemon.service.sd_notify import Notifier
from daemon.service.sender import Sender
from daemon.service.watcher import Watcher
from daemon.service.worker import Worker

LOCK_NAME = "stylebox.lock"
MAIN_LOOP_SECONDS = 0.25
PAINTINGS_POLL_SECONDS = 2.0  # the paintings folder's listing, looked at (at most) this often
STOP_GRACE_SECONDS = 8.0  # systemd and users expect an exit within 10 s of SIGTERM
TEMP_AGE_WITH_WORKERS_SECONDS = 3600.0
NOTIFY_GRACE_SECONDS = 0.5  # for "stopped" to go out; what is left goes at the next start


@dataclass(frozen=True)
class Running:
    """What an add-on started with the daemon (the web page) may see and use: `config()` is the
    config in force (a reload may change it), `journal` the daemon's own (its writes are the
    daemon's), `health()` None while healthy, else why not."""

    config: Callable[[], Config]
    journal: Journal
    metrics: Metrics
    health: Callable[[], str | None]


Addon = Callable[[Running], AbstractContextManager[object]]


class Stylist(Protocol):
    """What takes and finishes the jobs: the Worker here, or a coordinator that sends them to
    worker hosts (daemon/cluster); `config` is swapped on reload."""

    config: Config
    fatal: BaseException | None

    def recover(self) -> None: ...
    def warm_up(self, preset: Preset) -> None: ...
    def start(self) -> None: ...
    def wake(self) -> None: ...
    def request_stop(self) -> None: ...
    def join(self, timeout: float) -> bool: ...
    def problem(self) -> str | None: ...
    def waiting(self) -> str | None: ...


StylistFactory = Callable[..., Stylist]  # (config, journal, models, *, metrics, on_status)


class Service:
    """One daemon process: `run()` returns its exit code. Each of `addons` runs from the
    journal's opening (before the model loads, so a page can say "starting") to the stop.
    `stylist` makes what takes the jobs (the Worker by default)."""

    def __init__(
        self,
        config_path: Path,
        *,
        once: bool = False,
        verbose: bool = False,
        addons: Sequence[Addon] = (),
        stylist: StylistFactory = Worker,
    ) -> None:
        self.config_path = config_path
        self.once = once
        self.verbose = verbose
        self.addons = addons
        self.stylist = stylist
        self.notifier = Notifier()
        self._stop_signals = 0
        self._reload = threading.Event()
        self._worker: Stylist | None = None
        self._watcher: Watcher | None = None
        self._config: Config | None = None  # the config in force, for the add-ons
        self._paintings: PaintingsWatch | None = None  # made as the config is first loaded
        # the paintings folder as it was loaded: a reload waits while it is gone or remounted
        self._paintings_root = RootWatch({})

    def run(self) -> int:
        """Start, loop until stopped (or, with --once, until the inbox is done), stop."""
        # First of all: a SIGHUP or SIGTERM during the model load must not kill the process.
        self._install_signal_handlers()
        config = load_config(self.config_path)
        configure_logging(config, verbose=self.verbose, to_file=False)
        # The roots first: one missing is most often a share not mounted yet, which a restart
        # (exit 1) sees through; then all that `stylebox check` asks of the machine.
        locks = self._check_roots_and_lock(config)
        # Looked at before it is read: a painting that arrives meanwhile is a change to reload for.
        self._paintings = PaintingsWatch(config.paintings, time.monotonic())
        self._paintings_root = _paintings_root(config)
        try:
            config = load_config(self.config_path, check_machine=True)
        except BaseException:
            for fd in locks:
                os.close(fd)
            raise
        configure_logging(config, verbose=self.verbose)  # the outbox exists now
        try:
            return self._run_locked(config)
        finally:
            for fd in locks:
                os.close(fd)
            logger.complete()  # the file sink writes from a queue: flush it before exit

    def _check_roots_and_lock(self, config: Config) -> list[int]:
        """The three roots must be there (a share not mounted is never written under its mount
        point), each locked: state_dir's lock keeps one daemon per journal; the inbox's and the
        outbox's keep a second daemon (with a state_dir of its own) from painting every photo
        again. Locks held by a process end with it: a crash leaves none behind.

        A state_dir fault is final (StateDirError: it is local, and only the operator can fix
        it); one of the inbox or outbox is not, since either may be a share that comes back.
        """
        roots = [(folder, field) for field, folder in roots_of(config).items()]
        roots.sort(key=lambda root: root[1] != "state_dir")  # state_dir first: it is final
        for folder, field in roots:
            error = StateDirError if field == "state_dir" else StyleboxError
            where = f"{self.config_path}: {field} {folder}"
            if os.path.lexists(folder) and not folder.is_dir():
                raise error(f"{where}: not a folder")
            if not folder.is_dir():
                raise error(f"{self.config_path}: {missing(field, folder)}")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise error(f"{where}: not writable")
        locks: list[int] = []
        try:
            for folder, field in roots:
                locks.append(_lock(folder, field))
        except BaseException:
            for fd in locks:
                os.close(fd)
            raise
        return locks

    def _run_locked(self, config: Config) -> int:
        journal = Journal(config.journal_path)
        sender = Sender(
            journal,
            channels_for(config),
            give_up_after_seconds=config.notify.give_up_after_hours * 3600,
        )
        journal.event_routes, journal.on_events = sender.routes, sender.wake
        sender.start()  # what a crash left undelivered goes out now
        try:
            with contextlib.ExitStack() as addons:
                models = device.Models(device.resolve_device(config.device))
                metrics = Metrics(
                    device=str(models.device), presets=config.presets, counts=journal.counts
                )
                self._config = config
                running = Running(self._current_config, journal, metrics, self.health)
                for addon in self.addons:
                    addons.enter_context(addon(running))
                return self._serve(config, journal, models, metrics)
        finally:
            sender.stop(NOTIFY_GRACE_SECONDS)
            journal.close()

    def _current_config(self) -> Config:
        assert self._config is not None, "set before any add-on starts"
        return self._config

    def health(self) -> str | None:
        """None while work can go on (for `/healthz` and the page), else why not, in a line:
        the daemon's own trouble, or a fault of the environment it waits out."""
        waiting = self._watcher.problem() if self._watcher else None  # the inbox away
        return self.liveness() or waiting or (self._worker.waiting() if self._worker else None)

    def liveness(self) -> str | None:
        """None while the watcher and the worker are running (what the watchdog pings for: a
        full disk is waited out, not a reason for systemd to restart the daemon)."""
        if self._worker is None or self._watcher is None:
            return "starting: loading VGG-19 and scanning the inbox"
        if self._stop_signals:
            return "stopping"
        if not self._watcher.healthy():
            return self._watcher.problem() or "the inbox watcher is not running"
        return self._worker.problem()

    def _serve(
        self, config: Config, journal: Journal, models: device.Models, metrics: Metrics
    ) -> int:
        worker = self.stylist(
            config, journal, models, metrics=metrics, on_status=self.notifier.status
        )
        worker.recover()
        for folder in {config.outbox, config.originals_dir}:
            # With worker hosts, a temp may be one being written now: only old ones are a crash's.
            age = TEMP_AGE_WITH_WORKERS_SECONDS if config.queue.url is not None else 0.0
            removed = remove_stale_temps(folder, age) if folder.exists() else 0
            if removed:
                logger.info("removed {} temporary file(s) left in {} by a crash", removed, folder)
        for left in (config.state_dir / PREVIEWS_DIR).glob("*"):  # a crash's: no job runs now
            left.unlink(missing_ok=True)
        if pause.is_paused(config):
            logger.warning(
                "paused since the last run: resume from the web page, or remove {}",
                config.state_dir / pause.PAUSE_NAME,
            )
        logger.info(
            "loading VGG-19 on {}; arithmetic {}: {}",
            models.device,
            models.precision,
            models.precision_reason,
        )
        worker.warm_up(next(iter(config.presets.values())))
        intake = Intake(config, journal, on_queued=worker.wake)
        watcher = self._make_watcher(config, intake)
        worker.start()
        try:  # the watcher's first scan writes the journal: a failure there stops the worker too
            watcher.start()
            logger.info(
                "watching {} ({} mode); outputs go to {}", config.inbox, watcher.mode, config.outbox
            )
            self._worker, self._watcher = worker, watcher  # healthy from here on
            self.notifier.ready(f"watching {config.inbox}")
            _log_paintings((), config.paintings_seen)
            journal.record_events([events.daemon_event("started", config)])
            return self._main_loop(config, journal, worker, intake, watcher)
        finally:
            if self._worker is not None:  # it started: say it stops, unless the journal is why
                with contextlib.suppress(JournalError):
                    journal.record_events([events.daemon_event("stopped", config)])
            self.notifier.stopping()
            logger.info("stopping")
            worker.request_stop()  # first: its job needs the most time to wind down
            watcher.stop()
            if not worker.join(STOP_GRACE_SECONDS):
                logger.warning("the worker did not stop in time; its job will be retried")

    def _make_watcher(self, config: Config, intake: Intake) -> Watcher:
        watch = config.watch
        return Watcher(
            config.inbox,
            intake.accept,
            mode=watch.mode,
            poll_interval_seconds=watch.poll_interval_seconds,
            settle_seconds=watch.settle_seconds,
            rescan_interval_seconds=watch.rescan_interval_seconds,
            stalled_seconds=watch.stalled_seconds,
            is_ready=intake.is_ready,  # a whole photo, or a video (skipped whole or not)
            on_scanned=intake.forget_gone_files,
            quarantine_dir=config.quarantine_dir,
            take_back=lambda name: open_outbox(config).restore(name, config.inbox),
        )

    def _main_loop(self, config, journal, worker, intake, watcher) -> int:
        watchdog_every = self.notifier.watchdog_interval_seconds()
        last_ping = 0.0
        while not self._stop_signals:
            if worker.fatal is not None:  # cli.py maps it to its exit code, as at start-up
                raise worker.fatal
            # A paintings share gone would read as every painting removed: reloads wait for it
            # (the worker holds work meanwhile: environment.watched_of).
            away = self._paintings_root.problem()
            if away is None and self._paintings_changed(config):
                logger.info("the paintings folder changed; reloading the config")
                self._reload.set()
            if self._reload.is_set() and away is None:
                self._reload.clear()
                config = self._config = self._reload_config(config, worker, intake)
            healthy = self.liveness() is None
            if watchdog_every and healthy and time.monotonic() - last_ping >= watchdog_every:
                self.notifier.watchdog()
                last_ping = time.monotonic()
            if self.once and watcher.idle() and self._queue_empty(journal):
                logger.info("inbox done (--once)")
                return ExitCode.OK
            if self.once and watcher.idle() and pause.is_paused(config) and not journal.running():
                logger.info("paused, with jobs left in the queue (--once)")
                return ExitCode.OK
            time.sleep(MAIN_LOOP_SECONDS)
        return ExitCode.OK

    def _paintings_changed(self, config: Config) -> bool:
        """Whether the paintings folder changed and has settled since the config was read."""
        if self._paintings is None:
            return False
        watch = config.watch
        return self._paintings.due(
            config.paintings,
            time.monotonic(),
            poll_seconds=min(PAINTINGS_POLL_SECONDS, watch.poll_interval_seconds),
            settle_seconds=watch.settle_seconds,
        )

    @staticmethod
    def _queue_empty(journal: Journal) -> bool:
        counts = journal.counts()
        return counts[JobState.QUEUED] == 0 and counts[JobState.RUNNING] == 0

    def _reload_config(self, old: Config, worker: Stylist, intake: Intake) -> Config:
        """SIGHUP: take the new config if it is valid, else keep the old one and say why."""
        try:
            new = load_config(self.config_path, check_machine=True)
        except ConfigError as exc:
            logger.error("config reload refused, keeping the running config:\n{}", exc)
            return old
        fixed = ("inbox", "outbox", "state_dir", "device", "watch", "web", "notify", "queue")
        changed = [name for name in fixed if getattr(new, name) != getattr(old, name)]
        if changed:
            logger.warning(
                "reload: {} change(s) need a restart; keeping the old values", ", ".join(changed)
            )
            new = _with_fields_of(new, old, changed)
            if problems := layout_problems(new):  # checked against the new folders, not these
                logger.error(
                    "config reload refused, keeping the running config: with the old folders, {}",
                    "; ".join(problems),
                )
                return old
        configure_logging(new, verbose=self.verbose)
        worker.config = new
        intake.config = new
        if new.paintings != old.paintings:  # the worker watches the new one too (its setter)
            self._paintings_root = _paintings_root(new)
        logger.info("config reloaded: presets {}", ", ".join(new.presets))
        _log_paintings(old.paintings_seen, new.paintings_seen)
        intake.offer_waiting()  # photos that waited for a painting that is a preset now
        return new

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, lambda signum, frame: self._reload.set())

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags here: logging and the stop itself happen in the main loop.
        self._stop_signals += 1
        if self._stop_signals > 1:  # a second signal: stop now; the job is requeued at start-up
            os._exit(ExitCode.OK)


def _paintings_root(config: Config) -> RootWatch:
    """The paintings folder, where there is one, as it is now."""
    return RootWatch({} if config.paintings is None else {"paintings": config.paintings})


def _log_paintings(old: Sequence[Painting], new: Sequence[Painting]) -> None:
    """A line for each painting whose fate is new: a preset, or why not."""
    for is_problem, line in changes(old, new):
        logger.log("WARNING" if is_problem else "INFO", line)


def _with_fields_of(new: Config, old: Config, names: list[str]) -> Config:
    import dataclasses

    return dataclasses.replace(new, **{name: getattr(old, name) for name in names})


def _lock(folder: Path, field: str) -> int:
    """An exclusive lock: state_dir's on its lock file; the inbox's and the outbox's on the
    folder itself (flock takes a folder's descriptor), so nothing is added to a share that its
    users or a photo library would see."""
    error = StateDirError if field == "state_dir" else StyleboxError
    lock_path = folder / LOCK_NAME if field == "state_dir" else folder
    try:
        if field == "state_dir":
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        else:
            fd = os.open(lock_path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:  # a folder in its place, or left by root for the service user
        raise error(f"{lock_path}: cannot open the lock: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(
            f"{lock_path}: another stylebox daemon uses this {field}"
            + ("" if field == "state_dir" else " (with a state_dir of its own)")
        ) from None
    except OSError:  # a filesystem that locks no folders (some network ones): not a refusal
        if field == "state_dir":
            raise
    return fd
