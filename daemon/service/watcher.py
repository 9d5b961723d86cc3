"""The inbox watcher: which files are new, completely written, and not yet handed over.

Users drop photos into the inbox, often a NAS share, and expect each to be picked up exactly once
and only when whole. Events alone cannot promise that: inotify sees nothing another host writes to
an NFS/SMB share, a folder moved in arrives as one event for the folder, watchdog's threads can die
quietly (a watched folder removed, a share that drops out), and a writer may pause mid-file. So:

- the watchdog callback only records `path -> candidate` under a lock and returns; it never opens,
  stats, decodes or waits, so the observer's dispatcher thread can neither block nor die on a file;
- one settle thread owns everything slow: it stats candidates until (size, mtime_ns) has held still
  for `settle_seconds` and `is_ready` agrees, hands each over once, walks folders that moved in,
  rescans the whole inbox now and then, and restarts the observer when any of its threads died;
- a memo of what was handed over, `path -> (size, mtime_ns)`, makes rescans and stray events
  harmless: only a file that changed, or left and came back, is handed over again.

Symlinks, FIFOs, sockets and devices are handed over at once and never opened (opening a FIFO would
block this thread); the service decides what to do with them.
"""

import errno
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

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
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

Mode: TypeAlias = Literal["native", "poll"]

log = logger.bind(component="watcher")

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download")
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})  # compared casefolded: Windows wrote them

# Filesystems where inotify misses writes made by other hosts (or by the host, for VM shares).
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "fuse",
        "ceph",
        "glusterfs",
        "davfs",
        "afs",
        "virtiofs",
        "vboxsf",
    }
)

_READY_CHECKS = 5  # settle periods a still file may fail is_ready before it is handed over anyway
_HEALTHY_TICKS = 3  # healthy() wants a settle tick within this many tick periods
_INOTIFY_LIMITS = frozenset({errno.ENOSPC, errno.EMFILE})  # watch or instance limit reached
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")  # /proc/self/mounts writes " " as \040, and so on

# Only what can mean "a file appeared or changed". Opened/closed-without-writing events are left
# out on purpose: is_ready reads the file, and those events would feed it straight back in.
_EVENT_TYPES = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,  # touch, or cp -p setting the mtime after the last write
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]

Signature: TypeAlias = tuple[int, int]  # (st_size, st_mtime_ns)


def is_ignored_name(name: str) -> bool:
    """True for names that are never photos: dotfiles (our temps too), Office locks, partials."""
    return (
        name.startswith((".", "~$"))
        or name.lower().endswith(IGNORED_SUFFIXES)
        or name.casefold() in _IGNORED_NAMES
    )


def fs_type_for(path: str | os.PathLike[str], mounts_text: str) -> str:
    """The type of the filesystem holding `path`, from /proc/self/mounts text ("" when none fits).

    The longest mount point containing `path` wins; of equal ones the last, which is mounted over
    the others. `path` should already be resolved: a symlink may lead onto another mount.
    """
    target = os.fspath(path)
    best_length, best_type = -1, ""
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = _MOUNT_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), fields[1])
        prefix = mount_point.rstrip("/") + "/"
        inside = target == mount_point or target.startswith(prefix) or mount_point == "/"
        if inside and len(mount_point) >= best_length:
            best_length, best_type = len(mount_point), fields[2]
    return best_type


def is_network_fs(fs_type: str) -> bool:
    """True where inotify cannot be trusted to see every write, so the inbox must be polled."""
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse.")


def choose_mode(inbox: Path, requested: Literal["auto", "native", "poll"]) -> Mode:
    """The observer to use: `requested`, or for "auto" polling on network filesystems."""
    if requested in ("native", "poll"):
        return requested
    if requested != "auto":
        raise ValueError(f"watch mode {requested!r}: expected auto, native or poll")
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return "native"  # no /proc (macOS, BSD): their native observers are all we can judge
    return "poll" if is_network_fs(fs_type_for(inbox.resolve(), mounts)) else "native"


@dataclass
class _Candidate:
    """A path seen in the inbox, not yet handed over; `events` is bumped by every new sighting."""

    events: int = 0
    signature: Signature | None = None  # as last stat'ed by the settle thread
    stable_since: float = 0.0  # clock time the signature was first seen
    failed_ready_checks: int = 0
    stat_error_logged: bool = False


