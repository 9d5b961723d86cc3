"""Settings from the environment (containers): STYLEBOX_<SECTION>_<KEY> over config.yaml, checked
like the file, each problem named by its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigErrors, load_config
from tests.daemon_harness import daemon_env, stylebox, write_config


def test_variables_override_the_file_with_their_types(tmp_path: Path) -> None:
    config = write_config(tmp_path, watch={"mode": "native", "settle_seconds": 0.3})
    environ = {
        "STYLEBOX_WATCH_MODE": "poll",
        "STYLEBOX_WATCH_POLL_INTERVAL_SECONDS": "2.5",
        "STYLEBOX_BATCH_SIZE": "4",
        "STYLEBOX_WEB_ENABLED": "false",
        "STYLEBOX_OUTPUT_FILE_MODE": "0640",
        "STYLEBOX_QUEUE_URL": "redis://redis:6379/0",
        "STYLEBOX_OUTBOX": str(tmp_path / "elsewhere"),
        "STYLEBOX_ORIGINALS_MOVE_TO": "",  # empty: not given (compose's ${VAR:-})
        "STYLEBOX_REQUIRE_BROWSER": "1",  # no section's name: someone else's variable
    }
    loaded = load_config(config, environ)
    assert loaded.watch.mode == "poll" and loaded.watch.poll_interval_seconds == 2.5
    assert loaded.watch.settle_seconds == 0.3  # the file's, untouched
    assert loaded.batch_size == 4 and loaded.web.enabled is False
    assert loaded.output.file_mode == 0o640
    assert loaded.queue.url == "redis://redis:6379/0"
    assert loaded.outbox == tmp_path / "elsewhere"
    assert loaded.originals.move_to is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("STYLEBOX_WATCH_MODE", "sometimes", "STYLEBOX_WATCH_MODE (environment, over "),
        ("STYLEBOX_BATCH_SIZE", "two", ": batch_size: Input should be a valid integer"),
        ("STYLEBOX_WEB_ENABLED", "maybe", ": web.enabled: Input should be a valid boolean"),
        ("STYLEBOX_QUEUE_URL", "http://x/", ": queue.url: expected a redis://"),
        ("STYLEBOX_WATCH_MOD", "poll", "no such setting; did you mean 'STYLEBOX_WATCH_MODE'?"),
    ],
)
def test_a_bad_variable_is_refused_by_its_name(
    tmp_path: Path, name: str, value: str, expected: str
) -> None:
    config = write_config(tmp_path)
    with pytest.raises(ConfigErrors) as caught:
        load_config(config, {name: value})
    (line,) = caught.value.errors
    assert line.startswith(name) and expected in line, line


def test_stylebox_check_reads_the_environment(tmp_path: Path, monkeypatch) -> None:
    config = write_config(tmp_path)
    monkeypatch.setenv("STYLEBOX_OUTPUT_QUALITY", "500")
    run = stylebox("check", "--config", config)
    assert run.returncode == 2
    assert "STYLEBOX_OUTPUT_QUALITY (environment, over" in run.stderr
    assert "output.quality: Input should be less than or equal to 100, got 500" in run.stderr
    assert "STYLEBOX_OUTPUT_QUALITY" in daemon_env()  # what the daemons of the tests inherit
