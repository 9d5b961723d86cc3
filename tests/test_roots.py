"""The inbox, outbox and state_dir are the user's (often shares): never created by the daemon,
refused when missing, and one daemon at a time on each (issue 23)."""

from __future__ import annotations

from pathlib import Path

from daemon_harness import START_SECONDS, Daemons, stylebox, wait_for, write_config

from daemon.errors import ExitCode


def test_a_missing_root_is_refused_by_check_and_run_and_never_created(tmp_path: Path) -> None:
    """Most often a share that is not mounted: writing under its mount point would put the
    results where nobody looks. `run` exits 1, so that systemd tries again later."""
    config = write_config(tmp_path)
    for folder in ("inbox", "state"):
        (tmp_path / folder).mkdir()
    check = stylebox("check", "--config", config, make_roots=False)
    assert check.returncode == ExitCode.USAGE
    [line] = [line for line in check.stderr.splitlines() if "outbox" in line]
    assert f"config.yaml:2: outbox: outbox {tmp_path / 'outbox'} does not exist" in line, line
    assert "is the share mounted?" in line
    run = stylebox("run", "--config", config, timeout=START_SECONDS, make_roots=False)
    assert run.returncode == ExitCode.FAILURE, run.stderr
    assert "does not exist: is the share mounted?" in run.stderr
    assert not (tmp_path / "outbox").exists()


def test_a_second_daemon_on_the_same_inbox_and_outbox_is_refused(
    tmp_path: Path, daemons: Daemons
) -> None:
    """Another state_dir would be another journal, and both would paint every photo."""
    first = write_config(tmp_path)
    second = write_config(tmp_path, name="second.yaml", state_dir=str(tmp_path / "state2"))
    daemon = daemons.start(first)
    wait_for(lambda: "outputs go to" in daemon.log(), "the first daemon ready", daemon=daemon)
    run = stylebox("run", "--config", second, timeout=START_SECONDS)
    assert run.returncode == ExitCode.LOCKED, run.stderr
    assert "another stylebox daemon uses this inbox (with a state_dir of its own)" in run.stderr
    assert not (tmp_path / "state2" / "journal.sqlite3").exists()
    assert daemon.process.poll() is None
    daemon.kill()
    # a lock held by a process ends with it: the second starts once the first is gone
    again = stylebox("run", "--config", second, "--once", timeout=START_SECONDS + 60)
    assert again.returncode == 0, again.stderr
