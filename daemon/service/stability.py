"""Is this file done? Decided from what the watcher observed and when, and nothing else.

A photo copied onto a share arrives over seconds, a writer may pause mid-file, and no event says
"closed for good" (a share sends none at all). So the watcher looks at each candidate now and then
and a file counts as written once what it sees has held still for `settle_seconds`. Still is not
proof: the service's readiness check (a cheap decode) has the last word, and each "not yet" buys
one more settle period, up to `ready_checks` of them, after which the file is handed over anyway,
since a truncated photo never becomes whole and the worker reports it.

The tracker holds that state machine apart from the watcher, in the manner of paperless-ngx's
FileStabilityTracker: no threads, locks, clock or filesystem of its own. The caller stats the file,
passes an `Observation` and the time, runs the readiness check when asked to, and acts on the
`Verdict`. One tracker follows one candidate, so a file that leaves and comes back starts afresh.
To judge a new kind of writer (a preallocating SMB client, say), add what reveals it to
`Observation` and `Observation.of`; equality of observations is what "held still" means.
"""

import enum
import os
import stat
from dataclasses import dataclass

READY_CHECKS = 5  # settle periods a still file may fail the readiness check before it goes anyway


@dataclass(frozen=True)
class Observation:
    """What one look at a path showed; two looks that compare equal mean "nothing changed"."""

    size_bytes: int
    mtime_ns: int
    is_regular_file: bool = True

    @classmethod
    def of(cls, status: os.stat_result) -> "Observation":
        """The observation an lstat result makes (the caller did the stat)."""
        return cls(status.st_size, status.st_mtime_ns, stat.S_ISREG(status.st_mode))


class Verdict(enum.Enum):
    """What the caller does next with the file."""

    WAIT = "wait"  # changed, or not still for long enough yet: look again later
    ASK_READY = "ask_ready"  # still long enough: run the readiness check, report it back
    SETTLED = "settled"  # hand it over
    GIVE_UP = "give_up"  # still, but never ready: hand it over anyway (and say so)


class StabilityTracker:
    """Follows one candidate's observations over time and says when it is settled."""

    def __init__(self, settle_seconds: float, *, ready_checks: int = READY_CHECKS) -> None:
        """`settle_seconds` of stillness before each readiness check, at most `ready_checks`."""
        if settle_seconds < 0 or ready_checks < 1:
            raise ValueError("stability: settle_seconds not negative, ready_checks at least 1")
        self.settle_seconds = settle_seconds
        self.ready_checks = ready_checks
        self._last: Observation | None = None
        self._still_since = 0.0  # the `now` at which `_last` was first observed
        self._failed_ready_checks = 0
        self._asked = False

    @property
    def failed_ready_checks(self) -> int:
        """How many readiness checks said "not yet" since the file last changed."""
        return self._failed_ready_checks

    def observe(self, observation: Observation, now: float) -> Verdict:
        """Take one look, made at clock time `now`; WAIT, ASK_READY or (not a regular file) SETTLED.

        The first look always waits: one observation cannot show that nothing changes.
        """
        self._asked = False
        if not observation.is_regular_file:
            # Symlinks, FIFOs, sockets, devices are not written over time, and asking whether a
            # FIFO is ready would open it and hang the caller.
            return Verdict.SETTLED
        if observation != self._last:
            self._last, self._still_since = observation, now
            self._failed_ready_checks = 0
            return Verdict.WAIT
        periods = self._failed_ready_checks + 1  # each "not yet" buys one more settle period
        if now - self._still_since < periods * self.settle_seconds:
            return Verdict.WAIT
        self._asked = True
        return Verdict.ASK_READY

    def ready_checked(self, ready: bool) -> Verdict:
        """The readiness check's answer to ASK_READY; SETTLED, WAIT, or GIVE_UP at the last."""
        if not self._asked:
            raise RuntimeError("stability: ready_checked without a preceding ASK_READY")
        self._asked = False
        if ready:
            return Verdict.SETTLED
        self._failed_ready_checks += 1
        if self._failed_ready_checks >= self.ready_checks:
            return Verdict.GIVE_UP
        return Verdict.WAIT
