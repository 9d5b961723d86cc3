"""The watcher with a real watchdog observer (inotify and polling) on real files in tmp_path.

Timings are short (settle 0.3 s, poll 0.2 s). Each test waits on a deadline for a condition, and
"exactly once" is checked after a barrier: a later file that must be handed over first.
"""

import errno
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import photo_bytes, sha256
from loguru import logger
from test_share_writes import write_preallocated

from daemon.config.outputs import FAILED_DIR
from daemon.media import decode
from daemon.outbox import TEMP_PREFIX, Outbox
from daemon.service import mounts
from daemon.service import watcher as watcher_module
from daemon.service.mounts import choose_mode, fs_type_for, is_network_fs
from daemon.service.watcher import Watcher, is_ignored_name

SETTLE = 0.3
POLL = 0.2
MODES = pytest.mark.parametrize("mode", ["native", "poll"])


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until true or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class Recorder:
    """on_ready stand-in: remembers each path and its size (lstat) at hand-over."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.sizes: dict[Path, int] = {}
        self.times: dict[Path, float] = {}
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> None:
        size = os.lstat(path).st_size
        with self._lock:
            self.paths.append(path)
            self.sizes[path] = size
            self.times[path] = time.monotonic()

    def count(self, path: Path) -> int:
        """How many times `path` was handed over."""
        with self._lock:
            return self.paths.count(path)

    def names(self) -> list[str]:
        """Names handed over, in order."""
        with self._lock:
            return [path.name for path in self.paths]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_watcher(inbox: Path, recorder: Recorder) -> Iterator[Callable[..., Watcher]]:
    """Build a started watcher on `inbox` with short timings; stopped at teardown."""
    watchers: list[Watcher] = []

    def make(mode: str = "native", **overrides: Any) -> Watcher:
        folder = overrides.pop("inbox", inbox)
        on_ready = overrides.pop("on_ready", recorder)
        settings: dict[str, Any] = {
            "mode": mode,
            "poll_interval_seconds": POLL,
            "settle_seconds": SETTLE,
            "rescan_interval_seconds": 60.0,
        }
        settings.update(overrides)
        watcher = Watcher(folder, on_ready, **settings)
        watchers.append(watcher)
        watcher.start()
        return watcher

    yield make
    for watcher in watchers:
        watcher.stop(timeout=2.0)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """Messages loguru logs at WARNING and above while the test runs."""
    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(message.record["message"]), level="WARNING")
    yield messages
    logger.remove(sink)


def barrier(watcher: Watcher, recorder: Recorder, name: str = "zz-barrier.jpg") -> None:
    """Drop one more file and wait until it is handed over and nothing is pending.

    Whatever was written before it has then been handed over or dropped, in either mode.
    """
    path = watcher.inbox / name
    path.write_bytes(b"barrier")
    assert wait_for(lambda: recorder.count(path) == 1 and watcher.idle()), f"{name} not handed over"


# -- names and modes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ".DS_Store",
        TEMP_PREFIX + "x1y2",
        ".syncthing.photo.jpg.tmp",
        "~$report.docx",
        "photo.jpg.part",
        "photo.JPG.PART",
        "photo.jpg.crdownload",
        "photo.jpg.partial",
        "photo.jpg.download",
        "photo.tmp",
        "Thumbs.db",
        "desktop.ini",
    ],
)
def test_ignored_names(name: str) -> None:
    assert is_ignored_name(name)


@pytest.mark.parametrize("name", ["photo.jpg", "IMG_0001.HEIC", "part.jpg", "my.tmp.photo.png"])
def test_photo_names_are_not_ignored(name: str) -> None:
    assert not is_ignored_name(name)


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
nas:/export/photos /mnt/nas nfs4 rw,vers=4.2 0 0
//fs/share /mnt/my\\040share cifs rw 0 0
sshfs#me@host: /mnt/remote fuse.sshfs rw 0 0
/dev/vdb /mnt/nas/local ext4 rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "fs_type"),
    [
        ("/mnt/nas", "nfs4"),
        ("/mnt/nas/inbox", "nfs4"),
        ("/mnt/nasty/inbox", "ext4"),  # a prefix of the name is not a parent folder
        ("/mnt/nas/local/inbox", "ext4"),  # the longest mount point wins
        ("/mnt/my share/inbox", "cifs"),  # \040 in /proc/self/mounts is a space
        ("/mnt/remote/inbox", "fuse.sshfs"),
        ("/tmp/inbox", "tmpfs"),
        ("/srv/inbox", "ext4"),
    ],
)
def test_fs_type_for(path: str, fs_type: str) -> None:
    assert fs_type_for(path, MOUNTS) == fs_type


def test_later_mount_over_the_same_point_wins() -> None:
    mounts = "/dev/vda / ext4 rw 0 0\n/dev/vdb /srv ext4 rw 0 0\nnas:/x /srv nfs rw 0 0\n"
    assert fs_type_for("/srv/inbox", mounts) == "nfs"


def test_network_filesystems_are_polled_local_ones_are_not() -> None:
    assert all(is_network_fs(t) for t in ("nfs4", "cifs", "smb3", "9p", "fuse.sshfs", "virtiofs"))
    assert not any(is_network_fs(t) for t in ("ext4", "xfs", "btrfs", "tmpfs", "fuseblk", ""))


def test_choose_mode(tmp_path: Path) -> None:
    assert choose_mode(tmp_path, "poll") == "poll"
    assert choose_mode(tmp_path, "native") == "native"
    local = fs_type_for(tmp_path.resolve(), Path("/proc/self/mounts").read_text())
    if is_network_fs(local):
        pytest.skip(f"tmp_path is on {local} here, not a local filesystem")
    assert choose_mode(tmp_path, "auto") == "native"
    with pytest.raises(ValueError, match="watch mode"):
        choose_mode(tmp_path, "inotify")  # type: ignore[arg-type]


def test_mode_is_read_only_outside_the_watcher(inbox: Path, recorder: Recorder) -> None:
    """The service loop reads `mode` while the settle thread may switch it; only the watcher's
    observer writes it, under a lock."""
    watcher = Watcher(inbox, recorder, mode="poll")
    assert watcher.mode == "poll"
    with pytest.raises(AttributeError):
        watcher.mode = "native"  # type: ignore[misc]


# -- hand-over ----------------------------------------------------------------------------------


@MODES
def test_file_written_at_once_is_handed_over_once(
    mode: str, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    watcher = make_watcher(mode, rescan_interval_seconds=0.2)
    assert watcher.mode == mode
    photo = inbox / "photo.jpg"
    photo.write_bytes(b"x" * 1000)
    assert wait_for(lambda: recorder.count(photo) == 1)
    assert recorder.sizes[photo] == 1000
    assert watcher.scan() == 0  # the memo knows it
    assert watcher.scan() == 0
    barrier(watcher, recorder)  # takes longer than a settle period: periodic rescans ran too
    assert recorder.count(photo) == 1
    assert watcher.healthy()


@MODES
def test_file_moved_away_and_back_is_handed_over_again(
    mode: str, tmp_path: Path, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    # A poller may never notice a round trip between two polls; the next rescan then finds it.
    watcher = make_watcher(mode, rescan_interval_seconds=0.3)
    photo = inbox / "photo.jpg"
    photo.write_bytes(b"x" * 10)
    assert wait_for(lambda: recorder.count(photo) == 1)
    photo.rename(tmp_path / "away.jpg")  # same inode, size and mtime when it comes back
    watcher.scan()  # a rescan (or the deleted event) forgets what is gone
    (tmp_path / "away.jpg").rename(photo)
    assert wait_for(lambda: recorder.count(photo) == 2)


@MODES
def test_slow_writer_is_handed_over_after_its_last_chunk(
    mode: str, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    watcher = make_watcher(mode, settle_seconds=0.4)
    photo = inbox / "slow.jpg"
    chunks = 15
    last_write: list[float] = []

    def write_slowly() -> None:
        with photo.open("wb") as file:
            for _ in range(chunks):
                file.write(b"y" * 100)
                file.flush()
                last_write[:] = [time.monotonic()]
                time.sleep(0.1)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    writer.join(timeout=5)
    assert wait_for(lambda: recorder.count(photo) == 1)
    assert recorder.sizes[photo] == chunks * 100
    assert recorder.times[photo] >= last_write[0] + 0.4
    # on_ready runs before a candidate is let go, so once idle no second hand-over can follow.
    assert wait_for(watcher.idle)
    assert watcher.scan() == 0
    assert recorder.count(photo) == 1


@MODES
def test_rename_into_place_hands_over_only_the_final_name(
    mode: str, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    watcher = make_watcher(mode)
    partial = inbox / "x.jpg.part"
    partial.write_bytes(b"z" * 500)
    partial.rename(inbox / "x.jpg")
    barrier(watcher, recorder)
    assert sorted(recorder.names()) == ["x.jpg", "zz-barrier.jpg"]


@MODES
def test_folder_moved_in_hands_over_each_file_once(
    mode: str, tmp_path: Path, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    album = tmp_path / "staging" / "album"
    album.mkdir(parents=True)
    for n in range(3):
        (album / f"{n}.jpg").write_bytes(b"p" * (100 + n))
    watcher = make_watcher(mode)
    os.rename(album, inbox / "album")
    expected = {inbox / "album" / f"{n}.jpg" for n in range(3)}
    assert wait_for(lambda: expected <= set(recorder.paths))
    barrier(watcher, recorder)
    assert sorted(recorder.paths) == sorted([*expected, inbox / "zz-barrier.jpg"])


@MODES
def test_ignored_files_are_never_handed_over(
    mode: str, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    (inbox / "early.jpg.part").write_bytes(b"before start")  # the startup scan skips it too
    watcher = make_watcher(mode)
    hidden = inbox / ".hidden"
    hidden.mkdir()
    for path in (
        inbox / ".dotfile.jpg",
        inbox / "photo.jpg.part",
        inbox / "~$x.jpg",
        inbox / f"{TEMP_PREFIX}abc123",
        inbox / "Thumbs.db",
        hidden / "inside.jpg",
    ):
        path.write_bytes(b"ignore me")
    barrier(watcher, recorder)
    assert recorder.names() == ["zz-barrier.jpg"]
    assert watcher.scan() == 0


@MODES
def test_startup_scan_hands_over_files_already_there(
    mode: str, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    (inbox / "a.jpg").write_bytes(b"a")
    (inbox / "sub").mkdir()
    (inbox / "sub" / "b.jpg").write_bytes(b"bb")
    watcher = make_watcher(mode)
    expected = {inbox / "a.jpg", inbox / "sub" / "b.jpg"}
    assert wait_for(lambda: set(recorder.paths) == expected and watcher.idle())
    assert len(recorder.paths) == 2


def test_symlinked_inbox_hands_over_paths_under_the_link(
    tmp_path: Path, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    link = tmp_path / "inbox-link"
    link.symlink_to(inbox, target_is_directory=True)
    make_watcher("native", inbox=link)
    (inbox / "photo.jpg").write_bytes(b"x")
    assert wait_for(lambda: recorder.paths == [link / "photo.jpg"])


@MODES
def test_file_deleted_while_settling_is_never_handed_over(
    mode: str, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    watcher = make_watcher(mode, settle_seconds=0.4)
    doomed = inbox / "doomed.jpg"
    doomed.write_bytes(b"d" * 100)
    assert wait_for(lambda: watcher.pending_count() == 1)
    doomed.unlink()
    assert wait_for(watcher.idle)
    barrier(watcher, recorder)
    assert recorder.names() == ["zz-barrier.jpg"]


def test_not_ready_delays_hand_over_until_ready(
    inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    ready = threading.Event()
    checks: list[Path] = []

    def is_ready(path: Path) -> bool:
        checks.append(path)
        return ready.is_set()

    watcher = make_watcher("native", is_ready=is_ready)
    photo = inbox / "photo.jpg"
    photo.write_bytes(b"x" * 10)
    assert wait_for(lambda: len(checks) >= 2)
    assert recorder.paths == []
    ready.set()
    assert wait_for(lambda: recorder.count(photo) == 1 and watcher.idle())
    assert recorder.count(photo) == 1


def test_never_ready_is_handed_over_after_five_settle_periods_once_its_writer_closed_it(
    inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher], warnings: list[str]
) -> None:
    """Closed (a read lease is granted: we run as its owner) and still not whole: nothing more
    will come, so after five looks the worker gets it and says what is wrong."""
    settle = 0.2
    checks: list[Path] = []

    def never_ready(path: Path) -> bool:
        checks.append(path)
        return False

    make_watcher("native", settle_seconds=settle, is_ready=never_ready)
    photo = inbox / "truncated.jpg"
    photo.write_bytes(b"\xff\xd8 not all there")
    written = time.monotonic()
    assert wait_for(lambda: recorder.count(photo) == 1)
    assert recorder.times[photo] - written >= 5 * settle
    assert checks == [photo] * 5
    assert any("not whole; handing it over" in message for message in warnings)


@MODES
def test_fifo_and_symlinks_are_handed_over_without_being_opened(
    mode: str, tmp_path: Path, inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    opened: list[Path] = []

    def is_ready(path: Path) -> bool:  # the service's is_ready would open and decode
        opened.append(path)
        return True

    make_watcher(mode, is_ready=is_ready)
    target = tmp_path / "elsewhere.jpg"
    target.write_bytes(b"outside the inbox")
    os.mkfifo(inbox / "pipe.jpg")
    (inbox / "link.jpg").symlink_to(target)
    (inbox / "dangling.jpg").symlink_to(tmp_path / "nothing-here.jpg")
    (inbox / "folder-link").symlink_to(tmp_path, target_is_directory=True)
    expected = {inbox / name for name in ("pipe.jpg", "link.jpg", "dangling.jpg", "folder-link")}
    # If anything opened the FIFO the settle thread would hang here; the deadline turns that
    # into a failure instead of a hung test run.
    assert wait_for(lambda: set(recorder.paths) == expected)
    assert opened == []
    assert len(recorder.paths) == 4


def test_a_failing_on_ready_is_counted_and_the_watcher_carries_on(
    inbox: Path, make_watcher: Callable[..., Watcher], warnings: list[str]
) -> None:
    calls: list[Path] = []

    def flaky(path: Path) -> None:
        calls.append(path)
        if path.name == "bad.jpg":
            raise RuntimeError("journal is locked")

    watcher = make_watcher("native", on_ready=flaky, rescan_interval_seconds=0.5)
    (inbox / "bad.jpg").write_bytes(b"b")
    assert wait_for(lambda: watcher.handover_errors == 1)
    (inbox / "good.jpg").write_bytes(b"g")
    assert wait_for(lambda: inbox / "good.jpg" in calls)
    assert wait_for(lambda: calls.count(inbox / "bad.jpg") >= 2)  # a rescan offers it again
    assert any("journal is locked" in m or "on_ready failed" in m for m in warnings)
    assert watcher.healthy()


# -- supervision --------------------------------------------------------------------------------


@MODES
def test_inbox_removed_and_recreated_recovers(
    mode: str,
    inbox: Path,
    recorder: Recorder,
    make_watcher: Callable[..., Watcher],
    warnings: list[str],
) -> None:
    watcher = make_watcher(mode)
    assert wait_for(watcher.healthy)
    shutil.rmtree(inbox)
    assert wait_for(lambda: watcher.problem() is not None)
    assert wait_for(lambda: any("is missing" in message for message in warnings))
    inbox.mkdir()
    assert wait_for(lambda: watcher.problem() is None)
    photo = inbox / "after.jpg"
    photo.write_bytes(b"after the blip")
    assert wait_for(lambda: recorder.count(photo) == 1)


@MODES
def test_dead_observer_is_replaced_and_files_still_arrive(
    mode: str,
    inbox: Path,
    recorder: Recorder,
    make_watcher: Callable[..., Watcher],
    warnings: list[str],
) -> None:
    watcher = make_watcher(mode, rescan_interval_seconds=3.0)
    old = watcher._observing.observer
    assert old is not None
    old.stop()  # as if its thread had died
    photo = inbox / "meanwhile.jpg"
    photo.write_bytes(b"written while nobody watched")
    assert wait_for(lambda: any("observer" in m and "stopped" in m for m in warnings))
    assert wait_for(lambda: recorder.count(photo) == 1, timeout=3.0)
    assert wait_for(watcher.healthy)
    assert watcher._observing.observer is not old
    later = inbox / "later.jpg"
    later.write_bytes(b"seen by the new observer")
    assert wait_for(lambda: recorder.count(later) == 1)


def test_out_of_inotify_watches_falls_back_to_polling(
    inbox: Path,
    recorder: Recorder,
    make_watcher: Callable[..., Watcher],
    warnings: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_watches_left() -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(mounts, "Observer", no_watches_left)
    watcher = make_watcher("native")
    assert watcher.mode == "poll"
    assert any("polling" in message for message in warnings)
    photo = inbox / "photo.jpg"
    photo.write_bytes(b"x")
    assert wait_for(lambda: recorder.count(photo) == 1)
    assert watcher.healthy()


def test_start_refuses_a_missing_inbox(tmp_path: Path, recorder: Recorder) -> None:
    watcher = Watcher(tmp_path / "absent", recorder, mode="native")
    with pytest.raises(FileNotFoundError):
        watcher.start()


def test_on_scanned_follows_each_complete_scan_only(
    inbox: Path, make_watcher: Callable[..., Watcher]
) -> None:
    """The service prunes the journal's file memo here: only a walk that saw the whole inbox may
    say what is gone from it."""
    scans: list[float] = []
    watcher = make_watcher(on_scanned=lambda: scans.append(time.monotonic()))
    assert len(scans) == 1  # the start-up scan, before start() returns
    watcher.scan()
    assert len(scans) == 2
    inbox.rename(inbox.with_name("away"))  # a share that dropped out: the walk cannot list it
    watcher.scan()
    assert len(scans) == 2


# -- complete files only: writers at work, preallocated files, stalled copies -------------------


class Hashes:
    """on_ready stand-in that remembers the sha256 of each file's bytes at hand-over: a
    preallocated file has its final size from the start, so its size proves nothing."""

    def __init__(self) -> None:
        self.handed: list[tuple[Path, str]] = []
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> None:
        digest = sha256(path.read_bytes())
        with self._lock:
            self.handed.append((path, digest))

    def of(self, path: Path) -> list[str]:
        """The hashes `path` had at each of its hand-overs."""
        with self._lock:
            return [digest for handed, digest in self.handed if handed == path]


@pytest.fixture
def no_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel will not say who writes (a file of another user, without CAP_LEASE): what the
    watcher then has is inotify's close events, or on a share only the bytes themselves."""
    monkeypatch.setattr(watcher_module, "open_for_writing", lambda _path: None)


