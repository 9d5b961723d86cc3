"""Events from the real daemon to a real HTTP receiver on loopback (started here, in a thread):
signed webhooks, the events log, Apprise through its own json:// URL, delivery at least once
across a receiver that is down and a SIGKILL, a 4xx given up, a hanging receiver that costs the
worker nothing, and `stylebox notify-test`."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    Daemons,
    drop,
    journal_rows,
    photo_bytes,
    sha256,
    stylebox,
    wait_for,
    write_config,
)
from loguru import logger

from daemon.config.notify import WebhookSettings
from daemon.service import events
from daemon.service.channels import EventsLog, Webhook
from daemon.service.journal import Event, Journal
from daemon.service.sender import Sender

SECRET = b"a shared secret for the signatures"


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers `status` (after
    `hang` seconds); stopped and started again on the same port to play a receiver that is
    down."""

    def __init__(self, *, status: int = 204, hang: float = 0.0) -> None:
        self.status, self.hang = status, hang
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers.items()), "body": body}
                )
                time.sleep(receiver.hang)
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(r["body"]) for r in self.requests if r["path"] == "/hook"]
        return [e for e in found if event_type is None or e["type"] == event_type]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    yield started
    started.close()


def _config(folder: Path, hook: dict[str, Any], **overrides: Any) -> Path:
    secret = folder / "hook-secret"
    secret.write_bytes(SECRET + b"\n")
    notify = {"events_log": True, "webhooks": [{"secret_file": str(secret), **hook}]}
    return write_config(folder, notify=overrides.pop("notify", notify), **overrides)


def _deliveries(folder: Path) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(f"file:{folder / 'state' / 'journal.sqlite3'}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        return [
            dict(row)
            for row in c.execute(
                "SELECT e.id, e.type, d.channel, d.state, d.attempts FROM deliveries d"
                " JOIN events e ON e.seq = d.seq ORDER BY d.seq"
            )
        ]


