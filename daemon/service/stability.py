"""Is this file done? Decided from what the watcher observed and when, and nothing else.

A photo arrives over seconds or hours: a writer pauses mid-file, an SMB client sets the final size
first and fills the file in afterwards (a preallocated file: its size never moves, its tail is
zeros until the end), a copy stalls with the network, and a share sends no event at all. Size and
mtime held still for `settle_seconds` start the judgement; they do not end it. The tracker weighs
every signal the platform gives, as the watcher gathers them:

- who writes it (`Writer`): on a local filesystem the kernel says whether any process has the file
  open for writing, and inotify says when the last writer closed it after writing. A file held
  open for writing is never handed over, however long it is still: a Windows client copying
  through smbd keeps its handle to the end;
- its content: where nothing says the writer is gone (a share: no lease, no events), a digest of
  sampled blocks must come out the same on two looks a settle period apart, size and mtime
  unchanged between, since a share's size and mtime may lag behind its bytes;
- its format's end (the readiness check, `media.decode.is_whole`: a JPEG's EOI, a PNG's IEND, a
  decode), asked after each still period. A file that is not whole waits. It is handed over anyway
  (GIVE_UP: the worker then quarantines it, naming what is wrong) only once nothing more can come:
  `ready_checks` looks after its writer is known to have gone, else after `stalled_seconds` of
  stillness. A copy that stalls is therefore not quarantined while it may resume.

The tracker holds that state machine apart from the watcher, in the manner of paperless-ngx's
FileStabilityTracker: no threads, locks, clock or filesystem of its own. The caller stats the file
and finds out who writes it, passes an `Observation` and the time, runs the readiness check and
takes the sampled digest when asked to, and acts on the `Verdict`. One tracker follows one
candidate, so a file that leaves and comes back starts afresh. `GivenUp` remembers the files
handed over only because they never became whole, in case one changes after all.
"""

import enum
import os
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from daemon.config.sections import WatchSettings

READY_CHECKS = 5  # looks a still file whose writer has gone may fail before it goes anyway
# Stillness after which a file nobody is known to write goes anyway: the config's default.
STALLED_SECONDS: float = WatchSettings.model_fields["stalled_seconds"].default

Signature: TypeAlias = tuple[int, int]  # (st_size, st_mtime_ns): what says a file changed
Inode: TypeAlias = tuple[int, int]  # (st_dev, st_ino): which file, wherever it is moved


class Writer(enum.Enum):
    """Who may still be writing the file, as far as the platform tells."""

    UNKNOWN = "unknown"  # nothing tells: a share (no lease, no events), or no event since a scan
    OPEN = "open"  # some process has it open for writing now: a read lease was refused (EAGAIN)
    WRITING = "writing"  # inotify: written to since the last close after writing (IN_CLOSE_WRITE)
    CLOSED = "closed"  # a read lease was granted, or the writer's close came after its last write

    @classmethod
    def told(cls, open_for_writing: bool | None, written_since_close: bool | None) -> "Writer":
        """The writer as the kernel tells it (a read lease: None where it will not say), else as
        inotify's events do (None: no event said)."""
        if open_for_writing is not None:
            return cls.OPEN if open_for_writing else cls.CLOSED
        if written_since_close is None:
            return cls.UNKNOWN
        return cls.WRITING if written_since_close else cls.CLOSED


@dataclass(frozen=True)
class Observation:
    """What one look at a path showed; two looks that compare equal mean "nothing changed".

    `writer` takes no part in the comparison: a writer closing the file does not change its
    bytes, and must not restart the settle period it ends.
    """

    size_bytes: int
    mtime_ns: int
    is_regular_file: bool = True
    writer: Writer = field(default=Writer.UNKNOWN, compare=False)

    @classmethod
    def of(cls, status: os.stat_result, writer: Writer = Writer.UNKNOWN) -> "Observation":
        """The observation an lstat result makes (the caller did the stat)."""
        return cls(status.st_size, status.st_mtime_ns, stat.S_ISREG(status.st_mode), writer)


