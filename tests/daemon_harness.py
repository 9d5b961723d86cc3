"""The real daemon as a subprocess, for end-to-end tests: its config, photos to drop, its log.

Everything waits on a deadline while polling a condition; a daemon that dies while a test waits on
it fails the wait at once, with the tail of its log in the message.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

import psutil
import yaml
from PIL import Image, ImageOps

from daemon.outbox import TEMP_PREFIX

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"  # for bench/ only: the tests need nothing beside the clone
STYLES = REPO / "styles"
SAMPLE_PHOTO = REPO / "samples" / "grace_hopper.jpg"
# What photo_bytes crops and tints into distinct photos: what the clone ships (the sample photo
# and the paintings the tiny presets do not paint with), so the tests need nothing beside it.
SOURCE_PHOTOS = (
    SAMPLE_PHOTO,
    STYLES / "shipwreck.jpg",
    STYLES / "great_wave.png",
    STYLES / "the_scream.jpg",
)
START_SECONDS = 90.0  # VGG-19 loads in ~3 s; other test runs may share the CPUs
JOB_SECONDS = 60.0  # a tiny preset takes ~1 s; the slow one, run after a restart, far more
_READY_LINE = "outputs go to"  # the service logs it right before READY=1
_WEB_LINE = "web page at http://"
_WEB_URL = re.compile(r"web page at (http://\S+?)/ ")
# The level after each line's timestamp (daemon.service.logs.LOG_FORMAT); a traceback's lines
# follow their ERROR line without one.
_LOG_LEVEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ([A-Z]+) ", re.MULTILINE)

T = TypeVar("T")


def tiny_preset(style: str = "swirl.png", **settings: Any) -> dict[str, Any]:
    """A preset that stylises a small photo in about a second on a CPU."""
    return {"style": str(STYLES / style), "size": 40, "steps": 4, **settings}


def make_roots_of(config: Path) -> None:
    """The inbox, outbox and state_dir a config names, made if missing (a file in a root's
    place, or a config that does not parse, is left for the daemon to refuse)."""
    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return
    if not isinstance(document, dict):
        return
    for key in ("inbox", "outbox", "state_dir"):
        value = document.get(key)
        if isinstance(value, str):
            root = Path(value) if Path(value).is_absolute() else config.parent / value
            if not os.path.lexists(root):
                root.mkdir(parents=True, exist_ok=True)


def write_config(folder: Path, *, name: str = "config.yaml", **overrides: Any) -> Path:
    """A daemon config with its folders in `folder` and two tiny presets, swirl and glass."""
    document: dict[str, Any] = {
        "inbox": str(folder / "inbox"),
        "outbox": str(folder / "outbox"),
        "state_dir": str(folder / "state"),
        "device": "cpu",
        "presets": {"swirl": tiny_preset(), "glass": tiny_preset("stained_glass.png")},
        "routing": {"default_preset": "swirl"},
        "watch": {
            "settle_seconds": 0.3,
            "poll_interval_seconds": 0.2,
            "rescan_interval_seconds": 2,
        },
        "retries": {"max_attempts": 2, "backoff_seconds": 0.5},
        "logging": {"level": "DEBUG"},
        "web": {"listen": "127.0.0.1:0"},  # a free port, named in the log (Daemon.web_url)
    }
    document.update(overrides)
    path = folder / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@cache
def _source_photo(index: int) -> Image.Image:
    with Image.open(SOURCE_PHOTOS[index % len(SOURCE_PHOTOS)]) as image:
        return image.convert("RGB")


def photo_bytes(variant: int, *, format: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small photo, distinct for each `variant`: another source, crop and colour cast."""
    source = _source_photo(variant)
    width, height = source.size
    shift = (variant * 37) % 20 / 100  # a different crop for each variant
    box = (int(width * shift), int(height * shift), int(width * (0.8 + shift)), int(height * 0.8))
    image = ImageOps.fit(source.crop(box), size)
    tint = Image.new(
        "RGB", size, ((variant * 67) % 256, (variant * 131) % 256, (variant * 29) % 256)
    )
    image = Image.blend(image, tint, 0.2)
    buffer = io.BytesIO()
    image.save(buffer, format=format, **({"quality": 90} if format == "JPEG" else {}))
    return buffer.getvalue()