def test_each_photo_done_or_quarantined_is_one_signed_event_with_its_facts(
    tmp_path: Path, daemons: Daemons, receiver: Receiver
) -> None:
    config = _config(tmp_path, {"url": receiver.url})
    photos = {f"photo{i}.jpg": photo_bytes(i) for i in range(5)}
    for name, data in photos.items():
        drop(
            tmp_path / "inbox" / "glass" / name
            if name == "photo4.jpg"
            else tmp_path / "inbox" / name,
            data,
        )
    drop(tmp_path / "inbox" / "broken.jpg", b"\xff\xd8\xff not a jpeg at all")
    daemon = daemons.start(config)
    wait_for(
        lambda: (
            len(receiver.events("photo.done")) == 5
            and len(receiver.events("photo.quarantined")) == 1
        ),
        "5 done and 1 quarantined events",
        daemon=daemon,
    )
    for request in receiver.requests:
        expected = hmac.new(SECRET, request["body"], hashlib.sha256).hexdigest()
        assert request["headers"]["X-Stylebox-Signature"] == f"sha256={expected}"
        event = json.loads(request["body"])
        assert request["headers"]["X-Stylebox-Delivery"] == event["id"]
        assert request["headers"]["X-Stylebox-Event"] == event["type"]
    ids = [event["id"] for event in receiver.events()]
    assert len(ids) == len(set(ids))
    assert {e["type"] for e in receiver.events()} == {
        "daemon.started",
        "photo.done",
        "photo.quarantined",
    }

    done = {event["photo"]["name"]: event for event in receiver.events("photo.done")}
    assert set(done) == set(photos)
    assert done["photo4.jpg"]["photo"]["path"] == "glass/photo4.jpg"
    assert done["photo4.jpg"]["preset"] == "glass" and done["photo0.jpg"]["preset"] == "swirl"
    for name, event in done.items():
        assert event["input_sha256"] == sha256(photos[name])
        (output,), (sidecar_path,) = event["outputs"], event["sidecars"]
        sidecar = json.loads((tmp_path / "outbox" / sidecar_path).read_text())
        assert (tmp_path / "outbox" / output).is_file()
        assert event["losses"] == sidecar["losses"] and event["seconds"] == sidecar["seconds"]
    (bad,) = receiver.events("photo.quarantined")
    assert (
        bad["photo"] == {"name": "broken.jpg", "path": "broken.jpg"}
        and "broken.jpg" in bad["reason"]
    )

    # the events log has the same events, and matches the journal
    lines = (tmp_path / "outbox" / "events.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    assert {e["id"] for e in logged} >= set(ids)
    jobs = {row["id"]: row for row in journal_rows(tmp_path / "state/journal.sqlite3")}
    for event in logged:
        if event["type"] == "photo.done":
            assert jobs[event["job"]]["state"] == "done"
            assert str(tmp_path / "outbox" / event["outputs"][0]) in json.loads(
                jobs[event["job"]]["outputs"]
            )
        if event["type"] == "photo.quarantined" and "job" in event:  # else intake's: no job
            assert jobs[event["job"]]["state"] == "quarantined"


def test_events_outlast_a_receiver_that_is_down_and_a_sigkill(
    tmp_path: Path, daemons: Daemons
) -> None:
    receiver = Receiver().start()
    receiver.stop()  # its port, nobody listening: connection refused
    config = _config(tmp_path, {"url": receiver.url, "events": ["photo.done"]})
    for index in range(3):
        drop(tmp_path / "inbox" / f"photo{index}.jpg", photo_bytes(index))
    daemon = daemons.start(config)
    wait_for(
        lambda: (
            [r["state"] for r in journal_rows(tmp_path / "state/journal.sqlite3")] == ["done"] * 3
        ),
        "3 photos done",
        daemon=daemon,
    )
    daemon.send(signal.SIGKILL)
    daemon.wait_exit(10)
    hook = [d for d in _deliveries(tmp_path) if d["channel"].startswith("webhook:")]
    assert [d["state"] for d in hook] == ["pending"] * 3
    status = stylebox("status", "--config", config).stdout
    assert f"events to webhook http://127.0.0.1:{receiver.port} (" in status
    assert "0 sent, 3 pending, 0 given up (last try: URLError: [Errno 111]" in status
    receiver.start()
    try:
        daemons.start(config)
        jobs = {row["id"] for row in journal_rows(tmp_path / "state/journal.sqlite3")}
        wait_for(lambda: {e["job"] for e in receiver.events("photo.done")} == jobs, "each event")
        wait_for(
            lambda: (
                {d["state"] for d in _deliveries(tmp_path) if d["channel"].startswith("webhook:")}
                == {"sent"}
            ),
            "the deliveries marked sent",
        )
    finally:
        receiver.stop()


def test_a_receiver_refusing_with_4xx_is_given_up_after_one_try(
    tmp_path: Path, daemons: Daemons
) -> None:
    receiver = Receiver(status=404).start()
    try:
        config = _config(tmp_path, {"url": receiver.url, "events": ["photo.done"]})
        drop(tmp_path / "inbox" / "photo.jpg", photo_bytes(0))
        daemon = daemons.start(config)
        daemon.wait_for_log("gave up on event")
        assert "HTTP 404" in daemon.log()
        time.sleep(6)  # past the first retry's wait: a retried delivery would have come
        (hook,) = [d for d in _deliveries(tmp_path) if d["channel"].startswith("webhook:")]
        assert (hook["state"], hook["attempts"]) == ("given_up", 1)
        assert len(receiver.events()) == 1
    finally:
        receiver.stop()


def test_a_receiver_that_hangs_never_holds_up_the_next_photo(
    tmp_path: Path, daemons: Daemons
) -> None:
    receiver = Receiver(hang=30).start()
    try:
        hook = {"url": receiver.url, "events": ["photo.done"], "timeout_seconds": 5}
        config = _config(tmp_path, hook)
        for index in range(2):
            drop(tmp_path / "inbox" / f"photo{index}.jpg", photo_bytes(index))
        daemon = daemons.start(config)
        wait_for(
            lambda: (
                [r["state"] for r in journal_rows(tmp_path / "state/journal.sqlite3")]
                == ["done"] * 2
            ),
            "both photos done",
            daemon=daemon,
        )
        first, second = journal_rows(tmp_path / "state/journal.sqlite3")
        assert len(receiver.events()) >= 1  # the first event was sent, and is hanging
        # the second photo started at once, not after the hook's 5 s timeout
        assert second["started_at"] - first["finished_at"] < 4.0
    finally:
        receiver.stop()


def test_apprise_through_its_json_url_reaches_the_receiver(
    tmp_path: Path, daemons: Daemons, receiver: Receiver
) -> None:
    notify = {"apprise": {"urls": [f"json://127.0.0.1:{receiver.port}/apprise"]}}
    config = write_config(tmp_path, notify=notify)
    drop(tmp_path / "inbox" / "IMG_2041.jpg", photo_bytes(0))
    daemon = daemons.start(config)
    wait_for(lambda: receiver.requests, "a message from Apprise", daemon=daemon)
    (message,) = [json.loads(r["body"]) for r in receiver.requests if r["path"] == "/apprise"]
    assert message["title"] == "swirl: IMG_2041.jpg done"
    assert message["message"].startswith("swirl: IMG_2041.jpg done in ")
    (attachment,) = message["attachments"]
    assert attachment["mimetype"] == "image/jpeg" and attachment["base64"]


def test_the_events_log_drops_a_line_torn_by_a_crash_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id":"whole"}\n{"id":"tor')
    log = EventsLog(path, max_bytes=200, file_mode=0o644)

    def event(index: int) -> Event:
        return Event(f"e{index}", "photo.done", 0.0, {"id": f"e{index}", "pad": "x" * 40})

    assert log.deliver([event(0)]).state == "sent"
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["whole", "e0"]
    for index in range(1, 6):
        log.deliver([event(index)])
    rotated = path.with_name("events.jsonl.1")
    assert rotated.exists() and path.stat().st_size <= 200
    every = rotated.read_text().splitlines() + path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in every][-6:] == [f"e{i}" for i in range(6)]


