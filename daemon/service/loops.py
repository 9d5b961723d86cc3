"""The one shape of a background loop: a named thread that does a step, waits to be woken or
for a while when the step found nothing to do, beats a heartbeat for the health check, and ends
on request. The worker, the dispatcher and a worker host's roster are such loops."""

from __future__ import annotations

import threading
import time

from loguru import logger

from daemon.jobs.outcome import StopRequested

HEARTBEAT_STALE_SECONDS = 120.0  # one evaluation never takes this long; a stuck loop does
IDLE_WAIT_SECONDS = 1.0


def stalled(name: str, thread: threading.Thread, heartbeat: float) -> str | None:
    """Why a loop's thread is not healthy (ended, or no beat for HEARTBEAT_STALE_SECONDS), in a
    line; None while it is."""
    if not thread.is_alive():
        return f"{name} is not running"
    quiet = time.monotonic() - heartbeat
    if quiet >= HEARTBEAT_STALE_SECONDS:
        return f"{name} has made no progress for {quiet:.0f} s"
    return None


class Loop:
    """Subclasses write `step`; what fails in it ends the loop, kept as `fatal` for the daemon
    to exit non-zero (a loop's own faults are caught inside its step)."""

    name = "loop"

    def __init__(self) -> None:
        self.fatal: BaseException | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def step(self) -> float:
        """Do one round of work; return how long to wait before the next (0: at once)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Something arrived: end the current wait."""
        self._wake.set()

    def request_stop(self) -> None:
        """End after the current step (a step may also watch `stopping`)."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """A stop was asked for."""
        return self._stop.is_set()

    def beat(self) -> None:
        """Say the loop is making progress (a long step beats as it goes)."""
        self._heartbeat = time.monotonic()

    def problem(self) -> str | None:
        """Why the loop is not healthy, in a line; None while it is."""
        if self.fatal is not None:
            return f"the {self.name} stopped: {self.fatal}"
        return stalled(f"the {self.name}", self._thread, self._heartbeat)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.beat()
                wait = self.step()
                if wait > 0:
                    self._wake.wait(wait)
                    self._wake.clear()
        except StopRequested:
            return
        except Exception as exc:
            self.ended_by(exc)

    def ended_by(self, exc: Exception) -> None:
        """The loop cannot go on: say so and keep the cause for the daemon's exit."""
        logger.opt(exception=exc).critical("the {} cannot go on", self.name)
        self.fatal = exc
