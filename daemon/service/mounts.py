"""What the inbox is mounted on decides how it is observed: inotify events, or polling.

inotify reports only what this kernel writes. On an NFS or SMB share, a 9p/virtiofs folder shared
into a VM, or a FUSE mount, another host (or the VM's host) can write a whole photo and no event
ever arrives; only polling sees it. So the mode is chosen from the mount table, /proc/self/mounts
(`choose_mode`, plain text parsing, tested on text), and later switched to polling for good when
inotify runs out of watches. A share also drops out and comes back, and watchdog's threads then die
quietly; `InboxObserver` keeps one observer of the chosen mode running and replaces it.

The mount also decides what the kernel can tell about a file's writers: on a local filesystem a
read lease is refused while any process has the file open for writing (`open_for_writing`); on a
share the client's kernel knows nothing of the server's writers, and NFS and CIFS answer a lease
by their own rules (no delegation or oplock: EAGAIN), so there the question is not asked at all.

All of this is about the mount, not about which files are new or whole: it lives here so that the
watcher keeps to candidates, settling and hand-over, and only asks for events and answers.
"""

import errno
import fcntl
import os
import re
import signal
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

from loguru import logger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from daemon.service.roots import Identity, RootWatch, identity

Mode: TypeAlias = Literal["native", "poll"]

log = logger.bind(component="watcher")

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

_MOUNTS_TABLE = Path("/proc/self/mounts")
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")  # /proc/self/mounts writes " " as \040, and so on
_INOTIFY_LIMITS = frozenset({errno.ENOSPC, errno.EMFILE})  # watch or instance limit reached


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


def _fs_type_of(folder: Path) -> str | None:
    """The type of the filesystem holding `folder`; None without a mount table (macOS, BSD)."""
    try:
        mounts = _MOUNTS_TABLE.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return None
    return fs_type_for(folder.resolve(), mounts)


def choose_mode(inbox: Path, requested: Literal["auto", "native", "poll"]) -> Mode:
    """The observer to use: `requested`, or for "auto" polling on network filesystems."""
    if requested in ("native", "poll"):
        return requested
    if requested != "auto":
        raise ValueError(f"watch mode {requested!r}: expected auto, native or poll")
    fs_type = _fs_type_of(inbox)
    if fs_type is None:
        return "native"  # no /proc (macOS, BSD): their native observers are all we can judge
    return "poll" if is_network_fs(fs_type) else "native"


def writers_visible(inbox: Path) -> bool:
    """True where `open_for_writing` can answer for files in `inbox`: Linux leases, a local
    filesystem, and a lease break that cannot end the process (`ignore_lease_breaks`)."""
    if not hasattr(fcntl, "F_SETLEASE"):
        return False
    fs_type = _fs_type_of(inbox)
    return fs_type is not None and not is_network_fs(fs_type) and ignore_lease_breaks()


def ignore_lease_breaks() -> bool:
    """Ignore SIGIO (from the main thread, where it is still the default); True when ignored.

    The kernel tells a lease holder that another process opens its file for writing by sending it
    SIGIO, whose default action ends the process. `open_for_writing` holds its lease for an
    instant, but a writer opening the file in that instant must not take the daemon down.
    """
    current = signal.getsignal(signal.SIGIO)
    if current is signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGIO, signal.SIG_IGN)
        current = signal.SIG_IGN
    return current not in (signal.SIG_DFL, None)  # None: set outside Python, unknown