@pytest.mark.parametrize("leases", [True, False], ids=["lease", "no-lease"])
@MODES
def test_a_preallocated_file_paused_half_written_is_handed_over_whole(
    mode: str, leases: bool, inbox: Path, make_watcher: Callable[..., Watcher], request
) -> None:
    """The size set first, half the bytes, a pause of more than a settle period with the handle
    open, the rest: handed over once, with the final bytes. With a lease the kernel says the
    file is open for writing; without one, native mode has the close event and poll mode the
    two looks a settle period apart (the pause is shorter than two periods)."""
    if not leases:
        request.getfixturevalue("no_leases")
    hashes = Hashes()
    watcher = make_watcher(mode, settle_seconds=0.4, on_ready=hashes)
    data = photo_bytes(0, format="BMP")  # whole as far as any decoder can tell at every byte
    photo = inbox / "scan.bmp"
    written = write_preallocated(photo, data, pause_seconds=0.6)
    assert written.in_place_when_whole
    assert wait_for(lambda: hashes.of(photo) != [] and watcher.idle())
    assert hashes.of(photo) == [sha256(data)]


def test_a_writer_holding_its_file_open_is_waited_for_and_said_so(
    inbox: Path, make_watcher: Callable[..., Watcher], warnings: list[str]
) -> None:
    """A copy stalled with its handle open is never handed over, however long it is still."""
    hashes = Hashes()
    make_watcher("poll", settle_seconds=0.2, stalled_seconds=0.4, on_ready=hashes)
    data = photo_bytes(1, format="BMP")
    photo = inbox / "stalled.bmp"
    thread = threading.Thread(target=write_preallocated, args=(photo, data, 2.0))
    thread.start()
    assert wait_for(lambda: any("open for writing" in m for m in warnings))
    assert hashes.of(photo) == []
    thread.join()
    assert wait_for(lambda: hashes.of(photo) == [sha256(data)])


