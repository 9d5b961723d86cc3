"""Waiting out a fault of the environment: the outbox or state_dir full, read-only or failing,
a share unmounted or remounted. Such a fault is never a verdict on a photo: the job that met it
goes back to the queue unattempted, no event is sent, the worker takes no new job, `/healthz`
answers 503 with the reason, and a probe (the roots as they were, room on both disks, a small
write that is synced and removed) lets work go on by itself once the cause is gone."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from daemon.config import Config
from daemon.service.roots import RootWatch, identity, missing

PROBE_SECONDS = 10.0  # how often a fault is probed for its end; well within a minute
# Less room than this on the outbox or state_dir is not "fixed" yet: a result and its sidecar,
# or the journal's next pages, would fail again at once. A small filesystem needs an eighth of
# its size free instead.
ROOM_BYTES = 16 * 2**20
PROBE_NAME = ".stylebox-probe"


def short_of_room(folder: Path) -> int | None:
    """The room left on `folder`'s filesystem when it is too little to go on with, else None."""
    stats = os.statvfs(folder)
    room = stats.f_bavail * stats.f_frsize
    return room if room < min(ROOM_BYTES, stats.f_blocks * stats.f_frsize // 8) else None


def shown_bytes(count: int) -> str:
    """A size as a user reads it in a health line."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


WRITABLE = ("outbox", "state_dir")  # the daemon's roots that must take writes


def roots_of(config: Config) -> dict[str, Path]:
    """The daemon's three roots by setting name."""
    return {"inbox": config.inbox, "outbox": config.outbox, "state_dir": config.state_dir}


def watched_of(config: Config) -> dict[str, Path]:
    """The folders whose going away holds work: the roots, and the paintings folder where one
    is set. Its share gone, a reload would find it empty and take its presets away, and the
    photos queued for them would be quarantined when work went on, a verdict for a fault of
    the environment (the loop puts such a reload off: service.loop)."""
    roots = roots_of(config)
    return roots if config.paintings is None else {**roots, "paintings": config.paintings}


def look(roots: dict[str, Path], writable: tuple[str, ...] = WRITABLE) -> str | None:
    """What would hold work now, seen from any process (`stylebox status`): a root missing, or
    one that must take writes but is read-only or nearly full; None when none is."""
    for field, folder in roots.items():
        if identity(folder) is None:
            return missing(field, folder)
    for field in writable:
        folder = roots[field]
        try:
            full = _full(field, folder)
        except OSError as exc:
            return f"{field} {folder}: {exc.strerror or exc}"
        if not os.access(folder, os.W_OK):
            return f"{field} {folder} cannot be written (read-only?)"
        if full is not None:
            return full
    return None


def _full(field: str, folder: Path) -> str | None:
    """The line that says the folder is short of room ("outbox /srv/out full: 12.0 MB free"),
    else None; OSError when its filesystem cannot be asked."""
    room = short_of_room(folder)
    return None if room is None else f"{field} {folder} full: {shown_bytes(room)} free"


class EnvironmentWatch:
    """What holds work back now, if anything: a root gone or remounted (always checked), or a
    fault a job met (`fault`), until a probe finds the outbox and state_dir usable again."""

    def __init__(
        self,
        roots: dict[str, Path],
        writable: tuple[str, ...],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`roots`: the folders by setting name, as they are at the start; `writable`: those
        of them that must take writes (the outbox; state_dir where the journal is)."""
        self.roots = RootWatch(roots)
        self.writable = {field: roots[field] for field in writable}
        self.clock = clock
        self._fault: str | None = None
        self._probed_at = 0.0
        self._said: str | None = None  # the hold last logged, so each is said once

    def rewatch(self, roots: dict[str, Path]) -> None:
        """Watch these folders from now on, as they are now (a reload named other ones)."""
        self.roots = RootWatch(roots)

    def fault(self, reason: str) -> None:
        """A job met a fault of the environment: hold work until a probe passes."""
        self._fault = self._described(reason)
        self._probed_at = self.clock()
        self._said_once(self._fault)

    def problem(self) -> str | None:
        """Why work waits, in a line; None once nothing holds it (a held fault is probed every
        PROBE_SECONDS)."""
        held = self.roots.problem()
        due = self.clock() - self._probed_at >= PROBE_SECONDS
        if held is None and self._fault is not None and due:
            self._probed_at = self.clock()
            self._fault = self._probe()
        held = held or self._fault
        self._said_once(held)
        return held

    @property
    def holding(self) -> str | None:
        """What held work at the last look, without looking again (for readers on other
        threads: the page, `status`)."""
        return self._said

    def _probe(self) -> str | None:
        """Whether the outbox and state_dir take a small synced write, with room to spare;
        the fault that remains, if any."""
        for field, folder in self.writable.items():
            try:
                if (full := _full(field, folder)) is not None:
                    return full
                path = folder / PROBE_NAME
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, b"stylebox\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                    path.unlink(missing_ok=True)
            except OSError as exc:
                return f"{field} {folder}: {exc.strerror or exc}"
        return None

    def _described(self, reason: str) -> str:
        """The fault as a user reads it: with the room left where that is the matter."""
        for field, folder in self.writable.items():
            try:
                full = _full(field, folder)
            except OSError:
                continue
            if full is not None:
                return f"{full} ({reason})"
        return reason

    def _said_once(self, held: str | None) -> None:
        """Log when work starts waiting and when it goes on (not each probe's new figure)."""
        if (held is None) == (self._said is None):
            return
        if held is not None:
            logger.warning("work waits: {}; it goes on by itself once that is fixed", held)
        else:
            logger.info("work goes on: {} is fixed", self._said)
        self._said = held
