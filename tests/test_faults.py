"""Disk and device faults, end to end: the real `stylebox run` against full, read-only and vanishing
folders, and a journal deleted or damaged while the daemon was stopped.

A full or read-only disk is a real tmpfs mounted over the folder (root only: tests skip without
it), since root ignores permission bits; a full one is a small tmpfs with a filler file in it.
Everything else is as in test_daemon.py: tiny presets, so an attempt takes about a second.
"""

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    JOB_SECONDS,
    START_SECONDS,
    Daemon,
    Daemons,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    results,
    sha256,
    stylebox,
    temp_files,
    wait_for,
    write_config,
)

from daemon.config import JOURNAL_NAME
from daemon.errors import ExitCode
from daemon.service.journal import Journal, Painted

# Three attempts, 0.5 s then 1 s apart: a fault outlasts them in a few seconds. No log file: it
# would live in the outbox under test, take its free space, and (open for writing) make a
# read-only remount fail with EBUSY.
FAULT_SETTINGS = {
    "retries": {"max_attempts": 3, "backoff_seconds": 0.5},
    "logging": {"level": "DEBUG", "file": False},
}
# For tests that look at the outbox between two attempts, or must end the fault before the last:
# 1 s then 2 s apart, so neither depends on being fast to the next tenth of a second.
PATIENT_SETTINGS = {**FAULT_SETTINGS, "retries": {"max_attempts": 3, "backoff_seconds": 1.0}}
PAGE_BYTES = 4096  # tmpfs allocates whole pages


# -- fixtures: real mounts --------------------------------------------------------------------


class Tmpfs:
    """A tmpfs mounted over a folder for one test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def remount(self, *, readonly: bool) -> None:
        """Make the filesystem read-only or writable again, in place (open files stay open)."""
        _mount("-o", f"remount,{'ro' if readonly else 'rw'}", str(self.path))

    def fill(self, *, leave_bytes: int) -> Path:
        """A filler file taking all the free space but `leave_bytes` (whole pages); its path."""
        status = os.statvfs(self.path)
        free = status.f_bavail * status.f_frsize
        filler = self.path / "filler.bin"
        filler.write_bytes(bytes(free - leave_bytes))
        status = os.statvfs(self.path)
        assert status.f_bavail * status.f_frsize == leave_bytes
        return filler


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {done.stderr.strip()}")


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Tmpfs]]:
    """Mount small tmpfs filesystems in a test; all are unmounted at its end, lazily if busy."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "64k") -> Tmpfs:
        path.mkdir(parents=True, exist_ok=True)
        try:
            _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        except OSError as error:
            pytest.skip(f"cannot mount a tmpfs (needs root): {error}")
        mounted.append(path)
        return Tmpfs(path)

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def daemons(tmpfs) -> Iterator[Daemons]:
    """Daemons started in a test; killed at its end, before its mounts go (hence `tmpfs`)."""
    pool = Daemons()
    yield pool
    pool.close()


# -- helpers ----------------------------------------------------------------------------------


def job_states(tmp_path: Path) -> Counter[str]:
    """How many jobs the journal holds in each state."""
    return Counter(row["state"] for row in journal_rows(tmp_path / "state" / JOURNAL_NAME))


def job_settled(tmp_path: Path) -> bool:
    """True once no job is queued (backoff included) or running."""
    states = job_states(tmp_path)
    return bool(states) and states["queued"] == 0 and states["running"] == 0


def log_lines(daemon: Daemon, text: str) -> list[str]:
    """The daemon's log lines that contain `text`."""
    return [line for line in daemon.log().splitlines() if text in line]


def assert_kept_safe(name: str, data: bytes, inbox: Path, outbox: Path) -> str:
    """The photo is whole in exactly one place: the inbox, or failed/ beside its error file."""
    in_inbox = inbox / name
    in_failed = outbox / "failed" / name
    places = [path for path in (in_inbox, in_failed) if path.exists()]
    assert len(places) == 1, f"{name} is in {places or 'neither the inbox nor failed/'}"
    assert places[0].read_bytes() == data
    if places[0] == in_failed:
        error = json.loads((outbox / "failed" / f"{name}.error.json").read_text(encoding="utf-8"))
        assert error["reason"]
    return "inbox" if places[0] == in_inbox else "failed"


def tree(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Everything below `root` but the `skip` top folders: path -> sha256, None for a folder."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else sha256(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.relative_to(root).parts[0] not in skip
    }


# -- 1. the outbox's disk fills up ------------------------------------------------------------