@pytest.mark.usefixtures("no_leases")
def test_an_incomplete_file_on_a_share_goes_only_after_stalled_seconds_and_comes_back(
    tmp_path: Path, inbox: Path, make_watcher: Callable[..., Watcher], warnings: list[str]
) -> None:
    """A copy that stalls on a share (no lease, no events): handed over only after
    stalled_seconds still; quarantined by the service then, and if its writer goes on in
    failed/ the next rescan moves it back, and it is handed over again, whole."""
    outbox = Outbox(tmp_path / "outbox")
    failed = outbox.root / FAILED_DIR
    hashes = Hashes()

    def accept(path: Path) -> None:  # what the service does with a photo that does not decode
        hashes(path)
        if not decode.is_whole(path):
            outbox.quarantine(path, {"reason": f"{path.name}: truncated"})

    stalled = 1.5
    make_watcher(
        "poll",
        settle_seconds=0.2,
        stalled_seconds=stalled,
        rescan_interval_seconds=0.5,
        is_ready=decode.is_whole,
        on_ready=accept,
        quarantine_dir=failed,
        take_back=lambda name: outbox.restore(name, inbox),
    )
    data = photo_bytes(2, format="PNG")
    photo = inbox / "stalled.png"
    written = write_preallocated(photo, data, pause_seconds=stalled + 2.0)
    assert not written.in_place_when_whole  # quarantined while stalled: the rest went to failed/
    assert hashes.of(photo)[0] != sha256(data)
    assert hashes.of(photo)[0] == sha256(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    assert wait_for(lambda: hashes.of(photo)[-1:] == [sha256(data)])
    assert photo.read_bytes() == data
    assert sorted(failed.iterdir()) == []
    assert any("moved back" in message for message in warnings)


# -- the inbox itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["renamed-away", "removed"])
@MODES
def test_an_inbox_made_again_is_watched_again_within_seconds(
    mode: str,
    how: str,
    tmp_path: Path,
    inbox: Path,
    recorder: Recorder,
    make_watcher: Callable[..., Watcher],
) -> None:
    """No rescan comes in this test: the new folder must be watched at once, with a log line.
    An inotify watch follows the old folder's inode (renamed away, it stays healthy and deaf).

    A folder removed and made again at once may get the old one's inode number back: then its
    identity is the same, the inotify observer has died with the old folder (restarted, and
    said so), and the poller, which lists by path, never stopped."""
    said: list[str] = []
    sink = logger.add(lambda message: said.append(message.record["message"]), level="INFO")
    try:
        watcher = make_watcher(mode, rescan_interval_seconds=600.0)
        if how == "renamed-away":
            inbox.rename(tmp_path / "old-inbox")
        else:
            shutil.rmtree(inbox)
        inbox.mkdir()
        if mode == "native" or how == "renamed-away":
            assert wait_for(lambda: any("watching it afresh" in m for m in said)), said
    finally:
        logger.remove(sink)
    photo = inbox / "after.jpg"
    photo.write_bytes(b"in the new inbox")
    assert wait_for(lambda: recorder.count(photo) == 1, timeout=3.0)
    assert watcher.problem() is None


def test_a_missing_inbox_is_the_watchers_problem_until_it_is_back(
    inbox: Path, make_watcher: Callable[..., Watcher]
) -> None:
    watcher = make_watcher("native")
    assert watcher.problem() is None
    shutil.rmtree(inbox)
    assert wait_for(lambda: "does not exist" in (watcher.problem() or ""))
    assert "is the share mounted?" in (watcher.problem() or "")
    assert watcher.healthy()  # waiting for the share is no reason to restart the daemon
    inbox.mkdir()
    assert wait_for(lambda: watcher.problem() is None)


def test_a_mount_over_the_inbox_pauses_hand_overs_until_it_is_gone(
    inbox: Path, recorder: Recorder, make_watcher: Callable[..., Watcher]
) -> None:
    """A share unmounted (or mounted late) changes what the inbox is: what is there is not the
    share's, so nothing is handed over and the health says why."""
    watcher = make_watcher("native", rescan_interval_seconds=600.0)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inbox)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        assert wait_for(lambda: "has a new mount on it" in (watcher.problem() or ""))
        assert watcher.healthy()
        (inbox / "on-the-mount.jpg").write_bytes(b"not the share's")
        time.sleep(4 * SETTLE)  # a window in which a hand-over would happen: none may
        assert recorder.paths == []
    finally:
        subprocess.run(["umount", str(inbox)], check=True)
    assert wait_for(lambda: watcher.problem() is None)
    photo = inbox / "back.jpg"
    photo.write_bytes(b"the share again")
    assert wait_for(lambda: recorder.paths == [photo], timeout=3.0)
