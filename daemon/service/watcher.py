"""The inbox watcher: which files are new, completely written, and not yet handed over.

Users drop photos into the inbox, often a NAS share, and expect each to be picked up exactly once
and only when whole. Events alone cannot promise that: inotify sees nothing another host writes to
an NFS/SMB share, a folder moved in arrives as one event for the folder, watchdog's threads can die
quietly (a watched folder removed, a share that drops out), and a writer may pause mid-file. So:

- the watchdog callback only records `path -> candidate` under a lock and returns; it never opens,
  stats, decodes or waits, so the observer's dispatcher thread can neither block nor die on a file;
- one settle thread owns everything slow: it stats candidates, asks who writes them (a read
  lease; inotify's close-after-write), feeds each one's `StabilityTracker` (stability.py) and, when
  that asks, runs `is_ready` and takes a digest of sampled blocks. It hands each file over once,
  walks folders that moved in, rescans now and then, and has the observer replaced when it died or
  the inbox became another folder; while the inbox is missing, or a mount left it or came onto
  it, it hands nothing over and `problem()` says why;
- a memo of what was handed over, `path -> (size, mtime_ns)`, makes rescans and stray events
  harmless: only a file that changed, or left and came back, is handed over again; a file handed
  over only because it stayed incomplete that then changes in quarantine is taken back.

Symlinks, FIFOs, sockets and devices are handed over at once and never opened (opening a FIFO would
block this thread); the service decides what to do with them. Whether to poll or trust inotify,
and keeping the observer alive, depend on what the inbox is mounted on: mounts.py.
"""

import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from watchdog.events import (
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from daemon.media.files import sampled_digest
from daemon.outbox import ERROR_SUFFIX
from daemon.service.mounts import (
    InboxObserver,
    Mode,
    choose_mode,
    open_for_writing,
    writers_visible,
)
from daemon.service.stability import (
    STALLED_SECONDS,
    GivenUp,
    Inode,
    Observation,
    Signature,
    StabilityTracker,
    Verdict,
    Writer,
)

log = logger.bind(component="watcher")

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download")
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})  # compared casefolded: Windows wrote them

_HEALTHY_TICKS = 3  # healthy() wants a settle tick within this many tick periods