def test_notify_test_reports_each_channel(tmp_path: Path, receiver: Receiver) -> None:
    dead = Receiver().start()
    dead.stop()
    notify = {
        "events_log": True,
        "webhooks": [{"url": receiver.url}, {"url": dead.url, "timeout_seconds": 2}],
    }
    config = write_config(tmp_path, notify=notify)
    (tmp_path / "outbox").mkdir()
    run = stylebox("notify-test", "--config", config)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("events log ") and lines[0].endswith("ok (written)")
    assert lines[1].startswith(f"webhook http://127.0.0.1:{receiver.port} (")
    assert lines[1].endswith(": ok (HTTP 204)") and "/hook" not in lines[1]  # no path: secrets
    assert lines[2].startswith(f"webhook http://127.0.0.1:{dead.port} (")
    assert ": FAILED (URLError: [Errno 111] Connection refused)" in lines[2]
    (test_event,) = receiver.events()
    assert test_event["type"] == "test"


@pytest.mark.parametrize(
    ("notify", "expected"),
    [
        (
            {"webhooks": [{"url": "ftp://example.com/x"}]},
            "notify.webhooks[0].url: expected an http",
        ),
        ({"webhooks": [{"url": "http://x/", "secret_file": "nope"}]}, "nope: no such file"),
        (
            {"webhooks": [{"url": "http://x/", "events": ["photo.eaten"]}]},
            "notify.webhooks[0].events",
        ),
        ({"events_log": "yes"}, "notify.events_log"),
        ({"webhooks": [{"url": "http://x/a"}, {"url": "http://x/a"}]}, "listed twice"),
        ({"webhooks": [{"url": "http://me:pw@x/a"}]}, "no user or password"),
        ({"apprise": ["nonsense://x"]}, "notify.apprise: URL 1 is not one Apprise knows"),
    ],
)
def test_check_refuses_a_bad_notify_section_with_its_line(
    tmp_path: Path, notify: dict, expected: str
) -> None:
    run = stylebox("check", "--config", write_config(tmp_path, notify=notify))
    assert run.returncode == 2
    assert any(expected in line and "config.yaml:" in line for line in run.stderr.splitlines()), (
        run.stderr
    )