class Verdict(enum.Enum):
    """What the caller does next with the file."""

    WAIT = "wait"  # changed, written, or not still for long enough yet: look again later
    ASK_READY = "ask_ready"  # still long enough: run the readiness check and take the digest
    SETTLED = "settled"  # hand it over
    GIVE_UP = "give_up"  # still, nobody writes it, but never ready: hand it over anyway


class StabilityTracker:
    """Follows one candidate's observations over time and says when it is settled."""

    def __init__(
        self,
        settle_seconds: float,
        *,
        stalled_seconds: float = STALLED_SECONDS,
        ready_checks: int = READY_CHECKS,
    ) -> None:
        """`settle_seconds` of stillness before a look; GIVE_UP after `ready_checks` failed
        looks once the writer has gone, or `stalled_seconds` still when nothing says so."""
        if settle_seconds < 0 or ready_checks < 1 or stalled_seconds < settle_seconds:
            raise ValueError(
                "stability: settle_seconds not negative, stalled_seconds at least settle_seconds, "
                "ready_checks at least 1"
            )
        self.settle_seconds = settle_seconds
        self.stalled_seconds = stalled_seconds
        self.ready_checks = ready_checks
        self._last: Observation | None = None
        self._writer = Writer.UNKNOWN  # as the last observation said
        self._now = 0.0  # the `now` of the last observation, for ready_checked
        self._seen_at = 0.0  # when that observation was actually taken (at or after `now`)
        self._still_since = 0.0  # the `now` at which the content was last seen to change
        self._next_look_at = 0.0
        self._first_look_at: float | None = None  # the first ASK_READY since the last change
        self._digest: bytes | None = None  # the sampled digest taken then
        self._failed_ready_checks = 0
        self._asked = False

    @property
    def failed_ready_checks(self) -> int:
        """How many readiness checks said "not yet" since the file last changed."""
        return self._failed_ready_checks

    @property
    def still_since(self) -> float:
        """The clock time from which the file has not changed (as far as seen)."""
        return self._still_since

    def observe(
        self, observation: Observation, now: float, *, seen_at: float | None = None
    ) -> Verdict:
        """Take one look, judged at clock time `now`; WAIT, ASK_READY or (not a regular file)
        SETTLED. The first look always waits: one observation cannot show that nothing changes.

        `seen_at` (default `now`) is when the look was actually taken. A caller that looks at many
        files in one pass judges them all at the pass's start (`now`) and stamps each change at
        its own `seen_at`: files still since earlier then settle no later than files still since
        later, so they are handed over in the order they stopped changing, and stillness is never
        overstated (each wait is measured from the later stamp to the earlier clock).
        """
        self._asked = False
        self._now = now
        self._seen_at = now if seen_at is None else max(now, seen_at)
        if not observation.is_regular_file:
            # Symlinks, FIFOs, sockets, devices are not written over time, and asking whether a
            # FIFO is ready would open it and hang the caller.
            return Verdict.SETTLED
        self._writer = observation.writer
        if observation != self._last:
            self._last = observation
            self._changed(self._seen_at)
            return Verdict.WAIT
        if observation.writer is Writer.OPEN:
            return Verdict.WAIT  # the writer has its handle still: it may go on at any moment
        stalled = now - self._still_since >= self.stalled_seconds
        if observation.writer is Writer.WRITING and not stalled:
            # Written since the last close event. Bounded by stalled_seconds, unlike OPEN: an
            # event lost to a full inotify queue must not hold a file for ever.
            return Verdict.WAIT
        if now < self._next_look_at:  # never later than stalled_seconds: see ready_checked
            return Verdict.WAIT
        self._asked = True
        return Verdict.ASK_READY

    def ready_checked(self, ready: bool, *, sample_digest: bytes | None = None) -> Verdict:
        """The answer to ASK_READY: whether the file is whole, and the digest of its sampled
        blocks (None when not taken or unreadable); SETTLED, WAIT or GIVE_UP."""
        if not self._asked:
            raise RuntimeError("stability: ready_checked without a preceding ASK_READY")
        self._asked = False
        now, seen_at = self._now, self._seen_at
        if None not in (sample_digest, self._digest) and sample_digest != self._digest:
            # The bytes changed though size and mtime did not: a share's cached attributes, or a
            # writer that sets the mtime back. The same as any other change.
            self._changed(seen_at)
            self._first_look_at, self._digest = seen_at, sample_digest
            return Verdict.WAIT
        if self._first_look_at is None:
            self._first_look_at, self._digest = seen_at, sample_digest
        # Without word that the writer has gone, two looks a settle period apart must agree.
        confirmed = (
            self._writer is Writer.CLOSED or now - self._first_look_at >= self.settle_seconds
        )
        stalled = now - self._still_since >= self.stalled_seconds
        if ready and confirmed:
            return Verdict.SETTLED
        if ready:
            self._next_look_at = self._first_look_at + self.settle_seconds
            return Verdict.WAIT
        self._failed_ready_checks += 1
        writer_gone = self._writer is Writer.CLOSED
        if stalled or (writer_gone and self._failed_ready_checks >= self.ready_checks):
            return Verdict.GIVE_UP
        # Each "not yet" after the first few waits one settle period longer, so that a copy
        # stalled for an hour costs tens of decodes, not thousands; the last look falls at
        # stalled_seconds.
        periods = max(1, self._failed_ready_checks - self.ready_checks + 1)
        self._next_look_at = min(
            now + periods * self.settle_seconds, self._still_since + self.stalled_seconds
        )
        return Verdict.WAIT

    def _changed(self, now: float) -> None:
        """The content changed at `now`: the settle period, the looks and the count start again."""
        self._still_since = now
        self._next_look_at = now + self.settle_seconds
        self._first_look_at = None
        self._digest = None
        self._failed_ready_checks = 0