def open_for_writing(path: str) -> bool | None:
    """True while some process has `path` open for writing, False while none has; None when the
    kernel will not say (not the file's owner and no CAP_LEASE, a filesystem without leases, not
    a regular file). Only asked where `writers_visible` said yes.

    A read lease is refused with EAGAIN while the file is open for writing anywhere on this
    kernel (smbd serving a Windows client, a local cp), and released at once when granted.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as error:
        # A write lease held by another process (Samba's kernel oplocks) fails a non-blocking open.
        return True if error.errno == errno.EWOULDBLOCK else None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        try:
            fcntl.fcntl(descriptor, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as error:
            return True if error.errno == errno.EAGAIN else None
        fcntl.fcntl(descriptor, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(descriptor)


class InboxObserver:
    """Keeps one watchdog observer of the inbox running, replacing it when any of its threads died
    or the inbox is another folder than the one it watches (`keep_watching`), and says when the
    inbox is missing or its mount is not as at the start (`inbox_problem`).

    It owns the mode, which the settle thread may switch to polling (a restart that finds no
    inotify watches left) while the service loop reads it: written under `_mode_lock`, read through
    `mode`. A lock of its own, since `_lock` is held for as long as an observer takes to start.
    """

    def __init__(
        self,
        inbox: str,
        mode: Mode,
        handler_for: Callable[[str, Mode], FileSystemEventHandler],
        *,
        event_filter: Sequence[type[FileSystemEvent]],
        poll_interval_seconds: float,
        stopping: threading.Event,
    ) -> None:
        """Nothing starts before start(); once `stopping` is set no observer is started again.

        `handler_for(root, mode)` makes the event handler for an observer of `root`, the resolved
        inbox, in `mode`.
        """
        self._inbox = inbox
        self._mode_lock = threading.Lock()
        self._mode = mode
        self._handler_for = handler_for
        self._event_filter = list(event_filter)
        self._poll_interval_seconds = poll_interval_seconds
        self._stopping = stopping
        self._lock = threading.Lock()  # start, restart and stop of the observer
        self.observer: BaseObserver | None = None
        self._armed: Identity | None = None  # the inbox folder the observer was started on
        self._at_start: RootWatch | None = None  # the inbox as it was at start()
        # Why the inbox is not as at the start, or None; set by keep_watching, read from any
        # thread (one reference, replaced whole).
        self.inbox_problem: str | None = None
        self._inbox_missing = False
        self._last_start_error: str | None = None

    @property
    def mode(self) -> Mode:
        """The mode observers start in: as chosen, or "poll" once inotify ran out of watches."""
        with self._mode_lock:
            return self._mode

    def start(self) -> None:
        """Start the observer; OSError when the inbox cannot be watched at all."""
        with self._lock:
            self._start()
            self._at_start = RootWatch({"inbox": Path(self._inbox)})

    def stop(self, timeout: float) -> None:
        """Stop and forget the observer, if any."""
        with self._lock:
            self._stop(timeout)

    def running(self) -> bool:
        """True when the observer and each of its emitters are alive.

        The observer's own thread survives its emitter: a polling emitter stops when the inbox
        vanishes, an inotify one when the inbox is deleted, and is_alive() stays True.
        """
        observer = self.observer
        if observer is None or not observer.is_alive():
            return False
        try:
            emitters = tuple(observer.emitters)
        except RuntimeError:  # the set changed under us (a concurrent stop); judge next tick
            return True
        return bool(emitters) and all(emitter.is_alive() for emitter in emitters)

    def keep_watching(self) -> bool:
        """Replace the observer when it died, or when the inbox is now another folder than the one
        it watches; True when a new one started. Sets `inbox_problem`.

        An inotify watch follows its folder's inode: an inbox renamed away and made again, or a
        mount over it, leaves the old observer running, healthy and deaf. A polling one stops
        when the folder vanishes. Either way the folder's identity says so, at the next call.
        """
        inbox_now = identity(Path(self._inbox))
        # As the worker judges it: missing, or a mount gone from it or come onto it. Files on a
        # share's bare mount point are not the share's: the watcher hands nothing over meanwhile.
        self.inbox_problem = self._at_start.problem() if self._at_start is not None else None
        if inbox_now is not None and inbox_now == self._armed and self.running():
            return False
        with self._lock:
            if self._stopping.is_set():
                return False
            if self.observer is not None:
                if inbox_now is not None and inbox_now != self._armed:
                    log.warning(
                        "watcher: inbox {} is another folder than the one watched (made again, "
                        "moved, or a mount came or went); watching it afresh",
                        self._inbox,
                    )
                elif inbox_now is not None:
                    log.warning(
                        "watcher: the {} observer of {} stopped (its folder removed and made "
                        "again, or a thread died); watching it afresh",
                        self.mode,
                        self._inbox,
                    )
                self._stop(timeout=1.0)
            if inbox_now is None:
                if not self._inbox_missing:
                    self._inbox_missing = True
                    log.warning("watcher: inbox {} is missing; waiting for it", self._inbox)
                return False
            try:
                self._start()
            except OSError as error:
                if str(error) != self._last_start_error:
                    self._last_start_error = str(error)
                    log.warning("watcher: cannot watch {}: {}; retrying", self._inbox, error)
                return False
        self._last_start_error = None
        if self._inbox_missing:
            self._inbox_missing = False
            log.info("watcher: inbox {} is back; watching it afresh", self._inbox)
        return True

    def _start(self) -> None:
        """Start an observer for the mode; out of inotify watches, fall back to polling for good."""
        root = os.path.realpath(self._inbox)  # inotify does not follow a symlinked inbox
        # Before the observer: a folder swapped in between is then seen as another at the next tick.
        self._armed = identity(Path(self._inbox))
        mode = self.mode
        try:
            self.observer = self._new(root, mode)
        except OSError as error:
            if mode != "native" or error.errno not in _INOTIFY_LIMITS:
                raise
            log.warning(
                "watcher: cannot watch {} natively ({}); polling every {} s instead",
                self._inbox,
                error,
                self._poll_interval_seconds,
            )
            with self._mode_lock:
                self._mode = "poll"
            self.observer = self._new(root, "poll")

    def _new(self, root: str, mode: Mode) -> BaseObserver:
        """A started, recursive observer of `root` for `mode`."""
        observer: BaseObserver
        if mode == "poll":
            # PollingObserver, but with lstat: plain os.stat follows a symlink to a folder and would
            # walk wherever it points (all of / for a link to /) on every poll.
            observer = PollingObserverVFS(
                os.lstat, os.scandir, polling_interval=self._poll_interval_seconds
            )
        else:
            observer = Observer()
        try:
            observer.schedule(
                self._handler_for(root, mode),
                root,
                recursive=True,
                event_filter=self._event_filter,
            )
            observer.start()
        except BaseException:
            observer.stop()  # the inotify observer runs a reader thread from its constructor on
            raise
        return observer

    def _stop(self, timeout: float) -> None:
        """Stop and forget the observer, if any."""
        observer, self.observer = self.observer, None
        if observer is None:
            return
        observer.stop()
        if observer.is_alive():
            observer.join(timeout)
