"""The daemon's log as a reader (or a parser) sees it: one line a record whatever a photo's
name holds, every name readable, no local variables in a traceback, and a log file on a full
disk that costs stderr one line when it stops and one when it takes lines again (issue 23)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    Daemon,
    Daemons,
    drop,
    journal_rows,
    photo_bytes,
    wait_for,
    write_config,
)
from loguru import logger

from daemon.config import load_config
from daemon.service.logs import LOG_FILE_NAME, configure_logging, escaped

RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+ +\S")  # LOG_FORMAT's start
FORGED = "2024-01-01 00:00:00 ERROR   journal corrupt"


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Path]:
    """The daemon's logging configured in this process, to a log file in tmp_path's outbox;
    the test's own sinks are put back after."""
    for folder in ("inbox", "outbox", "state"):
        (tmp_path / folder).mkdir()
    config = load_config(write_config(tmp_path))
    configure_logging(config)
    yield config.log_dir / LOG_FILE_NAME
    logger.remove()
    logger.add(os.sys.stderr)


def _file_lines(path: Path) -> list[str]:
    logger.complete()  # the file is written from a queue
    return path.read_text(encoding="utf-8").splitlines()


def test_escaped_keeps_text_on_one_readable_line() -> None:
    assert escaped("plain name.jpg") == "plain name.jpg"
    assert escaped("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escaped("bell\x07 del\x7f csi\x9b") == "bell\\x07 del\\x7f csi\\x9b"
    assert escaped("caf\udce9.jpg") == "caf\\xe9.jpg"  # os.fsdecode(b"caf\xe9.jpg")
    assert escaped("evil\u202egpj.exe \u2028x") == "evil\\u202egpj.exe \\u2028x"
    assert escaped("café ☕ 写真.jpg") == "café ☕ 写真.jpg"  # what is printable stays as it is


def test_a_record_is_one_line_and_its_traceback_has_no_local_variables(logged: Path) -> None:
    name = f"a\n{FORGED}.jpg"
    secret = "the value of a local variable"
    logger.bind(job=7).info("queued {}", name)
    logger.info("not UTF-8: {}", os.fsdecode(b"caf\xe9.jpg"))
    try:
        raise ValueError(f"cannot read {name}")
    except ValueError as exc:
        logger.opt(exception=exc).error("failed: {} ({})", name, len(secret))
    lines = _file_lines(logged)
    assert lines[0].endswith(f"INFO    [job 7] queued a\\n{FORGED}.jpg")
    assert lines[1].endswith("not UTF-8: caf\\xe9.jpg")
    assert RECORD.match(lines[2]) and lines[2].endswith(f"failed: a\\n{FORGED}.jpg (29)")
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == f"ValueError: cannot read a\\n{FORGED}.jpg"
    assert not any(line.startswith(FORGED[:10]) for line in lines)
    assert secret not in "\n".join(lines)  # loguru's diagnose would show it


# -- the real daemon -----------------------------------------------------------------------------


def _roots(folder: Path) -> None:
    """The inbox, outbox and state_dir: the user's to make (the daemon never makes them)."""
    for name in ("inbox", "outbox", "state"):
        (folder / name).mkdir(exist_ok=True)


def _log_file(folder: Path) -> list[str]:
    return (folder / "outbox" / "logs" / LOG_FILE_NAME).read_text(encoding="utf-8").splitlines()


def _stop(daemon: Daemon) -> None:
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0, daemon.log_tail()


def test_a_newline_in_a_photos_name_forges_no_log_line(tmp_path: Path, daemons: Daemons) -> None:
    """Before: the name's newline started a line of the log's own form, `... ERROR journal
    corrupt`, that no record wrote."""
    name = f"IMG\n{FORGED}\n.jpg"
    _roots(tmp_path)
    drop(tmp_path / "inbox" / name, photo_bytes(0))
    daemon = daemons.start(write_config(tmp_path))
    wait_for(
        lambda: (
            [row["state"] for row in journal_rows(tmp_path / "state/journal.sqlite3")] == ["done"]
        ),
        "the photo done",
        daemon=daemon,
    )
    _stop(daemon)
    lines = _log_file(tmp_path)
    assert [line for line in lines if not RECORD.match(line)] == []  # one line a record
    assert not any(line.startswith(FORGED[:19]) for line in lines)  # no forged line
    # the name escaped, or (in the result's and the moved original's names) made safe
    assert all(re.findall(rf"(?<!\\n)(?<!_){FORGED}", line) == [] for line in lines)
    assert any(line.endswith(f"queued IMG\\n{FORGED}\\n.jpg for preset swirl") for line in lines)
    # stderr (journald under systemd) has the same lines
    assert [line for line in daemon.log().splitlines() if not RECORD.match(line)] == []


def test_a_name_that_is_not_utf8_is_logged_readably(tmp_path: Path, daemons: Daemons) -> None:
    """Before: loguru's file sink raised UnicodeEncodeError on the name's lone surrogate and
    printed its own traceback to stderr for every record that named it."""
    _roots(tmp_path)
    inbox = tmp_path / "inbox"
    fd = os.open(os.fsencode(inbox) + b"/caf\xe9.jpg", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, photo_bytes(1))
    os.close(fd)
    daemon = daemons.start(write_config(tmp_path))
    daemon.wait_ready()
    log_file = tmp_path / "outbox" / "logs" / LOG_FILE_NAME
    wait_for(
        lambda: "caf\\xe9.jpg" in log_file.read_text(encoding="utf-8"),
        "the name in the log file, escaped",
        daemon=daemon,
    )
    _stop(daemon)
    stderr = daemon.log()
    assert "Logging error" not in stderr and "\\udce9" not in stderr, stderr[-3000:]
    assert "caf\\xe9.jpg" in stderr
    log_file.read_bytes().decode("utf-8")  # whole UTF-8: nothing half-encoded in it


# -- a full disk under the log file (a tmpfs: needs root) ------------------------------------------


@pytest.fixture
def small_outbox(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted as the outbox (its logs/ holds the log file)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    _roots(tmp_path)
    outbox = tmp_path / "outbox"
    _mount_tmpfs(outbox)
    try:
        yield outbox
    finally:
        subprocess.run(["umount", "-l", str(outbox)], check=False)


def _mount_tmpfs(folder: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return filler


def _bad_request(url: str) -> None:
    """Something the page logs one line for: a request that is not HTTP."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        connection.recv(1024)


def test_a_full_disk_under_the_log_file_costs_stderr_two_lines(
    tmp_path: Path, daemons: Daemons, small_outbox: Path
) -> None:
    """Before: loguru's catch printed a traceback per failed write to stderr."""
    daemon = daemons.start(write_config(tmp_path))
    url = daemon.web_url()
    daemon.wait_ready()
    filler = _fill(small_outbox)
    invalid = "Invalid HTTP request received"
    sent = 0
    while daemon.count("cannot write to it") == 0 and sent < 500:  # the page's slack first
        _bad_request(url)
        sent += 1
        daemon.wait_for_log(invalid, times=sent)
    for _ in range(20):  # lines while the disk stays full
        _bad_request(url)
        sent += 1
    daemon.wait_for_log(invalid, times=sent)
    stderr = daemon.log()
    assert daemon.count("cannot write to it (No space left on device)") == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "Logging error" not in stderr, stderr[-3000:]
    daemon.send(signal.SIGHUP)  # a reload in the outage: still no second line
    daemon.wait_for_log("config reloaded")
    filler.unlink()
    _bad_request(url)
    daemon.wait_for_log("writing to it again")
    wait_for(
        lambda: any("writing to it again" in line for line in _log_file(tmp_path)),
        "the log file to say so too",
        daemon=daemon,
    )
    _bad_request(url)
    sent += 2
    wait_for(
        lambda: (
            sum(invalid in line for line in _log_file(tmp_path)) >= 1
            and invalid in _log_file(tmp_path)[-1]
        ),
        "the log file to take lines again",
        daemon=daemon,
    )
    assert daemon.count("cannot write to it") == 1 and daemon.count("writing to it again") == 1
    _stop(daemon)


def test_nothing_is_logged_under_the_mount_point_of_a_share_gone(
    tmp_path: Path, daemons: Daemons, small_outbox: Path
) -> None:
    """Issue 23: with the outbox's share not mounted, the log and events.jsonl went to the
    local disk under the mount point, where nobody looks."""
    config = write_config(tmp_path, notify={"events_log": True})
    daemon = daemons.start(config)
    url = daemon.web_url()
    daemon.wait_ready()
    events_log = small_outbox / "events.jsonl"
    wait_for(lambda: events_log.exists(), "the daemon.started event", daemon=daemon)
    subprocess.run(["umount", "-l", str(small_outbox)], check=True)  # the share goes
    invalid = "Invalid HTTP request received"
    before = daemon.count(invalid)
    for sent in range(1, 6):
        _bad_request(url)
        daemon.wait_for_log(invalid, times=before + sent)
    daemon.wait_for_log("logging to stderr only until it can")
    (line,) = [line for line in daemon.log().splitlines() if "stderr only" in line]
    assert f"log file {small_outbox}/logs/stylebox.log: outbox {small_outbox} is no" in line
    daemon.send(signal.SIGHUP)  # a reload opens the log file again: not under the mount point
    daemon.wait_for_log("config reloaded")
    _bad_request(url)
    daemon.wait_for_log(invalid, times=before + 6)
    assert list(small_outbox.iterdir()) == []  # the local disk under the mount point
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small_outbox)], check=True
    )
    _bad_request(url)
    daemon.wait_for_log("writing to it again")
    assert daemon.count("logging to stderr only") == 1
    _stop(daemon)  # daemon.stopped: into the share mounted again
    assert "daemon.stopped" in events_log.read_text(encoding="utf-8")
    assert (small_outbox / "logs" / LOG_FILE_NAME).exists()
