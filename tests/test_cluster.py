"""Several hosts on one inbox: a real redis-server, a coordinator and worker hosts, each a real
process on loopback; every photo has exactly one result, whatever is killed or restarted."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from daemon.service.journal import Journal
from tests.cluster_harness import (
    RedisServer,
    cluster_configs,
    cluster_presets,
    free_port,
    painting,
    redis_server_binary,
    start_worker,
    stop_cleanly,
)
from tests.daemon_harness import (
    JOB_SECONDS,
    Daemons,
    drop,
    http_request,
    journal_rows,
    photo_bytes,
    stylebox,
    temp_files,
    wait_for,
    write_config,
)


@pytest.fixture
def redis_server(tmp_path: Path):
    """Debian's redis-server on a loopback port; skipped without it, unless CI requires it."""
    if redis_server_binary() is None and os.environ.get("STYLEBOX_REQUIRE_REDIS") != "1":
        pytest.skip("needs Debian's redis-server (apt-get install -y redis-server)")
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def daemons():
    started = Daemons()
    yield started
    started.close()


def sidecars(outbox: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((outbox / "swirl").glob("*.json"))]


def job_state(state: Path, job_id: int) -> str:
    (row,) = [r for r in journal_rows(state / "journal.sqlite3") if r["id"] == job_id]
    return row["state"]


def done_count(state: Path) -> int:
    return sum(row["state"] == "done" for row in journal_rows(state / "journal.sqlite3"))


def check_exactly_once(folder: Path, hashes: dict[str, str]) -> list[dict]:
    """One image and one sidecar per photo, made from its bytes; no temp file, no original lost;
    the journal done for each, with outputs that exist."""
    outbox = folder / "outbox"
    found = sidecars(outbox)
    assert sorted(s["input_sha256"] for s in found) == sorted(hashes.values())
    images = sorted(p for p in (outbox / "swirl").iterdir() if p.suffix != ".json")
    assert len(images) == len(hashes)
    assert temp_files(folder) == []
    originals = sorted(p.name for p in (outbox / "originals").iterdir())
    assert originals == sorted(hashes)
    assert sorted(p.name for p in (folder / "inbox").iterdir() if p.is_file()) == []
    rows = journal_rows(folder / "state" / "journal.sqlite3")
    assert sorted(r["content_hash"] for r in rows) == sorted(hashes.values())
    for row in rows:
        assert row["state"] == "done", row
        assert all(Path(p).is_file() for p in json.loads(row["outputs"]))
    return found


def test_two_workers_share_the_inbox_through_a_worker_kill_and_a_redis_restart(
    tmp_path: Path, redis_server: RedisServer, daemons: Daemons
) -> None:
    coordinator_config, worker_configs = cluster_configs(tmp_path, redis_server.url, workers=2)
    coordinator = daemons.start(coordinator_config)
    coordinator.wait_ready()
    first, second = (start_worker(daemons, config) for config in worker_configs)
    hashes = {}
    for index in range(12):
        name = f"photo-{index:02d}.jpg"
        hashes[name] = drop(tmp_path / "inbox" / name, photo_bytes(index, size=(40, 30)))
    client = redis_server.client()

    def first_has_made_one_and_paints_another() -> list[int]:
        made = {sidecar["worker"]["pid"] for sidecar in sidecars(tmp_path / "outbox")}
        return painting(client, first.process.pid) if first.process.pid in made else []

    (in_hand,) = wait_for(first_has_made_one_and_paints_another, "the first worker mid-job")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    state = tmp_path / "state"
    # Its heartbeat stops: Dramatiq gives its job to the other worker.
    wait_for(lambda: job_state(state, in_hand) == "done", "the killed worker's job done elsewhere")
    assert done_count(state) < 12, "the Redis restart must land mid-run"
    shown = json.loads(stylebox("status", "--config", coordinator_config, "--json").stdout)
    hosts = {host["name"].rpartition(":")[2]: host for host in shown["workers"]["hosts"]}
    assert hosts[str(first.process.pid)]["heard"] is False
    assert hosts[str(second.process.pid)]["heard"] is True
    text = stylebox("status", "--config", coordinator_config).stdout
    assert f":{first.process.pid} (cpu): not heard from for" in text
    code, _, page = http_request("GET", coordinator.web_url() + "/")
    workers_part = page.decode().partition("<h2>Workers</h2>")[2].partition("</section>")[0]
    assert code == 200 and f":{first.process.pid}</b>" in workers_part, page.decode()[-3000:]
    assert f":{second.process.pid}</b>" in workers_part and "not heard from for" in workers_part
    redis_server.restart()
    replacement = start_worker(daemons, worker_configs[0])
    wait_for(
        lambda: done_count(state) == 12, "every photo done", timeout=4 * JOB_SECONDS,
        daemon=coordinator, state=lambda: journal_rows(state / "journal.sqlite3"),
    )  # fmt: skip
    found = check_exactly_once(tmp_path, hashes)
    makers = {s["worker"]["pid"] for s in found}
    assert {first.process.pid, second.process.pid} <= makers
    stop_cleanly(coordinator, second, replacement)