def test_events_wait_out_a_full_outbox_and_are_logged_once_space_returns(
    tmp_path, tmpfs, daemons
) -> None:
    """notify.events_log on a full disk: the event waits in the journal, nothing is half
    written, and it is appended once there is room. (The log rotates at every event, so each
    is written to a new file, which needs a page the full disk has not: an append to the last
    page of an old one could still fit.)"""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    disk = tmpfs(outbox, size="1m")
    notify = {"events_log": True, "events_log_max_mb": 0.0001}
    daemon = daemons.start(
        write_config(tmp_path, **FAULT_SETTINGS, notify=notify, originals={"policy": "keep"})
    )
    log = outbox / "events.jsonl"

    def logged() -> list[str]:
        files = [log.with_name(f"events.jsonl.{n}") for n in range(5, 0, -1)] + [log]
        lines = [line for f in files if f.exists() for line in f.read_text().splitlines()]
        return [json.loads(line)["type"] for line in lines]

    drop(inbox / "photo.jpg", photo_bytes(0))
    wait_for(lambda: log.exists() and "photo.done" in logged(), "the photo's event", daemon=daemon)
    filler = disk.fill(leave_bytes=0)
    drop(inbox / "again.jpg", photo_bytes(0))  # a duplicate: an event, and no result to write
    daemon.wait_for_log("No space left on device")
    with Journal.open_readonly(tmp_path / "state" / JOURNAL_NAME) as journal:
        assert journal.delivery_counts()["events_log"]["pending"] == 1
    assert logged() == ["daemon.started", "photo.done"]  # nothing half written
    filler.unlink()
    wait_for(lambda: logged()[-1] == "photo.duplicate", "the duplicate's event", daemon=daemon)
    assert logged() == ["daemon.started", "photo.done", "photo.duplicate"]


