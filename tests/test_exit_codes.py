"""Exit codes against the systemd unit: an error a restart cannot fix must end in a code listed in
RestartPreventExitStatus=, or `Restart=on-failure` starts the daemon every 5 s forever.

The daemon runs for real (`stylebox run`) on each unfixable start-up fault; none of them gets as
far as loading the model, so each run takes a few seconds.
"""

import fcntl
import os
import sqlite3
from pathlib import Path

from daemon_harness import REPO, START_SECONDS, STYLES, stylebox, write_config

from daemon import errors
from daemon.config import JOURNAL_NAME
from daemon.errors import ExitCode
from daemon.service.journal import Journal

UNIT = REPO / "systemd" / "stylebox.service"


def unit_settings(name: str) -> list[str]:
    """Every value of `name=` in the [Service] section of the unit, split on whitespace."""
    values: list[str] = []
    section = None
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith(f"{name}="):
            values.extend(line.partition("=")[2].split())
    return values


def restart_prevented() -> set[int]:
    """The exit statuses after which systemd does not restart the daemon."""
    return {int(value) for value in unit_settings("RestartPreventExitStatus") if value.isdigit()}


def test_the_unit_restarts_on_every_code_but_those_a_restart_cannot_fix() -> None:
    assert unit_settings("Restart") == ["on-failure"]  # restarts on any non-zero code not listed
    assert restart_prevented() == {int(code) for code in errors.NO_RESTART}
    assert ExitCode.FAILURE not in restart_prevented()  # a crash or a poisoned device: restart
    assert ExitCode.OK not in errors.NO_RESTART  # on-failure never restarts a clean exit anyway


def run_daemon(tmp_path: Path, make_roots: bool = True, **config: object) -> tuple[int, str]:
    """`stylebox run` to its end on a config with these overrides: (exit code, stderr)."""
    path = write_config(tmp_path, **config)
    run = stylebox(
        "run", "--config", path, cwd=tmp_path, timeout=START_SECONDS, make_roots=make_roots
    )
    # The refusal is all it says: it stopped before the slow part of the start (the model).
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    return run.returncode, run.stderr


def test_a_bad_config_is_not_restarted(tmp_path: Path) -> None:
    code, stderr = run_daemon(tmp_path, retries={"max_attempts": 0})
    assert code in restart_prevented(), stderr
    assert code == ExitCode.USAGE


def test_a_state_dir_that_is_a_file_is_not_restarted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a folder\n")
    code, stderr = run_daemon(tmp_path, make_roots=False)  # state_dir is looked at first
    assert code in restart_prevented(), stderr
    assert code == errors.ExitCode.STATE_DIR
    [line] = stderr.strip().splitlines()
    assert "state_dir" in line and str(state) in line and "not a folder" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.yaml", "state"]


def test_a_journal_from_a_newer_stylebox_is_not_restarted(tmp_path: Path) -> None:
    journal = tmp_path / "state" / JOURNAL_NAME
    journal.parent.mkdir()
    Journal(journal).close()
    with sqlite3.connect(journal) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    code, stderr = run_daemon(tmp_path)
    assert code in restart_prevented(), stderr
    assert code == errors.ExitCode.JOURNAL
    assert str(journal) in stderr and "schema version 99" in stderr


def test_a_state_dir_locked_by_another_daemon_is_restarted(tmp_path: Path) -> None:
    """The lock's holder is a daemon outside this unit (systemd restarts only once the unit's
    own process has exited, and flock dies with it), such as a manual `stylebox run --once`:
    once it ends, a restart must bring the service back."""
    state = tmp_path / "state"
    state.mkdir()
    fd = os.open(state / "stylebox.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, stderr = run_daemon(tmp_path)
    finally:
        os.close(fd)
    assert code not in restart_prevented(), stderr
    assert code == errors.ExitCode.LOCKED
    assert "another stylebox daemon" in stderr


def test_a_lock_file_that_cannot_be_opened_is_a_state_dir_fault(tmp_path: Path) -> None:
    (tmp_path / "state" / "stylebox.lock").mkdir(parents=True)  # or root's, for the service user
    code, stderr = run_daemon(tmp_path)
    assert code in restart_prevented(), stderr
    assert code == errors.ExitCode.STATE_DIR
    assert "stylebox.lock" in stderr and "cannot open the lock" in stderr


def test_weights_that_are_not_vgg19_are_not_restarted(tmp_path: Path) -> None:
    weights = tmp_path / "vgg.pth"
    weights.write_bytes(b"not a state dict")
    preset = {"style": str(STYLES / "swirl.png"), "size": 16, "steps": 1, "weights": str(weights)}
    config = write_config(tmp_path, presets={"swirl": preset})
    run = stylebox("run", "--config", config, cwd=tmp_path, timeout=START_SECONDS)
    assert run.returncode in restart_prevented(), run.stderr
    assert run.returncode == errors.ExitCode.WEIGHTS
    error = run.stderr.strip().splitlines()[-1]  # after "loading VGG-19": it fails loading it
    assert str(weights) in error and "not a loadable weights file" in error


def test_a_journal_held_locked_mid_run_ends_the_daemon_for_a_restart(tmp_path: Path, daemons):
    """Someone holds a write lock on the journal (an sqlite3 shell left in a transaction) past the
    busy timeout: the worker cannot claim a job, so the daemon must exit, with a code systemd
    restarts on (the lock may be gone by then), rather than idle on with a dead worker."""
    config = write_config(tmp_path, logging={"level": "DEBUG", "file": False})
    daemon = daemons.start(config)
    daemon.wait_ready()
    conn = sqlite3.connect(tmp_path / "state" / JOURNAL_NAME, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        code = daemon.wait_exit(30)
    finally:
        conn.close()
    assert code not in restart_prevented() and code == ExitCode.FAILURE, daemon.log_tail()
    assert "stayed locked" in daemon.log_tail(5)
