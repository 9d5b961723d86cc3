"""Several hosts on one machine: a real redis-server on a loopback port, a coordinator and worker
hosts as subprocesses, each worker with a config of its own (for tests and bench/)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.daemon_harness import (
    START_SECONDS,
    Daemon,
    Daemons,
    tiny_preset,
    wait_for,
    write_config,
)

HEARTBEAT_SECONDS = 3.0  # a killed worker's job goes to another after this (2 s at least)


def cluster_presets() -> dict[str, Any]:
    return {"swirl": tiny_preset(size=48, steps=25)}  # about a second a photo here


def redis_server_binary() -> str | None:
    """Debian's redis-server (`.ci/run` installs it)."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1, nothing saved to disk (a restart empties it), stopped by its
    pid; `restart` brings it back on the same port."""

    def __init__(self, folder: Path) -> None:
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
        self.binary = binary
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
                "--protected-mode", "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_for(lambda: self._answers(client), "redis-server to answer", timeout=20)

    @staticmethod
    def _answers(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Killed and started again: everything it held is gone, as after a crash without
        persistence (or a FLUSHALL)."""
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def cluster_configs(
    folder: Path, redis_url: str, workers: int, **overrides: Any
) -> tuple[Path, list[Path]]:
    """The coordinator's config (no local worker) and one per worker host, each worker with its
    own state_dir, all on the same inbox and outbox (one share, mounted alike)."""
    queue = {"url": redis_url, "local_worker": False, "heartbeat_seconds": HEARTBEAT_SECONDS}
    overrides.setdefault("presets", cluster_presets())
    coordinator = write_config(folder, queue=queue, **overrides)
    hosts = []
    for index in range(workers):
        hosts.append(
            write_config(
                folder,
                name=f"worker-{index + 1}.yaml",
                state_dir=str(folder / f"worker-{index + 1}-state"),
                queue={**queue, "local_worker": True},
                **overrides,
            )
        )
    return coordinator, hosts


def start_worker(daemons: Daemons, config: Path) -> Daemon:
    """`stylebox worker`, once it takes jobs."""
    worker = daemons.start(config, command="worker")
    worker.wait_for_log("taking jobs from", timeout=START_SECONDS)
    return worker


def stop_cleanly(*processes: Daemon) -> None:
    """SIGTERM each, and each exits 0 within the 10 s systemd and users expect (and a margin)."""
    for process in processes:
        process.send(signal.SIGTERM)
    for process in processes:
        assert process.wait_exit(15) == 0, process.log_tail()


def roster(client: redis.Redis) -> dict[str, dict[str, Any]]:
    import json

    return {k.decode(): json.loads(v) for k, v in client.hgetall("stylebox:workers").items()}


def painting(client: redis.Redis, pid: int) -> list[int]:
    """The jobs the worker host with this pid reports in hand."""
    for line in roster(client).values():
        if line["pid"] == pid and time.time() - line["seen"] < 5:
            return [int(job) for job in line["jobs"]]
    return []