def test_a_duplicate_and_the_daemon_stopping_are_events_too(
    tmp_path: Path, daemons: Daemons
) -> None:
    config = write_config(tmp_path, notify={"events_log": True}, originals={"policy": "keep"})
    drop(tmp_path / "inbox" / "photo.jpg", photo_bytes(0))
    daemon = daemons.start(config)
    log = tmp_path / "outbox" / "events.jsonl"

    def logged(event_type: str) -> list[dict[str, Any]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [e for e in map(json.loads, lines) if e["type"] == event_type]

    wait_for(lambda: logged("photo.done"), "the photo done", daemon=daemon)
    drop(tmp_path / "inbox" / "again.jpg", photo_bytes(0))
    wait_for(lambda: logged("photo.duplicate"), "the duplicate", daemon=daemon)
    (duplicate,) = logged("photo.duplicate")
    assert duplicate["photo"]["name"] == "again.jpg"
    assert duplicate["duplicate_of"]["name"] == "photo.jpg"
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    (stopped,) = logged("daemon.stopped")
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["type"] == "daemon.stopped" and stopped["inbox"] == str(tmp_path / "inbox")
    # both copies are kept in the inbox: the next start meets the duplicate again, and says
    # nothing new about it
    again = daemons.start(config)
    wait_for(lambda: len(logged("daemon.started")) == 2, "the second start", daemon=again)
    again.wait_for_log("duplicate of photo.jpg")
    again.send(signal.SIGTERM)
    assert again.wait_exit(10) == 0
    assert [e["id"] for e in logged("photo.duplicate")] == [duplicate["id"]]


def test_a_digest_gathers_the_photos_done_since_its_last_message(
    tmp_path: Path, daemons: Daemons, receiver: Receiver
) -> None:
    apprise = {"urls": [f"json://127.0.0.1:{receiver.port}/apprise"], "digest_minutes": 0.5}
    config = write_config(tmp_path, notify={"apprise": apprise})
    daemon = daemons.start(config)
    daemon.wait_ready()
    drop(tmp_path / "inbox" / "first.jpg", photo_bytes(0))
    wait_for(lambda: receiver.requests, "the first message", daemon=daemon)
    for index in range(1, 4):
        drop(tmp_path / "inbox" / f"photo{index}.jpg", photo_bytes(index))
    wait_for(lambda: len(receiver.requests) == 2, "the digest", daemon=daemon, timeout=90)
    first, digest = (json.loads(r["body"]) for r in receiver.requests)
    assert first["title"] == "swirl: first.jpg done"
    assert digest["title"] == "stylebox: 3 done"
    lines = sorted(digest["message"].splitlines())
    assert [line.split(" done in ")[0] for line in lines] == [
        f"swirl: photo{index}.jpg" for index in range(1, 4)
    ]


def test_a_backlog_is_one_log_line_each_way_and_goes_out_once_the_receiver_is_back(
    tmp_path: Path,
) -> None:
    """Issue 23: 74 events for a receiver that was down logged 377 lines (one per event per
    try), and drained over minutes once it was back, each event waiting out its own backoff.
    The Sender here is the daemon's, on a real journal, with a real receiver; its first wait
    is short so that the test takes seconds."""
    receiver = Receiver(status=503).start()
    journal = Journal(tmp_path / "journal.sqlite3")
    channel = Webhook(WebhookSettings(url=receiver.url, events=["photo.done"]))
    sender = Sender(journal, [channel], give_up_after_seconds=3600, first_retry_seconds=0.2)
    journal.event_routes, journal.on_events = sender.routes, sender.wake
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="DEBUG")
    try:
        sender.start()
        for index in range(30):
            journal.record_events([events.event("photo.done", photo={"name": f"{index}.jpg"})])
        wait_for(lambda: len(receiver.requests) >= 5, "five tries of a receiver that is down")
        assert len(receiver.events()) == len(receiver.requests)  # a try is one request
        assert {e["photo"]["name"] for e in receiver.events()} == {"0.jpg"}  # the oldest asks
        assert [line for line in lines if channel.label in line] == [
            f"{channel.label}: HTTP 503 Service Unavailable; its events wait, and one is tried "
            "again in 0.2 s, then less often (at most 60 s apart); `stylebox status` shows the "
            "last try"
        ]
        receiver.status = 204
        back = time.monotonic()
        wait_for(
            lambda: journal.delivery_counts()[channel.name]["pending"] == 0,
            "the backlog delivered",
            timeout=30,
        )
        # the wait before the next try (at most 6.4 s by now), then the whole backlog at once
        assert time.monotonic() - back < 12
        names = [e["photo"]["name"] for e in receiver.events()][-30:]
        assert names == [f"{index}.jpg" for index in range(30)]  # in order, each once
        (again,) = [line for line in lines if channel.label in line][1:]
        assert again.startswith(f"{channel.label}: delivering again after ")
        assert again.endswith("; 30 event(s) were waiting")
    finally:
        logger.remove(sink)
        sender.stop(5)
        journal.close()
        receiver.stop()