class _Recorder(FileSystemEventHandler):
    """The watchdog callback: turns an event into inbox paths and records them, nothing more."""

    def __init__(self, watcher: "Watcher", watched_root: str) -> None:
        """`watched_root` is the resolved inbox the observer reports paths under."""
        super().__init__()
        self._watcher = watcher
        self._watched_root = watched_root

    def dispatch(self, event: FileSystemEvent) -> None:
        """Record the event; an exception here would kill watchdog's dispatcher thread for good."""
        try:
            self._watcher._record(event, self._watched_root)
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
        is_ready: Callable[[Path], bool] | None = None,
        on_scanned: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Check the settings and choose the mode now; nothing runs before start().

        `on_scanned` runs after each complete walk of the inbox (on the settle thread, or on
        start()'s caller for the first), when whatever is gone from the inbox is known gone.
        """
        if poll_interval_seconds <= 0 or rescan_interval_seconds <= 0 or settle_seconds < 0:
            raise ValueError(
                "watcher: poll and rescan intervals must be positive, settle_seconds not negative"
            )
        self.inbox = inbox
        self.mode: Mode = choose_mode(inbox, mode)  # type: ignore[arg-type]  # checked there
        self.handover_errors = 0  # on_ready calls that raised; each file is retried on a rescan
        self._inbox = os.fspath(inbox)  # keys and handed-over paths are inbox / relative path
        self._on_ready = on_ready
        self._is_ready = is_ready or (lambda _path: True)
        self._on_scanned = on_scanned or (lambda: None)
        self._clock = clock
        self._poll_interval_seconds = poll_interval_seconds
        self._settle_seconds = settle_seconds
        self._rescan_interval_seconds = rescan_interval_seconds
        self._tick_seconds = max(0.01, min(0.5, settle_seconds / 4))

        self._lock = threading.Lock()  # guards the four collections below
        self._pending: dict[str, _Candidate] = {}
        # path -> (signature, serial): the serial orders hand-overs against the start of a scan.
        self._handed_over: dict[str, tuple[Signature, int]] = {}
        self._handover_serial = 0
        self._folders_to_walk: set[str] = set()
        self._gone_folders: list[str] = []  # deleted or moved away: forget what was handed over

        self._observer_lock = threading.Lock()  # start, restart and stop of the observer
        self._observer: BaseObserver | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_tick_at = clock()
        self._next_rescan_at = 0.0
        self._inbox_missing = False
        self._last_start_error: str | None = None

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
        with self._observer_lock:
            self._start_observer()
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
        with self._observer_lock:
            self._stop_observer(timeout)

    def healthy(self) -> bool:
        """True while the observer (all its threads) and the settle thread run and tick."""
        thread = self._thread
        return (
            thread is not None
            and thread.is_alive()
            and self._clock() - self._last_tick_at < _HEALTHY_TICKS * self._tick_seconds
            and self._observer_running()
        )

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
        new, seen, complete = self._walk(self._inbox)
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

    def _record(self, event: FileSystemEvent, watched_root: str) -> None:
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
            self._note(target)
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

    def _note(self, key: str) -> bool:
        """Make `key` a candidate, or tell its candidate it was seen again; True if new."""
        with self._lock:
            candidate = self._pending.get(key)
            if candidate is None:
                self._pending[key] = _Candidate()
                return True
            candidate.events += 1
            return False

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
        """One round: mind the observer, walk folders that moved in, rescan when due, settle."""
        self._supervise()
        self._walk_new_folders()
        if self._clock() >= self._next_rescan_at:
            self._next_rescan_at = self._clock() + self._rescan_interval_seconds
            self.scan()
        self._settle()

    def _settle(self) -> None:
        """Look at every candidate once; the heartbeat moves after each, not just once a tick."""
        with self._lock:
            snapshot = [(key, c, c.events) for key, c in self._pending.items()]
        for key, candidate, events in snapshot:
            if self._stopping.is_set():
                return
            self._settle_one(key, candidate, events)
            self._last_tick_at = self._clock()

    def _settle_one(self, key: str, candidate: _Candidate, events: int) -> None:
        """Drop, keep waiting for, or hand over one candidate."""
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
        signature = (status.st_size, status.st_mtime_ns)
        if stat.S_ISDIR(status.st_mode):  # a file replaced by a folder, say: walk it instead
            with self._lock:
                self._folders_to_walk.add(key)
            self._discard(key, candidate, events)
            return
        with self._lock:
            already_handed_over = self._was_handed_over(key, signature)
        if already_handed_over:
            self._discard(key, candidate, events)
            return
        if not stat.S_ISREG(status.st_mode):
            # Symlinks, FIFOs, sockets, devices: nothing to settle, and opening a FIFO would hang.
            self._hand_over(key, candidate, events, signature)
            return
        now = self._clock()
        if signature != candidate.signature:
            candidate.signature, candidate.stable_since = signature, now
            candidate.failed_ready_checks = 0
            return
        checks = candidate.failed_ready_checks
        if now - candidate.stable_since < (checks + 1) * self._settle_seconds:
            return
        if self._check_ready(key):
            self._hand_over(key, candidate, events, signature)
            return
        candidate.failed_ready_checks += 1
        if candidate.failed_ready_checks >= _READY_CHECKS:
            log.warning(
                "watcher: {} unchanged for {} settle periods but still not ready; handing it over",
                key,
                _READY_CHECKS,
            )
            self._hand_over(key, candidate, events, signature)

    def _check_ready(self, key: str) -> bool:
        """is_ready, with an exception counting as "not yet" rather than ending the thread."""
        try:
            return bool(self._is_ready(Path(key)))
        except Exception:
            log.exception("watcher: is_ready failed for {}; treating it as not ready", key)
            return False

    def _hand_over(
        self, key: str, candidate: _Candidate, events: int, signature: Signature
    ) -> None:
        """Call on_ready once; a failure is logged and counted, and a later rescan retries it."""
        # The memo goes in first, so a delete event during on_ready (the service moving the
        # original away) removes it again instead of being overtaken by it.
        with self._lock:
            self._handover_serial += 1
            self._handed_over[key] = (signature, self._handover_serial)
        try:
            self._on_ready(Path(key))
        except Exception:
            self.handover_errors += 1
            log.exception("watcher: on_ready failed for {}; a rescan will offer it again", key)
            with self._lock:
                if self._was_handed_over(key, signature):
                    del self._handed_over[key]
        self._discard(key, candidate, events)

    def _was_handed_over(self, key: str, signature: Signature) -> bool:
        """True if `key` was handed over looking just like this; the caller holds the lock."""
        memo = self._handed_over.get(key)
        return memo is not None and memo[0] == signature

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
            self._walk(folder)
            with self._lock:
                self._folders_to_walk.discard(folder)

    def _walk(self, top: str) -> tuple[int, set[str], bool]:
        """Queue every unignored, not handed-over entry below `top`: (new, seen, walk complete).

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
                    status = entry.stat(follow_symlinks=False)
                    signature: Signature | None = (status.st_size, status.st_mtime_ns)
                except OSError:
                    signature = None  # the settle thread will find out
                seen.add(entry.path)
                with self._lock:
                    if signature is not None and self._was_handed_over(entry.path, signature):
                        continue
                if self._note(entry.path):
                    new += 1
        return new, seen, complete

    # -- the observer ---------------------------------------------------------------------------

    def _observer_running(self) -> bool:
        """True when the observer and each of its emitters are alive.

        The observer's own thread survives its emitter: a polling emitter stops when the inbox
        vanishes, an inotify one when the inbox is deleted, and is_alive() stays True.
        """
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        try:
            emitters = tuple(observer.emitters)
        except RuntimeError:  # the set changed under us (a concurrent stop); judge next tick
            return True
        return bool(emitters) and all(emitter.is_alive() for emitter in emitters)

    def _supervise(self) -> None:
        """Replace a dead observer, waiting for the inbox to exist again; then rescan."""
        if self._observer_running():
            return
        with self._observer_lock:
            if self._stopping.is_set():
                return
            if self._observer is not None:
                log.warning(
                    "watcher: the {} observer of {} stopped; restarting it", self.mode, self._inbox
                )
                self._stop_observer(timeout=1.0)
            if not os.path.isdir(self._inbox):
                if not self._inbox_missing:
                    self._inbox_missing = True
                    log.warning("watcher: inbox {} is missing; waiting for it", self._inbox)
                return
            try:
                self._start_observer()
            except OSError as error:
                if str(error) != self._last_start_error:
                    self._last_start_error = str(error)
                    log.warning("watcher: cannot watch {}: {}; retrying", self._inbox, error)
                return
        self._last_start_error = None
        if self._inbox_missing:
            self._inbox_missing = False
            log.info("watcher: inbox {} is back", self._inbox)
        self.scan()  # whatever arrived while nobody watched

    def _start_observer(self) -> None:
        """Start an observer for the mode; out of inotify watches, fall back to polling for good."""
        root = os.path.realpath(self._inbox)  # inotify does not follow a symlinked inbox
        try:
            self._observer = self._new_observer(root)
        except OSError as error:
            if self.mode != "native" or error.errno not in _INOTIFY_LIMITS:
                raise
            log.warning(
                "watcher: cannot watch {} natively ({}); polling every {} s instead",
                self._inbox,
                error,
                self._poll_interval_seconds,
            )
            self.mode = "poll"
            self._observer = self._new_observer(root)

    def _new_observer(self, root: str) -> BaseObserver:
        """A started, recursive observer of `root`."""
        observer: BaseObserver
        if self.mode == "poll":
            # PollingObserver, but with lstat: plain os.stat follows a symlink to a folder and would
            # walk wherever it points (all of / for a link to /) on every poll.
            observer = PollingObserverVFS(
                os.lstat, os.scandir, polling_interval=self._poll_interval_seconds
            )
        else:
            observer = Observer()
        try:
            observer.schedule(
                _Recorder(self, root), root, recursive=True, event_filter=_EVENT_TYPES
            )
            observer.start()
        except BaseException:
            observer.stop()  # the inotify observer runs a reader thread from its constructor on
            raise
        return observer

    def _stop_observer(self, timeout: float) -> None:
        """Stop and forget the observer, if any."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()
        if observer.is_alive():
            observer.join(timeout)