@pytest.mark.parametrize(
    "free_bytes",
    [
        pytest.param(0, id="nothing-fits"),
        pytest.param(
            PAGE_BYTES,
            id="the-image-fits-its-sidecar-does-not",
        ),
    ],
)
def test_a_full_outbox_pauses_work_and_the_photo_is_done_once_space_returns(
    tmp_path, tmpfs, daemons, free_bytes
) -> None:
    """A fault of the environment (issue 23): no attempt counted, nothing half published, the
    photo untouched; work goes on by itself once there is room."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    filler = tmpfs(outbox).fill(leave_bytes=free_bytes)
    config = write_config(tmp_path, **PATIENT_SETTINGS)
    daemon = daemons.start(config)
    daemon.wait_ready()
    data = photo_bytes(0)
    digest = drop(inbox / "full.jpg", data)

    daemon.wait_for_log("work waits:")
    [line] = log_lines(daemon, "work waits:")
    assert "outbox" in line and "full" in line, line
    assert daemon.count("attempt 1 failed") == 0
    assert results(outbox) == {}, "a partial output was published"
    assert temp_files(outbox) == []
    assert (inbox / "full.jpg").read_bytes() == data

    filler.unlink()  # space returns
    wait_for(
        lambda: results(outbox) == {"swirl": ["full.jpg", "full.json"]} and not files_under(inbox),
        "full.jpg done once space returned",
        daemon=daemon,
        state=lambda: (results(outbox), files_under(inbox)),
    )
    sidecar = json.loads((outbox / "swirl" / "full.json").read_text(encoding="utf-8"))
    assert sidecar["input_sha256"] == digest
    assert sidecar["attempt"] == 1  # the fault cost no attempt
    assert daemon.count("work goes on:") == 1
    assert (outbox / "originals" / "full.jpg").read_bytes() == data
    assert temp_files(outbox) == []


def test_an_outbox_that_stays_full_loses_nothing_and_fails_nothing(
    tmp_path, tmpfs, daemons
) -> None:
    # failed/ is on the same full disk. However long the fault lasts, the photo stays whole in
    # the inbox, queued, its attempts unspent; a later start with space back sees it through.
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    filler = tmpfs(outbox).fill(leave_bytes=0)
    config = write_config(tmp_path, **FAULT_SETTINGS)
    daemon = daemons.start(config)
    daemon.wait_ready()
    data = photo_bytes(1)
    drop(inbox / "stuck.jpg", data)

    daemon.wait_for_log("work waits:")
    time.sleep(4)  # longer than three attempts' backoff: none is spent
    assert job_states(tmp_path) == Counter({"queued": 1})
    [row] = journal_rows(tmp_path / "state" / JOURNAL_NAME)
    assert row["attempts"] == 0 and "No space left on device" in row["error"]
    assert assert_kept_safe("stuck.jpg", data, inbox, outbox) == "inbox"
    assert results(outbox) == {} and temp_files(outbox) == []
    assert daemon.process.poll() is None

    filler.unlink()  # space returns; here a restart (systemd's, or the user's) takes it
    daemon.kill()
    restart = daemons.start(config, once=True)
    assert restart.wait_exit(START_SECONDS + JOB_SECONDS) == 0, restart.log_tail()
    assert files_under(inbox) == []
    assert results(outbox) == {"swirl": ["stuck.jpg", "stuck.json"]}
    assert (outbox / "originals" / "stuck.jpg").read_bytes() == data
    assert temp_files(outbox) == []


def test_a_long_full_outbox_does_not_stop_the_daemon_and_every_photo_is_done(
    tmp_path, tmpfs, daemons
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    filler = tmpfs(outbox).fill(leave_bytes=0)
    config = write_config(tmp_path, **FAULT_SETTINGS)
    daemon = daemons.start(config)
    daemon.wait_ready()
    first = drop(inbox / "stuck.jpg", photo_bytes(1))
    daemon.wait_for_log("work waits:")
    later = drop(inbox / "later.jpg", photo_bytes(2))  # queued behind the pause
    time.sleep(3)
    assert job_states(tmp_path) == Counter({"queued": 2})
    filler.unlink()
    wait_for(
        lambda: {"stuck.json", "later.json"} <= set(results(outbox).get("swirl", [])),
        "both photos done once space returned",
        daemon=daemon,
    )
    made = {
        json.loads((outbox / "swirl" / name).read_text(encoding="utf-8"))["input_sha256"]
        for name in ("stuck.json", "later.json")
    }
    assert made == {first, later}


# -- 2. the outbox turns read-only ------------------------------------------------------------


def test_a_read_only_outbox_pauses_work_and_the_photo_is_done_once_writable(
    tmp_path, tmpfs, daemons
) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    outbox_fs = tmpfs(outbox, size="4m")
    config = write_config(tmp_path, **PATIENT_SETTINGS)
    daemon = daemons.start(config)
    daemon.wait_ready()
    outbox_fs.remount(readonly=True)
    data = photo_bytes(3)
    digest = drop(inbox / "ro.jpg", data)

    daemon.wait_for_log("work waits:")
    [line] = log_lines(daemon, "work waits:")
    assert "Read-only file system" in line, line
    assert daemon.count("attempt 1 failed") == 0
    assert daemon.process.poll() is None
    assert (inbox / "ro.jpg").read_bytes() == data
    assert files_under(outbox) == []

    outbox_fs.remount(readonly=False)
    wait_for(
        lambda: results(outbox) == {"swirl": ["ro.jpg", "ro.json"]} and not files_under(inbox),
        "ro.jpg done once the outbox is writable",
        daemon=daemon,
        state=lambda: (results(outbox), files_under(inbox)),
    )
    sidecar = json.loads((outbox / "swirl" / "ro.json").read_text(encoding="utf-8"))
    assert sidecar["input_sha256"] == digest and sidecar["attempt"] == 1
    assert (outbox / "originals" / "ro.jpg").read_bytes() == data
    assert daemon.process.poll() is None


# -- 3. state_dir cannot be written -----------------------------------------------------------


def _run_on_a_read_only_state_dir(tmp_path, tmpfs) -> tuple[subprocess.CompletedProcess, Path]:
    state = tmpfs(tmp_path / "state")
    state.remount(readonly=True)
    config = write_config(tmp_path)
    run = stylebox("run", "--config", config, cwd=tmp_path, timeout=START_SECONDS, make_roots=False)
    return run, state.path


def test_an_unwritable_state_dir_stops_the_start_with_one_line_naming_it(tmp_path, tmpfs) -> None:
    started = time.monotonic()
    run, state = _run_on_a_read_only_state_dir(tmp_path, tmpfs)
    assert run.returncode == ExitCode.STATE_DIR, run.stderr  # not restarted: see test_exit_codes
    assert time.monotonic() - started < 30
    [line] = run.stderr.strip().splitlines()
    assert "state_dir" in line and str(state) in line
    assert list(state.iterdir()) == []


def test_an_unwritable_state_dir_creates_nothing_elsewhere(tmp_path, tmpfs) -> None:
    run, _ = _run_on_a_read_only_state_dir(tmp_path, tmpfs)
    assert run.returncode == ExitCode.STATE_DIR, run.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.yaml", "state"]


# -- 4. the journal is deleted or damaged while the daemon is stopped -------------------------


def test_a_deleted_journal_is_rebuilt_and_finished_photos_are_not_redone(tmp_path) -> None:
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    journal = tmp_path / "state" / JOURNAL_NAME
    before = drop(inbox / "before.jpg", photo_bytes(0))
    first = stylebox("run", "--config", config, "--once", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert results(outbox) == {"swirl": ["before.jpg", "before.json"]}
    published = tree(outbox / "swirl")
    assert sorted(path.name for path in journal.parent.iterdir()) == [
        JOURNAL_NAME,
        "previews",
        "stylebox.lock",
    ]  # a clean stop leaves no -wal or -shm: the journal is this one file
    assert list((journal.parent / "previews").iterdir()) == []  # each went with its job

    journal.unlink()
    after = drop(inbox / "after.jpg", photo_bytes(1))
    second = stylebox("run", "--config", config, "--once", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert results(outbox) == {"swirl": ["after.jpg", "after.json", "before.jpg", "before.json"]}
    assert {k: v for k, v in tree(outbox / "swirl").items() if "before" in k} == published
    assert second.stderr.count("] queued ") == 1 and second.stderr.count(" -> preset ") == 1
    sidecar = json.loads((outbox / "swirl" / "after.json").read_text(encoding="utf-8"))
    assert sidecar["input_sha256"] == after and sidecar["attempt"] == 1
    assert sorted(path.name for path in (outbox / "originals").iterdir()) == [
        "after.jpg",
        "before.jpg",
    ]
    assert sha256((outbox / "originals" / "before.jpg").read_bytes()) == before
    assert files_under(inbox) == []
    rows = journal_rows(journal)  # a fresh journal: it knows only what it has seen
    assert [(Path(row["source_path"]).name, row["state"]) for row in rows] == [
        ("after.jpg", "done")
    ]


def _corrupt_header(data: bytearray, page_bytes: int) -> None:
    data[:100] = b"not a SQLite file " * 5 + b"\0" * 10  # the 100-byte database header


def _corrupt_middle(data: bytearray, page_bytes: int) -> None:
    start = len(data) // 2 // page_bytes * page_bytes  # the whole page holding the middle byte
    data[start : start + page_bytes] = b"\xde\xad\xbe\xef" * (page_bytes // 4)


@pytest.mark.parametrize(
    "corrupt", [_corrupt_header, _corrupt_middle], ids=["header", "middle-page"]
)
def test_a_corrupt_journal_is_refused_naming_it_and_the_remedy(tmp_path, corrupt) -> None:
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    journal = tmp_path / "state" / JOURNAL_NAME
    # What a stopped daemon leaves: a photo done (its output and moved original), one still queued.
    done_data, queued_data = photo_bytes(0), photo_bytes(1)
    drop(outbox / "swirl" / "done.jpg", b"a result")
    drop(outbox / "swirl" / "done.json", b"{}\n")
    drop(outbox / "originals" / "done.jpg", done_data)
    drop(inbox / "queued.jpg", queued_data)
    journal.parent.mkdir()
    with Journal(journal) as writer:
        for name, data in (("done", done_data), ("queued", queued_data)):
            writer.add(sha256(data), "swirl", "fingerprint", str(inbox / f"{name}.jpg"))
        job = writer.claim_next()
        assert job is not None
        painted = Painted([64, 48], 1.0, {"total": 1.0}, 1, "cpu", 1)
        writer.mark_done(job.id, [str(outbox / "swirl" / "done.jpg")], painted)
    assert sorted(path.name for path in journal.parent.iterdir()) == [JOURNAL_NAME]
    damaged = bytearray(journal.read_bytes())
    corrupt(damaged, page_bytes=int.from_bytes(damaged[16:18], "big"))
    journal.write_bytes(damaged)
    # The daemon's own log folder appears at every start (logs); nothing else may change.
    folders = {"inbox": tree(inbox), "outbox": tree(outbox, skip=("logs",))}

    run = stylebox("run", "--config", config, cwd=tmp_path, timeout=START_SECONDS)
    assert run.returncode == ExitCode.JOURNAL, run.stderr  # not restarted: see test_exit_codes
    assert str(journal) in run.stderr and "corrupt" in run.stderr
    assert "aside" in run.stderr  # the remedy: move it aside for a fresh one
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr  # refused before the model
    assert journal.read_bytes() == damaged  # left as it was, for whoever tries to rescue it
    assert {"inbox": tree(inbox), "outbox": tree(outbox, skip=("logs",))} == folders


# -- 5. the inbox share drops out and comes back ----------------------------------------------


def test_poll_mode_recovers_when_the_inbox_is_removed_and_recreated(tmp_path, daemons) -> None:
    # No rescan within the test: only a watcher that recovered can find the photo.
    watch = {"mode": "poll", "settle_seconds": 0.3, "poll_interval_seconds": 0.2}
    config = write_config(tmp_path, watch={**watch, "rescan_interval_seconds": 300})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()

    shutil.rmtree(inbox)
    daemon.wait_for_log(f"inbox {inbox} is missing")
    inbox.mkdir()
    daemon.wait_for_log(f"inbox {inbox} is back")
    digest = drop(inbox / "after_blip.jpg", photo_bytes(0))
    wait_for(
        lambda: results(outbox) == {"swirl": ["after_blip.jpg", "after_blip.json"]},
        "after_blip.jpg",
        daemon=daemon,
    )
    sidecar = json.loads((outbox / "swirl" / "after_blip.json").read_text(encoding="utf-8"))
    assert sidecar["input_sha256"] == digest
    assert daemon.count(" -> preset ") == 1
    assert daemon.process.poll() is None