def test_a_worker_that_cannot_see_the_photo_fails_it_as_transient_and_another_does_it(
    tmp_path: Path, redis_server: RedisServer, daemons: Daemons
) -> None:
    coordinator_config, (blind_config,) = cluster_configs(tmp_path, redis_server.url, workers=1)
    # This host's inbox share is "mounted" on an empty folder: the photo is not there.
    blind_config = write_config(
        tmp_path,
        name="blind.yaml",
        inbox=str(tmp_path / "empty-mount"),
        state_dir=str(tmp_path / "blind-state"),
        queue={"url": redis_server.url, "heartbeat_seconds": 3.0},
        presets=cluster_presets(),
    )
    (tmp_path / "empty-mount").mkdir()
    coordinator = daemons.start(coordinator_config)
    coordinator.wait_ready()
    blind = start_worker(daemons, blind_config)
    photo = drop(tmp_path / "inbox" / "only.jpg", photo_bytes(1, size=(40, 30)))
    journal = tmp_path / "state" / "journal.sqlite3"
    row = wait_for(
        lambda: next((r for r in journal_rows(journal) if r["error"]), None),
        "the blind worker's failure",
        daemon=coordinator,
    )
    assert row["state"] in ("queued", "running") and "is the inbox share mounted" in row["error"]
    assert not (tmp_path / "outbox" / "failed").exists()
    sighted = start_worker(daemons, cluster_configs(tmp_path, redis_server.url, workers=1)[1][0])
    wait_for(lambda: done_count(tmp_path / "state") == 1, "the photo done", daemon=coordinator)
    (sidecar,) = sidecars(tmp_path / "outbox")
    assert sidecar["input_sha256"] == photo
    assert sidecar["worker"]["pid"] == sighted.process.pid
    assert journal_rows(journal)[0]["attempts"] == 1  # handed back: the attempt not counted
    stop_cleanly(coordinator, blind, sighted)


def test_a_coordinator_killed_mid_run_reconciles_with_the_broker_and_the_outbox(
    tmp_path: Path, redis_server: RedisServer, daemons: Daemons
) -> None:
    coordinator_config, (worker_config,) = cluster_configs(tmp_path, redis_server.url, workers=1)
    coordinator = daemons.start(coordinator_config)
    coordinator.wait_ready()
    worker = start_worker(daemons, worker_config)
    hashes = {}
    for index in range(6):
        name = f"photo-{index}.jpg"
        hashes[name] = drop(tmp_path / "inbox" / name, photo_bytes(index, size=(40, 30)))
    state = tmp_path / "state"
    client = redis_server.client()
    wait_for(
        lambda: done_count(state) >= 1 and painting(client, worker.process.pid),
        "a photo done and the next in hand",
        daemon=coordinator,
    )
    published_before = len(sidecars(tmp_path / "outbox"))
    coordinator.kill()  # SIGKILL: jobs out with the worker, reports left unread in Redis
    wait_for(
        lambda: len(sidecars(tmp_path / "outbox")) > published_before,
        "the worker to publish on while the coordinator is down",
    )
    restarted = daemons.start(coordinator_config)
    wait_for(
        lambda: done_count(state) == 6, "every photo done", timeout=3 * JOB_SECONDS,
        daemon=restarted, state=lambda: journal_rows(state / "journal.sqlite3"),
    )  # fmt: skip
    found = check_exactly_once(tmp_path, hashes)
    assert {s["worker"]["pid"] for s in found} == {worker.process.pid}
    stop_cleanly(restarted, worker)