def drop(path: Path, data: bytes) -> str:
    """Write a photo straight into place (as a program saving into the inbox would); its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha256(data)


def sha256(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    """Every file (not folder) below `root`, sorted."""
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def temp_files(root: Path) -> list[Path]:
    """The outbox's temporary files left anywhere below `root`."""
    return sorted(root.rglob(f"{TEMP_PREFIX}*"))


def results(outbox: Path, presets: tuple[str, ...] = ("swirl", "glass")) -> dict[str, list[str]]:
    """The names in each preset folder of the outbox (only non-empty folders appear)."""
    found = {}
    for preset in presets:
        folder = outbox / preset
        names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if names:
            found[preset] = names
    return found


def wait_for(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = JOB_SECONDS,
    daemon: Daemon | None = None,
    state: Callable[[], object] | None = None,
) -> T:
    """Poll `condition` until it is truthy (returning its value); fail after `timeout` seconds.

    With `daemon`, also fail as soon as that daemon exits, since it then cannot make `condition`
    come true; the failure shows its log, and what `state` returns then.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if daemon is not None and daemon.process.poll() is not None:
            problem = f"the daemon exited ({daemon.process.returncode})"
        elif time.monotonic() > deadline:
            problem = f"timed out after {timeout:g} s"
        else:
            time.sleep(0.05)
            continue
        details = [f"{problem} waiting for {what}"]
        if state is not None:
            details.append(f"now: {state()}")
        if daemon is not None:
            details.append(daemon.log_tail())
        raise AssertionError("\n".join(details))


def daemon_env(**extra: str) -> dict[str, str]:
    """The environment for a daemon: ours, minus any systemd notify variables we may run under."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Daemon:
    """One `stylebox run` process (or `stylebox worker`, with `command`), its stdout and stderr
    in files next to the config."""

    _serial = itertools.count(1)

    def __init__(
        self,
        config: Path,
        *,
        once: bool = False,
        env: dict[str, str] | None = None,
        command: str = "run",
        make_roots: bool = True,
    ):
        """`make_roots`: make the inbox, outbox and state_dir first, as a user (or a mount)
        does: the daemon never makes them."""
        if make_roots and command == "run":
            make_roots_of(config)
        serial = next(self._serial)
        self.config = config
        name = "daemon" if command == "run" else command
        self.stdout_path = config.parent / f"{name}-{serial}.stdout"
        self.stderr_path = config.parent / f"{name}-{serial}.stderr"
        command = [sys.executable, "-m", "daemon", command, "--config", str(config)]
        if once:
            command.append("--once")
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                command, stdout=stdout, stderr=stderr, cwd=config.parent, env=env or daemon_env()
            )

    def log(self) -> str:
        """Everything the daemon has logged so far (stderr)."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, for failure messages."""
        return "\n".join(self.log().splitlines()[-lines:])

    def count(self, text: str) -> int:
        """How many log lines contain `text`."""
        return sum(text in line for line in self.log().splitlines())

    def levels(self) -> Counter[str]:
        """How many log lines the daemon wrote at each level (INFO, ERROR, ...)."""
        return Counter(match[1] for match in _LOG_LEVEL.finditer(self.log()))

    def wait_for_log(self, text: str, *, times: int = 1, timeout: float = JOB_SECONDS) -> None:
        """Wait until `text` appears on at least `times` log lines."""
        wait_for(
            lambda: self.count(text) >= times, f"{text!r} in the log", timeout=timeout, daemon=self
        )

    def wait_ready(self) -> None:
        """Wait until the model is loaded and the inbox watched."""
        self.wait_for_log(_READY_LINE, timeout=START_SECONDS)

    def web_url(self, timeout: float = START_SECONDS) -> str:
        """The web page's address, from the daemon's log line, without the final slash."""
        self.wait_for_log(_WEB_LINE, timeout=timeout)
        return _WEB_URL.search(self.log())[1]

    def send(self, signum: signal.Signals) -> None:
        """Send a signal to the daemon."""
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the daemon to exit; its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the daemon did not exit within {timeout:g} s\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL, if still running, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


