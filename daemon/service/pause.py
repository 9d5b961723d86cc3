"""Pausing the worker: a file in state_dir, so that every process (the web page, `stylebox
status`, a user's `touch`) sees one truth, and a pause outlasts a restart as users expect of it."""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger

from daemon.config import Config
from daemon.outbox import atomic_write

PAUSE_NAME = "paused"


def is_paused(config: Config) -> bool:
    """Whether the worker is to take no new job (the one running finishes)."""
    return (config.state_dir / PAUSE_NAME).exists()


def set_paused(config: Config, paused: bool) -> None:
    """Pause (the file says since when) or resume."""
    path = config.state_dir / PAUSE_NAME
    if not paused:
        path.unlink(missing_ok=True)
    elif not path.exists():
        stamp = time.strftime("%Y-%m-%d %H:%M:%S").encode()
        atomic_write(path, lambda file: file.write(b"paused at " + stamp + b"\n"), replace=True)


class PauseWatch:
    """Whether a pause holds the jobs back, saying so once when it begins and once when it
    ends (in the log and the service's status line)."""

    def __init__(self, on_status: Callable[[str], None], *, held: str) -> None:
        self.on_status = on_status
        self.held = held  # what a pause holds back, for the log line
        self._paused = False

    def holds(self, config: Config) -> bool:
        paused = is_paused(config)
        if paused != self._paused:
            self._paused = paused
            logger.info(f"paused: {self.held} until resumed" if paused else "resumed")
            self.on_status("paused" if paused else "idle")
        return paused