class GivenUp:
    """Files handed over only because they stayed incomplete (GIVE_UP), by inode, as they were.

    The service quarantines such a file. If its bytes change there afterwards, its writer went on
    (a share's server moved the file under a writer that kept its handle): it was not done after
    all, and goes back into the inbox. The caller lists the quarantine folder and the inbox.
    """

    def __init__(self) -> None:
        self._files: dict[Inode, tuple[str, Signature]] = {}  # inode -> (inbox path, signature)
        self._misses: dict[Inode, int] = {}

    def __len__(self) -> int:
        """How many files are remembered."""
        return len(self._files)

    def remember(self, inode: Inode, path: str, signature: Signature) -> None:
        """`path`, this inode, was handed over looking like `signature` without being whole."""
        self._files[inode] = (path, signature)
        self._misses.pop(inode, None)

    def forget(self, inode: Inode) -> None:
        """Stop following `inode` (taken back into the inbox)."""
        self._files.pop(inode, None)
        self._misses.pop(inode, None)

    def paths(self) -> dict[Inode, str]:
        """Where each remembered file was in the inbox."""
        return {inode: path for inode, (path, _) in self._files.items()}

    def changed(
        self, quarantined: Mapping[Inode, tuple[str, Signature]], in_inbox: Collection[Inode]
    ) -> list[tuple[Inode, str]]:
        """(inode, name) of each remembered file found among `quarantined` (inode -> name and
        signature there) with other bytes than it had. One found in neither folder on two calls
        running is forgotten: stylised after all, deleted, or moved by hand."""
        found = []
        for inode, (_, signature) in list(self._files.items()):
            there = quarantined.get(inode)
            if there is not None:
                self._misses.pop(inode, None)
                if there[1] != signature:
                    found.append((inode, there[0]))
                continue
            missed = 0 if inode in in_inbox else self._misses.get(inode, 0) + 1
            self._misses[inode] = missed
            if missed >= 2:
                self.forget(inode)
        return found