class Daemons:
    """Starts daemons for one test and kills whatever is left of them at its end."""

    def __init__(self) -> None:
        self.started: list[Daemon] = []

    def start(self, config: Path, **options: Any) -> Daemon:
        """Start a daemon (see Daemon)."""
        daemon = Daemon(config, **options)
        self.started.append(daemon)
        return daemon

    def close(self) -> None:
        """Kill every daemon still running."""
        for daemon in self.started:
            daemon.kill()


def stylebox(
    *args: object, cwd: Path = REPO, timeout: float = 180, make_roots: bool = True
) -> subprocess.CompletedProcess:
    """Run a stylebox sub-command to its end, as `python -m daemon`; for those that check the
    config's roots, they are made first (`make_roots`), as a user does."""
    commands = ("run", "check", "notify-test")  # those that ask for the roots
    if make_roots and args and args[0] in commands and "--config" in map(str, args):
        given = Path(str(args[list(map(str, args)).index("--config") + 1]))
        make_roots_of(given if given.is_absolute() else cwd / given)
    command = [sys.executable, "-m", "daemon", *map(str, args)]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=daemon_env()
    )


# -- looking in from outside: the journal and the process, as `stylebox status` and top would ---


_TABLE_ORDER = {"jobs": "id", "files": "path"}


def journal_rows(journal: Path, table: Literal["jobs", "files"] = "jobs") -> list[dict[str, Any]]:
    """Every row of a journal table (jobs in id order, or the hash memo of files by path), read
    through a read-only connection.

    The daemon keeps WAL on, so this never blocks it; a journal not yet created (no file, or
    its schema not yet committed) reads as no rows.
    """
    if not journal.is_file():
        return []
    conn = sqlite3.connect(journal.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        query = f"SELECT * FROM {table} ORDER BY {_TABLE_ORDER[table]}"
        try:
            return [dict(row) for row in conn.execute(query)]
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise
    finally:
        conn.close()


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process now, in KiB; None once it is gone."""
    try:
        rss = psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return None
    return rss // 1024 or None  # a zombie reads as 0


def reset_peak_rss(pid: int) -> None:
    """Make a process's peak resident memory (VmHWM) its current one, so a peak can be timed."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_kib(pid: int) -> int:
    """A process's peak resident memory since start or `reset_peak_rss`, in KiB (VmHWM: psutil
    has no such field, and ru_maxrss cannot be reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise KeyError(f"/proc/{pid}/status has no VmHWM")


def photo_cost_kib(
    daemon: Daemon, staged: Path, inbox: Path, journal: Path, timeout: float = 60.0
) -> int:
    """What one photo costs a ready daemon with an empty journal at its peak, in KiB above its
    memory at rest: `staged` is moved into `inbox` whole (no settling on a write) and its job,
    the journal's only one, waited for."""
    pid = daemon.process.pid
    rest_kib = rss_kib(pid) or 0
    reset_peak_rss(pid)
    os.rename(staged, inbox / staged.name)
    wait_for(
        lambda: [row["state"] for row in journal_rows(journal)] == ["done"],
        f"{staged.name} done",
        timeout=timeout,
        daemon=daemon,
    )
    return peak_rss_kib(pid) - rest_kib


def slow_fsync_env(folder: Path, seconds: float) -> dict[str, str]:
    """Environment that makes every os.fsync in a daemon take `seconds` longer, as on a slow disk.

    A crash test wants kills to land while outputs are written and originals moved; on a fast
    local disk those windows are a fraction of a millisecond. A sitecustomize module, found
    through PYTHONPATH, wraps os.fsync; the daemon's code is not touched. SQLite's own syncs are
    C calls and stay as they are.
    """
    hooks = folder / "slow-fsync-hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "sitecustomize.py").write_text(
        "import os\n"
        "import time\n"
        "\n"
        "_fsync = os.fsync\n"
        "\n"
        "\n"
        "def _slow_fsync(fd):\n"
        f"    time.sleep({seconds!r})\n"
        "    _fsync(fd)\n"
        "\n"
        "\n"
        "os.fsync = _slow_fsync\n",
        encoding="utf-8",
    )
    path = [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def http_request(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One real HTTP request (redirects not followed): status, headers (lower-case), body."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()