def test_the_coordinator_paints_too_with_local_worker_in_batches(
    tmp_path: Path, redis_server: RedisServer, daemons: Daemons
) -> None:
    config = write_config(
        tmp_path,
        queue={"url": redis_server.url, "heartbeat_seconds": 3.0},
        presets=cluster_presets(),
        batch_size=2,
    )
    hashes = {
        name: drop(tmp_path / "inbox" / name, photo_bytes(index, size=(40, 30)))
        for index, name in enumerate(("a.jpg", "b.jpg"))
    }
    coordinator = daemons.start(config)
    wait_for(lambda: done_count(tmp_path / "state") == 2, "both done", daemon=coordinator)
    found = check_exactly_once(tmp_path, hashes)
    assert {s["worker"]["pid"] for s in found} == {coordinator.process.pid}
    assert [s["batch"] for s in found] == [2, 2]  # sent as one assignment, stylised together
    stop_cleanly(coordinator)


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ({"url": "http://nas.local:6379/0"}, "queue.url: expected a redis://"),
        ({"url": "redis://"}, "queue.url: expected a host"),
        ({"url": "redis://nas:port/0"}, "queue.url: not a URL"),
        ({"heartbeat_seconds": 1}, "queue.heartbeat_seconds"),
        ({"local_worker": "yes"}, "queue.local_worker"),
        ({"urls": "redis://nas/0"}, "queue.urls"),
    ],
)
def test_check_refuses_a_bad_queue_section_with_its_line(
    tmp_path: Path, queue: dict, expected: str
) -> None:
    run = stylebox("check", "--config", write_config(tmp_path, queue=queue))
    assert run.returncode == 2
    assert any(expected in line and "config.yaml:" in line for line in run.stderr.splitlines()), (
        run.stderr
    )


def test_a_worker_needs_the_queue_and_never_shows_its_password(tmp_path: Path) -> None:
    run = stylebox("worker", "--config", write_config(tmp_path))
    assert run.returncode == 2
    assert "queue.url: required for `stylebox worker`" in run.stderr
    # A Redis that is not there: the status says so, with the URL but not its password.
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    config = write_config(tmp_path, queue={"url": url})
    (tmp_path / "state").mkdir()
    Journal(tmp_path / "state" / "journal.sqlite3").close()
    shown = stylebox("status", "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert "workers: redis://***@127.0.0.1:" in shown.stdout and "unreachable" in shown.stdout
    assert "hunter2" not in shown.stdout + shown.stderr


def test_a_paused_coordinator_sends_nothing_until_resumed(
    tmp_path: Path, redis_server: RedisServer, daemons: Daemons
) -> None:
    config = write_config(
        tmp_path,
        queue={"url": redis_server.url, "heartbeat_seconds": 3.0},
        presets=cluster_presets(),
    )
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "paused").write_text("paused by the test\n")
    coordinator = daemons.start(config)
    coordinator.wait_for_log("paused: no new job is sent until resumed")
    drop(tmp_path / "inbox" / "held.jpg", photo_bytes(3, size=(40, 30)))
    journal = tmp_path / "state" / "journal.sqlite3"
    wait_for(lambda: journal_rows(journal), "the photo queued", daemon=coordinator)
    coordinator.wait_for_log("queued held.jpg")
    client = redis_server.client()
    assert client.llen("stylebox:stylebox.jobs") == 0  # nothing sent while paused
    assert journal_rows(journal)[0]["state"] == "queued"
    (tmp_path / "state" / "paused").unlink()
    wait_for(lambda: done_count(tmp_path / "state") == 1, "the photo done", daemon=coordinator)
    stop_cleanly(coordinator)


def test_reading_the_roster_writes_nothing_and_the_coordinator_forgets_old_hosts(
    tmp_path: Path, redis_server: RedisServer, daemons: Daemons
) -> None:
    """`status` and the page's GETs read the roster; only the coordinator removes the lines of
    hosts not heard from in a week."""
    client = redis_server.client()
    old = {"devices": ["cpu"], "jobs": {}, "seen": time.time() - 8 * 86400}
    client.hset("stylebox:workers", "gone:1", json.dumps(old))
    config = write_config(tmp_path, queue={"url": redis_server.url}, presets=cluster_presets())
    (tmp_path / "state").mkdir()
    Journal(tmp_path / "state" / "journal.sqlite3").close()
    shown = stylebox("status", "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert "gone:1" not in shown.stdout  # a week silent: not shown
    assert client.hexists("stylebox:workers", "gone:1")  # and not removed by a read
    coordinator = daemons.start(config)
    wait_for(
        lambda: not client.hexists("stylebox:workers", "gone:1"),
        "the coordinator forgets the host",
        daemon=coordinator,
    )
    stop_cleanly(coordinator)
