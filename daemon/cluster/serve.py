"""The two entry points: what takes the jobs in `stylebox run` (the local worker, or the
coordinator when queue.url is set), and `stylebox worker` on a GPU host."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from loguru import logger

from daemon.cluster.coordinator import Coordinator
from daemon.cluster.host import Host
from daemon.config import Config, load_config
from daemon.engine import device
from daemon.errors import ConfigError, ExitCode
from daemon.service.journal import Journal
from daemon.service.logs import configure_logging
from daemon.service.loop import STOP_GRACE_SECONDS, Stylist
from daemon.service.metrics import Metrics
from daemon.service.sd_notify import Notifier
from daemon.service.worker import Worker

WATCHDOG_SECONDS = 1.0


def stylist_for(
    config: Config, journal: Journal, models: device.Models, *, metrics: Metrics, on_status
) -> Stylist:
    """The Worker alone, or the coordinator of worker hosts with queue.url."""
    kind = Coordinator if config.queue.url is not None else Worker
    return kind(config, journal, models, metrics=metrics, on_status=on_status)


def devices_for(name: str) -> list[str]:
    """One device per worker thread: `auto` means every CUDA device (else the CPU)."""
    import torch

    if name == "auto" and torch.cuda.is_available():
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [str(device.resolve_device(name))]


def run_worker(config_path: Path, *, verbose: bool = False) -> int:
    """`stylebox worker`: one thread per device, each with its model, until SIGTERM; SIGHUP
    takes a changed config's presets for the next job; a device that cannot be used again ends
    it with exit code 1 (systemd restarts it)."""
    stop, reload = threading.Event(), threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())
    config = load_config(config_path)
    if config.queue.url is None:
        raise ConfigError(
            f"{config_path}: queue.url: required for `stylebox worker` (the coordinator's "
            "Redis, such as redis://nas.local:6379/0)"
        )
    # stderr only (journald): the outbox's log file is the coordinator's.
    configure_logging(config, verbose=verbose, to_file=False)
    models = [device.Models(device.resolve_device(name)) for name in devices_for(config.device)]
    first = next(iter(config.presets.values()))
    for each in models:
        logger.info("loading VGG-19 on {}; arithmetic {}", each.device, each.precision)
        each.for_settings(first.settings)
    host = Host(config, models)
    notifier = Notifier()
    host.start()
    notifier.ready(f"taking jobs from {config.queue.shown_url}")
    try:
        while not stop.wait(WATCHDOG_SECONDS):
            if reload.is_set():
                reload.clear()
                host.config = _reloaded(config_path, host.config)
            if host.problem() is not None:
                logger.critical("{}; exiting so the service restarts", host.problem())
                return ExitCode.FAILURE
            notifier.watchdog()
        return ExitCode.OK
    finally:
        notifier.stopping()
        logger.info("stopping")
        host.stop(STOP_GRACE_SECONDS)


def _reloaded(config_path: Path, old: Config) -> Config:
    """The new config if it is valid and keeps the queue, the device and the folders (those
    need a restart), else the old one, with the reason logged."""
    try:
        new = load_config(config_path)
    except ConfigError as exc:
        logger.error("config reload refused, keeping the running config:\n{}", exc)
        return old
    fixed = [
        name
        for name in ("queue", "device", "inbox", "outbox")
        if getattr(new, name) != getattr(old, name)
    ]
    if fixed:
        logger.error("config reload refused: {} change(s) need a restart", ", ".join(fixed))
        return old
    logger.info("config reloaded: presets {}", ", ".join(new.presets))
    return new