# Only what can mean "a file appeared or changed". Opened/closed-without-writing events are left
# out on purpose: is_ready, the digest and the lease probe read the file, and those events would
# feed it straight back in.
_EVENT_TYPES = [
    FileCreatedEvent,
    FileModifiedEvent,  # IN_MODIFY: a write or truncate (a writer is at work)
    FileAttribEvent,  # touch, or cp -p setting the mtime after the last write
    FileClosedEvent,  # IN_CLOSE_WRITE: a writer closed it (inotify only; polling has no such event)
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


Version = tuple[int, int, int]  # (st_size, st_mtime_ns, st_ctime_ns)


def _signature(status: os.stat_result) -> Signature:
    """What says a file's bytes changed, as the stability tracker compares them."""
    return (status.st_size, status.st_mtime_ns)


def _version(status: os.stat_result) -> Version:
    """The hand-over memo's view of a file: the ctime too, since `cp -p` keeps size and mtime."""
    return (status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def is_ignored_name(name: str) -> bool:
    """True for names that are never photos: dotfiles (our temps too), Office locks, partials."""
    return (
        name.startswith((".", "~$"))
        or name.lower().endswith(IGNORED_SUFFIXES)
        or name.casefold() in _IGNORED_NAMES
    )


@dataclass
class _Candidate:
    """A path seen in the inbox, not yet handed over; `events` is bumped by every new sighting."""

    stability: StabilityTracker  # the settle thread's alone, like the two flags at the end
    events: int = 0
    written_since_close: bool | None = None  # inotify's word: see _writing_said
    stat_error_logged: bool = False
    held_open: bool = False


class _Recorder(FileSystemEventHandler):
    """The watchdog callback: turns an event into inbox paths and records them, nothing more."""

    def __init__(
        self, record: Callable[[FileSystemEvent, str, Mode], None], watched_root: str, mode: Mode
    ) -> None:
        """`watched_root` is the resolved inbox the observer reports paths under, in `mode`."""
        super().__init__()
        self._record = record
        self._watched_root = watched_root
        self._mode = mode

    def dispatch(self, event: FileSystemEvent) -> None:
        """Record the event; an exception here would kill watchdog's dispatcher thread for good."""
        try:
            self._record(event, self._watched_root, self._mode)
        except Exception:
            log.exception("watcher: could not record {}", event)


class Watcher:
    """Hands each completely written file in the inbox to `on_ready`, once.

    Paths handed over are `inbox / relative path`, with `inbox` exactly as given (not resolved),
    so the caller can take `path.relative_to(inbox)`.
    """

    def __init__(
        self,
        inbox: Path,
        on_ready: Callable[[Path], None],
        *,
        mode: str = "auto",
        poll_interval_seconds: float = 5.0,
        settle_seconds: float = 2.0,
        rescan_interval_seconds: float = 300.0,
        stalled_seconds: float = STALLED_SECONDS,
        is_ready: Callable[[Path], bool] | None = None,
        on_scanned: Callable[[], None] | None = None,
        quarantine_dir: Path | None = None,
        take_back: Callable[[str], Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check the settings and choose the mode now; nothing runs before start().

        `on_scanned` runs after each complete walk of the inbox (on the settle thread, or on
        start()'s caller for the first), when whatever is gone from the inbox is known gone.
        `take_back(name)` moves `quarantine_dir / name` back into the inbox (Outbox.restore).
        """
        if poll_interval_seconds <= 0 or rescan_interval_seconds <= 0:
            raise ValueError("watcher: poll and rescan intervals must be positive")
        StabilityTracker(settle_seconds, stalled_seconds=stalled_seconds)  # checks them now
        self.inbox = inbox
        self.handover_errors = 0  # on_ready calls that raised; each file is retried on a rescan
        self._inbox = os.fspath(inbox)  # keys and handed-over paths are inbox / relative path
        self._on_ready = on_ready
        self._is_ready = is_ready or (lambda _path: True)
        self._on_scanned = on_scanned or (lambda: None)
        self._clock = clock
        self._settle_seconds = settle_seconds
        self._stalled_seconds = stalled_seconds
        self._rescan_interval_seconds = rescan_interval_seconds
        self._quarantine_dir = quarantine_dir
        self._take_back = take_back
        self._tick_seconds = max(0.01, min(0.5, settle_seconds / 4))

        self._lock = threading.Lock()  # guards the four collections below
        self._pending: dict[str, _Candidate] = {}
        # path -> (signature, serial): the serial orders hand-overs against the start of a scan.
        self._handed_over: dict[str, tuple[Version, int]] = {}
        self._handover_serial = 0
        self._folders_to_walk: set[str] = set()
        self._gone_folders: list[str] = []  # deleted or moved away: forget what was handed over

        # The settle thread's alone: files given up on; whether a read lease can tell who writes.
        self._given_up = GivenUp()
        self._leases = False

        self._stopping = threading.Event()
        self._observing = InboxObserver(
            self._inbox,
            choose_mode(inbox, mode),  # type: ignore[arg-type]  # checked there
            lambda root, observer_mode: _Recorder(self._record, root, observer_mode),
            event_filter=_EVENT_TYPES,
            poll_interval_seconds=poll_interval_seconds,
            stopping=self._stopping,
        )
        self._thread: threading.Thread | None = None
        self._last_tick_at = clock()
        self._next_rescan_at = 0.0

    @property
    def mode(self) -> Mode:
        """The observer in use ("poll" once inotify ran out of watches); safe from any thread."""
        return self._observing.mode

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the observer and the settle thread, then queue what is already in the inbox.

        Raises FileNotFoundError when the inbox does not exist (creating it is the service's job)
        and OSError when it cannot be watched at all.
        """
        if self._thread is not None:
            raise RuntimeError("watcher: already started")
        if not os.path.isdir(self._inbox):
            raise FileNotFoundError(errno.ENOENT, "inbox is not a folder", self._inbox)
        self._leases = writers_visible(self.inbox)  # on this thread: it may set SIGIO aside
        self._observing.start()
        log.info("watcher: watching {} ({} mode)", self._inbox, self.mode)
        self._last_tick_at = self._clock()
        self._next_rescan_at = self._clock() + self._rescan_interval_seconds
        self._thread = threading.Thread(target=self._run, name="stylebox-watcher", daemon=True)
        self._thread.start()
        # After the observer: a file written during the scan is then seen by one or the other.
        self.scan()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the settle thread, then the observer; pending candidates are dropped."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("watcher: settle thread still busy after {} s; leaving it", timeout)
        self._observing.stop(timeout)

    def healthy(self) -> bool:
        """True while the settle thread ticks and the observer runs, or waits for the inbox to
        be back: what the systemd watchdog is pinged for (see `problem`)."""
        return self._trouble() is None

    def problem(self) -> str | None:
        """Why files are not handed over, in a line for /healthz: the watcher's own trouble, or
        the inbox missing or its mount not as at the start (waited out; no reason to restart
        the daemon); None while files are."""
        return self._trouble() or self._observing.inbox_problem

    def _trouble(self) -> str | None:
        """What is wrong with the watcher itself: a thread dead or stuck."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return "the inbox watcher is not running"
        if self._clock() - self._last_tick_at >= _HEALTHY_TICKS * self._tick_seconds:
            return "the inbox watcher is stuck"
        if not self._observing.running() and self._observing.inbox_problem is None:
            return f"the inbox watcher's {self.mode} observer is not running"
        return None

    def idle(self) -> bool:
        """True when every file seen so far was handed over or dropped (what --once waits for)."""
        with self._lock:
            return not self._pending and not self._folders_to_walk

    def pending_count(self) -> int:
        """How many files are seen but not yet handed over or dropped."""
        with self._lock:
            return len(self._pending)

    def scan(self) -> int:
        """Walk the whole inbox now and queue every file not handed over as it is; how many new.

        Events can be missed (a share, an inotify queue overflow, a dead observer); this cannot.
        A complete walk also forgets handed-over files that are gone, so the memo cannot grow,
        and then calls `on_scanned` (the service prunes the journal's file memo the same way).
        """
        with self._lock:
            serial_at_start = self._handover_serial
        new, seen, complete = _walk(self._inbox, self._is_handed_over, self._note)
        if complete:
            with self._lock:
                # Only what was handed over before the walk began: a file created behind the walk
                # and handed over during it is not in `seen`, yet still there.
                for key in self._handed_over.keys() - seen:
                    if self._handed_over[key][1] <= serial_at_start:
                        del self._handed_over[key]
            self._on_scanned()
        if new:
            log.debug("watcher: scan found {} new file(s)", new)
        return new

    # -- the event side: record and return ----------------------------------------------------

    def _record(self, event: FileSystemEvent, watched_root: str, mode: Mode) -> None:
        """Apply one watchdog event to the candidates (called on the dispatcher thread)."""
        source = self._inbox_path(os.fsdecode(event.src_path), watched_root)
        if event.event_type in (EVENT_TYPE_DELETED, EVENT_TYPE_MOVED) and source is not None:
            self._forget(source, is_folder=event.is_directory)
        if event.event_type == EVENT_TYPE_DELETED:
            return
        if event.event_type == EVENT_TYPE_MOVED:
            target = self._inbox_path(os.fsdecode(event.dest_path), watched_root)
        else:
            target = source
        if target is None or target == self._inbox or self._is_ignored_path(target):
            return
        if not event.is_directory:
            self._note(target, writing=_writing_said(event, mode))
        elif isinstance(event, DirCreatedEvent | DirMovedEvent):
            # inotify reports nothing inside a folder moved in whole; the settle thread walks it.
            with self._lock:
                self._folders_to_walk.add(target)

    def _inbox_path(self, path: str, watched_root: str) -> str | None:
        """`path` as seen from the inbox as configured (it may be a symlink), or None if outside."""
        if path == watched_root:
            return self._inbox
        if path.startswith(watched_root + os.sep):
            return self._inbox + path[len(watched_root) :]
        return None

    def _is_ignored_path(self, key: str) -> bool:
        """True when any part below the inbox is ignored (files inside a dot-folder, say)."""
        relative = key[len(self._inbox) + 1 :]
        return any(is_ignored_name(part) for part in relative.split(os.sep))

    def _note(self, key: str, *, writing: bool | None = None) -> bool:
        """Make `key` a candidate, or tell its candidate it was seen again; True if new.

        `writing`: True for a write event, False for a close-after-write, None for anything else.
        """
        with self._lock:
            candidate = self._pending.get(key)
            new = candidate is None
            if candidate is None:
                tracker = StabilityTracker(
                    self._settle_seconds, stalled_seconds=self._stalled_seconds
                )
                candidate = self._pending[key] = _Candidate(tracker)
            else:
                candidate.events += 1
            if writing is not None:
                candidate.written_since_close = writing
            return new

    def _forget(self, key: str, *, is_folder: bool) -> None:
        """`key` is gone: drop it before it settles, and let it be handed over if it comes back."""
        with self._lock:
            if is_folder:
                self._gone_folders.append(key)  # the settle thread sorts out what was inside
            else:
                self._pending.pop(key, None)
                self._handed_over.pop(key, None)

    # -- the settle thread ----------------------------------------------------------------------

    def _run(self) -> None:
        """Tick until stopped; an exception is logged and the next tick goes on."""
        while not self._stopping.is_set():
            self._last_tick_at = self._clock()
            try:
                self._tick()
            except Exception:
                log.exception("watcher: settle tick failed; carrying on")
            self._stopping.wait(self._tick_seconds)

    def _tick(self) -> None:
        """One round: mind inbox and observer, walk folders moved in, rescan when due, settle."""
        if self._observing.keep_watching():
            self._leases = self._leases and writers_visible(self.inbox)  # a mount may have come
            self.scan()  # whatever arrived while nobody watched
        self._walk_new_folders()
        if self._clock() >= self._next_rescan_at:
            self._next_rescan_at = self._clock() + self._rescan_interval_seconds
            self.scan()
            self._take_back_changed()
        if self._observing.inbox_problem is None:  # missing, or not the share: hand over nothing
            self._settle()

    def _settle(self) -> None:
        """Look at every candidate once; the heartbeat moves after each, not just once a tick."""
        with self._lock:
            snapshot = [(key, c, c.events) for key, c in self._pending.items()]
        now = self._clock()  # one clock for the pass: files settle in the order they came
        for key, candidate, events in snapshot:
            if self._stopping.is_set():
                return
            self._settle_one(key, candidate, events, now)
            self._last_tick_at = self._clock()

    def _settle_one(self, key: str, candidate: _Candidate, events: int, now: float) -> None:
        """Stat one candidate, let its tracker judge it at the pass's clock, act on the verdict."""
        try:
            status = os.stat(key, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            self._discard(key, candidate, events)
            return
        except OSError as error:  # a share blip (ESTALE, EIO): try again next tick
            if not candidate.stat_error_logged:
                candidate.stat_error_logged = True
                log.warning("watcher: cannot stat {}: {}; will retry", key, error)
            return
        if stat.S_ISDIR(status.st_mode):  # a file replaced by a folder, say: walk it instead
            with self._lock:
                self._folders_to_walk.add(key)
            self._discard(key, candidate, events)
            return
        signature, version = _signature(status), _version(status)
        if self._is_handed_over(key, version):
            self._discard(key, candidate, events)
            return
        tracker = candidate.stability
        held = open_for_writing(key) if self._leases and stat.S_ISREG(status.st_mode) else None
        with self._lock:  # inotify's word, only while inotify is what watches
            writing = candidate.written_since_close if self.mode == "native" else None
        writer = Writer.told(held, writing)
        seen_at = self._clock()
        verdict = tracker.observe(Observation.of(status, writer), now, seen_at=seen_at)
        still = seen_at - tracker.still_since
        if verdict is Verdict.ASK_READY:
            ready = self._check_ready(key)
            verdict = tracker.ready_checked(ready, sample_digest=sampled_digest(Path(key)))
        elif writer is Writer.OPEN and still >= self._stalled_seconds and not candidate.held_open:
            candidate.held_open = True  # said once: a writer may hold its file for hours
            log.warning("watcher: {} still for {:.0f} s but open for writing", key, still)
        if verdict is Verdict.GIVE_UP:
            log.warning("watcher: {} still for {:.0f} s, not whole; handing it over", key, still)
            self._given_up.remember((status.st_dev, status.st_ino), key, signature)
        if verdict in (Verdict.SETTLED, Verdict.GIVE_UP):
            self._hand_over(key, candidate, events, version)

    def _check_ready(self, key: str) -> bool:
        """is_ready, with an exception counting as "not yet" rather than ending the thread."""
        try:
            return bool(self._is_ready(Path(key)))
        except Exception:
            log.exception("watcher: is_ready failed for {}; treating it as not ready", key)
            return False

    def _hand_over(self, key: str, candidate: _Candidate, events: int, version: Version) -> None:
        """Call on_ready once; a failure is logged and counted, and a later rescan retries it."""
        # The memo goes in first, so a delete event during on_ready (the service moving the
        # original away) removes it again instead of being overtaken by it.
        with self._lock:
            self._handover_serial += 1
            self._handed_over[key] = (version, self._handover_serial)
        try:
            self._on_ready(Path(key))
        except Exception:
            self.handover_errors += 1
            log.exception("watcher: on_ready failed for {}; a rescan will offer it again", key)
            with self._lock:
                if self._was_handed_over(key, version):
                    del self._handed_over[key]
        self._discard(key, candidate, events)

    def _is_handed_over(self, key: str, version: Version) -> bool:
        """True if `key` was handed over looking just like this (takes the lock)."""
        with self._lock:
            return self._was_handed_over(key, version)

    def _was_handed_over(self, key: str, version: Version) -> bool:
        """True if `key` was handed over looking just like this; the caller holds the lock."""
        memo = self._handed_over.get(key)
        return memo is not None and memo[0] == version

    def _discard(self, key: str, candidate: _Candidate, events: int) -> None:
        """Remove the candidate, unless an event came in since it was looked at (look again)."""
        with self._lock:
            if self._pending.get(key) is candidate and candidate.events == events:
                del self._pending[key]

    def _walk_new_folders(self) -> None:
        """Forget what was handed over under folders that left; queue what folders brought in."""
        with self._lock:
            gone, self._gone_folders = self._gone_folders, []
            if gone:
                prefixes = tuple(folder + os.sep for folder in gone)
                for key in [k for k in self._handed_over if k.startswith(prefixes)]:
                    del self._handed_over[key]
            folders = list(self._folders_to_walk)
        for folder in folders:
            _walk(folder, self._is_handed_over, self._note)
            with self._lock:
                self._folders_to_walk.discard(folder)

    def _take_back_changed(self) -> None:
        """Move back into the inbox each given-up file whose bytes changed in the quarantine
        folder since: its writer went on after all."""
        if not self._given_up or self._quarantine_dir is None or self._take_back is None:
            return
        quarantined = _files_in(self._quarantine_dir)
        if quarantined is None:
            return
        paths = self._given_up.paths()
        in_inbox = {inode for inode, path in paths.items() if _inode(path) == inode}
        for inode, name in self._given_up.changed(quarantined, in_inbox):
            try:
                target = self._take_back(name)
            except (OSError, ValueError) as error:
                log.warning("watcher: cannot move {} back into the inbox: {}", name, error)
                continue
            self._given_up.forget(inode)
            log.warning("watcher: {} changed in quarantine (its writer went on); moved back", name)
            self._note(os.fspath(target))


def _writing_said(event: FileSystemEvent, mode: Mode) -> bool | None:
    """inotify's word on a file's writer: True for a write, False for a close after writing, None
    for other events, and for a poller's (its "modified" is a changed mtime, not a write)."""
    if mode != "native" or not isinstance(event, FileModifiedEvent | FileClosedEvent):
        return None
    return isinstance(event, FileModifiedEvent)


def _inode(path: str) -> Inode | None:
    """Which file is at `path` now (not followed), None when none."""
    try:
        status = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _files_in(folder: Path) -> dict[Inode, tuple[str, Signature]] | None:
    """The photos in the quarantine folder (not their error files): inode -> (name, signature);
    None when it cannot be listed (an empty dict when it is not there yet)."""
    found: dict[Inode, tuple[str, Signature]] = {}
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name.startswith(".") or entry.name.endswith(ERROR_SUFFIX):
                    continue
                status = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(status.st_mode):
                    found[(status.st_dev, status.st_ino)] = (entry.name, _signature(status))
    except FileNotFoundError:
        return found
    except OSError as error:
        log.warning("watcher: cannot list {}: {}", folder, error)
        return None
    return found


def _walk(
    top: str, handed_over: Callable[[str, Version], bool], note: Callable[[str], bool]
) -> tuple[int, set[str], bool]:
    """Queue every unignored entry below `top` not handed over as it is (`note`); (new, seen,
    walk complete).

    Symlinks are entries, never followed: a link to / must not make us walk the machine.
    """
    new, complete = 0, True
    seen: set[str] = set()
    folders = [top]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            complete = complete and folder != top  # a subfolder gone meanwhile is fine
            continue
        except OSError as error:
            log.warning("watcher: cannot list {}: {}; the next scan tries again", folder, error)
            complete = False
            continue
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                    continue
                version: Version | None = _version(entry.stat(follow_symlinks=False))
            except OSError:
                version = None  # the settle thread will find out
            seen.add(entry.path)
            if version is not None and handed_over(entry.path, version):
                continue
            if note(entry.path):
                new += 1
    return new, seen, complete
