"""The web page of the real daemon over real HTTP on loopback: pages, progress in the journal,
the gallery's cached thumbnails, safe file serving, the token and cross-site checks, pause and
retry, /metrics (read with prometheus_client's own parser) and /healthz."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from daemon_harness import (
    Daemons,
    drop,
    http_request,
    journal_rows,
    photo_bytes,
    stylebox,
    tiny_preset,
    wait_for,
    write_config,
)
from loguru import logger
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from daemon.service.thumbnails import Thumbnails
from daemon.web.wrappers import OneLineErrors

TOKEN = "test-token-0123456789abcdef"
XSS_NAME = "<img src=x onerror=alert(1)>.jpg"
# Long enough (a few seconds a photo) for the page to see it running and its progress move.
SLOW = tiny_preset(size=64, steps=300, finish="fine")


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    started = Daemons()
    yield started
    started.close()


def _token_file(folder: Path) -> Path:
    path = folder / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def _config(folder: Path, **overrides) -> Path:
    web = {"listen": "127.0.0.1:0", "token_file": str(_token_file(folder))}
    return write_config(folder, web=overrides.pop("web", web), **overrides)


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return http_request("GET", url, headers=headers)


def _post(url: str, fields: dict[str, str], **headers: str) -> tuple[int, dict[str, str], bytes]:
    body = urlencode(fields).encode()
    sent = {"content-type": "application/x-www-form-urlencoded", **headers}
    return http_request("POST", url, body=body, headers=sent)


def _status(url: str) -> dict:
    code, _, body = _get(url + "/api/status")
    assert code == 200
    return json.loads(body)


def _text_status(config: Path) -> str:
    run = stylebox("status", "--config", config)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _login(url: str) -> tuple[str, str]:
    """The session cookie and the page's CSRF value, as a browser gets them."""
    code, headers, _ = _post(url + "/login", {"token": TOKEN})
    assert code == 303, headers
    cookie = headers["set-cookie"].split(";")[0]
    assert "httponly" in headers["set-cookie"].lower()
    assert "samesite=strict" in headers["set-cookie"].lower()
    _, _, page = _get(url + "/", cookie=cookie)
    csrf = re.search(rb'name="csrf" value="([0-9a-f]+)"', page)[1].decode()
    return cookie, csrf


def test_running_jobs_show_their_progress_and_results_reach_the_gallery(
    tmp_path: Path, daemons: Daemons
) -> None:
    config = _config(tmp_path, presets={"swirl": SLOW, "glass": tiny_preset("stained_glass.png")})
    drop(tmp_path / "inbox" / "first.jpg", photo_bytes(0))
    drop(tmp_path / "inbox" / XSS_NAME, photo_bytes(1))
    daemon = daemons.start(config)
    url = daemon.web_url()
    daemon.wait_ready()

    def progress() -> dict | None:
        running = _status(url)["running"]
        return running[0]["progress"] if running else None

    wait_for(lambda: progress() is not None, "a running job's progress", daemon=daemon)
    first = progress()
    code, headers, page = _get(url + "/")
    assert code == 200 and b"<progress" in page
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    wait_for(
        lambda: (progress() or {"evaluation": 0})["evaluation"] > first["evaluation"],
        "its progress to move on",
        daemon=daemon,
    )
    assert first["budget"] == 300 and first["objective"] > 0
    # another process reads the same from the journal
    cli = json.loads(stylebox("status", "--config", config, "--json").stdout)
    assert set(cli) == set(_status(url))
    assert re.search(r"running: .+ \(swirl\) evaluation \d+ of at most 300", _text_status(config))

    wait_for(
        lambda: _status(url)["counts"]["done"] == 2, "both photos done", daemon=daemon, timeout=120
    )
    _, _, gallery = _get(url + "/gallery")
    assert XSS_NAME.encode() not in gallery  # shown as text, escaped
    assert b"&lt;img src=x onerror=alert(1)&gt;.jpg" in gallery
    jobs = {
        Path(row["source_path"]).name: row
        for row in journal_rows(tmp_path / "state/journal.sqlite3")
    }
    job = jobs["first.jpg"]
    # the original is moved (and noted) just after the job is marked done
    wait_for(
        lambda: f"/thumbs/{job['id']}/original.jpg".encode() in _get(url + "/gallery")[2],
        "the original in the gallery",
        daemon=daemon,
    )
    assert f"/thumbs/{job['id']}/result.jpg".encode() in gallery
    code, headers, thumbnail = _get(f"{url}/thumbs/{job['id']}/result.jpg")
    assert code == 200 and headers["content-type"] == "image/jpeg"
    cached = list((tmp_path / "state" / "thumbnails").iterdir())
    assert _get(f"{url}/thumbs/{job['id']}/result.jpg")[2] == thumbnail
    assert list((tmp_path / "state" / "thumbnails").iterdir()) == cached  # made once
    result = Path(json.loads(job["outputs"])[0])
    assert _get(f"{url}/files/{job['id']}/result")[2] == result.read_bytes()
    original = tmp_path / "outbox" / "originals" / "first.jpg"
    assert _get(f"{url}/files/{job['id']}/original")[2] == original.read_bytes()
    assert _get(url + "/gallery?preset=glass")[2].count(b'class="card"') == 0
    for page in ("99999999999999999999", "abc", "-3"):  # past the last, or no page at all
        code, _, body = _get(url + f"/gallery?page={page}")
        assert code == 200 and b"page 1 of 1" in body and body.count(b'class="card"') == 2


def test_nothing_outside_the_outbox_and_the_caches_is_served(
    tmp_path: Path, daemons: Daemons
) -> None:
    config = _config(tmp_path)
    drop(tmp_path / "inbox" / "photo.jpg", photo_bytes(0))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(photo_bytes(2))
    daemon = daemons.start(config)
    url = daemon.web_url()
    wait_for(lambda: _status(url)["counts"]["done"] == 1, "the photo done", daemon=daemon)
    (job,) = journal_rows(tmp_path / "state/journal.sqlite3")
    assert _get(f"{url}/files/{job['id']}/result")[0] == 200
    escapes = [
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fconfig.yaml",
        "/static/%2e%2e/app.py",
        "/static/" + "%2F".join(["", "etc", "passwd"]),
        "//etc/passwd",
        "/previews/../journal.sqlite3",
        "/previews/%2e%2e%2fjournal.sqlite3",
        f"/thumbs/{job['id']}/..%2f..%2fjournal.sqlite3.jpg",
        f"/files/{job['id']}/sidecar",
        f"/files/{job['id']}/%2e%2e",
        "/thumbs/preset/swirl/7.jpg",
        "/thumbs/preset/..%2f..%2fsecret/0.jpg",
        f"/files/{job['id'] + 1}/result",
    ]
    for path in escapes:
        code, _, body = _get(url + path)
        assert code == 404, (path, code, body[:80])
    # a result swapped for a link out of the outbox is not followed, nor is a linked folder
    result = Path(json.loads(job["outputs"])[0])
    result.unlink()
    result.symlink_to(secret)
    assert _get(f"{url}/files/{job['id']}/result")[0] == 404
    assert _get(f"{url}/thumbs/{job['id']}/result.jpg")[0] == 404
    elsewhere = tmp_path / "elsewhere"
    (outbox := tmp_path / "outbox" / "swirl").rename(elsewhere)
    (elsewhere / result.name).unlink()
    (elsewhere / result.name).write_bytes(photo_bytes(3))
    outbox.symlink_to(elsewhere, target_is_directory=True)
    assert _get(f"{url}/files/{job['id']}/result")[0] == 404
    assert _get(f"{url}/thumbs/{job['id']}/result.jpg")[0] == 404
    # and a request for a rebound DNS name is refused
    assert _get(url + "/", host="evil.example:80")[0] == 400


def test_files_are_sent_as_what_they_are_not_as_their_names_say(
    tmp_path: Path, daemons: Daemons
) -> None:
    """A photo called page.html (a JPEG, as intake checks) is moved into the outbox with that
    name: it must come back as a JPEG, sandboxed, never as HTML that runs on the page's origin."""
    daemon = daemons.start(_config(tmp_path))
    url = daemon.web_url()
    drop(tmp_path / "inbox" / "page.html", photo_bytes(0))
    original = tmp_path / "outbox" / "originals" / "page.html"
    wait_for(  # the original is moved (and noted) just after the job is marked done
        lambda: (
            _status(url)["counts"]["done"] == 1
            and json.loads(journal_rows(tmp_path / "state/journal.sqlite3")[0]["details"]).get(
                "original"
            )
        ),
        "the photo done and its original noted",
        daemon=daemon,
    )
    (job,) = journal_rows(tmp_path / "state/journal.sqlite3")
    code, headers, body = _get(f"{url}/files/{job['id']}/original")
    assert code == 200 and body == (tmp_path / "outbox" / "originals" / "page.html").read_bytes()
    assert headers["content-type"] == "image/jpeg"
    assert "sandbox" in headers["content-security-policy"]
    original.write_bytes(b"<script>alert(1)</script>")  # replaced by hand with something else
    code, headers, _ = _get(f"{url}/files/{job['id']}/original")
    assert code == 200 and headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment")


def test_actions_need_the_token_and_refuse_other_sites(tmp_path: Path, daemons: Daemons) -> None:
    daemon = daemons.start(_config(tmp_path))
    url = daemon.web_url()
    paused = tmp_path / "state" / "paused"
    for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}):
        assert _post(url + "/pause", {}, **headers)[0] == 401
    assert _post(url + "/login", {"token": "wrong"})[0] == 401
    assert not paused.exists()

    cookie, csrf = _login(url)
    assert _post(url + "/pause", {}, cookie=cookie)[0] == 403  # no CSRF value
    host = url.removeprefix("http://")
    for other_site in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
        assert _post(url + "/pause", {"csrf": csrf}, cookie=cookie, **other_site)[0] == 403
    assert not paused.exists()
    same_site = {"origin": f"http://{host}", "sec-fetch-site": "same-origin"}
    code, headers, _ = _post(url + "/pause", {"csrf": csrf}, cookie=cookie, **same_site)
    assert (code, headers["location"]) == (303, "/")
    assert paused.exists()
    assert b"Resume" in _get(url + "/", cookie=cookie)[2]
    code, _, body = _post(url + "/resume", {}, authorization=f"Bearer {TOKEN}")
    assert (code, json.loads(body)) == (200, {"ok": True, "paused": False})
    assert not paused.exists()
    assert b"Pause" not in _get(url + "/")[2]  # no buttons without the token
    assert _post(url + "/logout", {}, cookie=cookie, **same_site)[0] == 303
    assert _post(url + "/pause", {"csrf": csrf}, cookie=cookie, **same_site)[0] == 401
    assert not paused.exists()  # the session ended with the logout


def test_on_the_lan_only_the_listed_host_names_are_answered(
    tmp_path: Path, daemons: Daemons
) -> None:
    web = {"listen": "0.0.0.0:0", "hosts": ["nas.local"], "token_file": str(_token_file(tmp_path))}
    daemon = daemons.start(write_config(tmp_path, web=web))
    url = daemon.web_url().replace("0.0.0.0", "127.0.0.1")
    assert _get(url + "/", host="nas.local:8750")[0] == 200
    assert _get(url + "/", host="evil.example:8750")[0] == 400


def test_without_a_token_the_page_is_read_only(tmp_path: Path, daemons: Daemons) -> None:
    daemon = daemons.start(write_config(tmp_path))
    url = daemon.web_url()
    assert "(read-only: no web.token_file)" in daemon.log()
    for headers in ({}, {"authorization": f"Bearer {TOKEN}"}):
        code, _, body = _post(url + "/pause", {}, **headers)
        assert code == 403 and b"read-only" in body
    assert _post(url + "/login", {"token": TOKEN})[0] == 403
    assert not (tmp_path / "state" / "paused").exists()


def test_a_paused_worker_starts_nothing_until_resumed(tmp_path: Path, daemons: Daemons) -> None:
    daemon = daemons.start(_config(tmp_path))
    url = daemon.web_url()
    daemon.wait_ready()
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert _post(url + "/pause", {}, **bearer)[0] == 200
    daemon.wait_for_log("paused: no new job starts")
    drop(tmp_path / "inbox" / "photo.jpg", photo_bytes(0))
    daemon.wait_for_log("queued photo.jpg")
    time.sleep(2)  # more than the worker's idle wait: it would have claimed the job by now
    (job,) = journal_rows(tmp_path / "state/journal.sqlite3")
    assert (job["state"], job["attempts"]) == ("queued", 0)
    assert _status(url)["paused"] is True
    assert "paused: no new job starts" in _text_status(tmp_path / "config.yaml")
    assert _post(url + "/resume", {}, **bearer)[0] == 200
    wait_for(lambda: _status(url)["counts"]["done"] == 1, "the photo done", daemon=daemon)


def test_retry_puts_a_failed_photo_back_into_the_inbox(tmp_path: Path, daemons: Daemons) -> None:
    """Too many pixels for max_input_pixels (the paintings have fewer): quarantined; the limit
    raised (SIGHUP) and the photo retried from /failed, it is done."""
    config = _config(tmp_path, max_input_pixels=300_000)
    drop(tmp_path / "inbox" / "swirl" / XSS_NAME, photo_bytes(0, size=(640, 480)))
    daemon = daemons.start(config)
    url = daemon.web_url()
    wait_for(
        lambda: _status(url)["counts"]["quarantined"] == 1, "the photo quarantined", daemon=daemon
    )
    _, _, page = _get(url + "/failed", authorization=f"Bearer {TOKEN}")
    assert XSS_NAME.encode() not in page and b"over the limit of 300,000" in page
    assert b"&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    _config(tmp_path)  # the default max_input_pixels
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("config reloaded")
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert _post(url + "/failed/retry", {"name": "../config.yaml"}, **bearer)[0] == 404
    code, _, body = _post(url + "/failed/retry", {"name": XSS_NAME}, **bearer)
    assert (code, json.loads(body)) == (200, {"ok": True, "retried": f"swirl/{XSS_NAME}"})
    assert not (tmp_path / "outbox" / "failed" / (XSS_NAME + ".error.json")).exists()
    wait_for(lambda: _status(url)["counts"]["done"] == 1, "the photo done", daemon=daemon)
    (job,) = journal_rows(tmp_path / "state/journal.sqlite3")
    assert job["state"] == "done" and job["preset"] == "swirl"
    assert (tmp_path / "outbox" / "swirl" / XSS_NAME).exists()
    assert b"None." in _get(url + "/failed")[2]


def test_metrics_parse_and_count_the_jobs(tmp_path: Path, daemons: Daemons) -> None:
    config = _config(tmp_path)
    for index in range(2):
        drop(tmp_path / "inbox" / f"photo{index}.jpg", photo_bytes(index))
    drop(tmp_path / "inbox" / "broken.jpg", b"\xff\xd8 not a jpeg")
    daemon = daemons.start(config)
    url = daemon.web_url()
    wait_for(
        lambda: _status(url)["counts"]["done"] == 2 and _status(url)["counts"]["quarantined"] == 1,
        "two done, one quarantined",
        daemon=daemon,
    )
    code, headers, body = _get(url + "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    jobs = {
        labels: value for (name, labels), value in samples.items() if name == "stylebox_jobs_total"
    }
    assert jobs[(("outcome", "done"), ("preset", "swirl"))] == 2
    assert jobs[(("outcome", "quarantined"), ("preset", "swirl"))] == 1
    assert jobs[(("outcome", "done"), ("preset", "glass"))] == 0
    assert samples[("stylebox_queue_jobs", (("state", "done"),))] == 2
    assert samples[("stylebox_job_duration_seconds_count", (("preset", "swirl"),))] == 2
    evaluations = samples[("stylebox_evaluations_total", ())]
    assert evaluations == sum(
        json.loads(row["details"])["evaluations"]
        for row in journal_rows(tmp_path / "state/journal.sqlite3")
        if row["state"] == "done"
    )
    (build,) = [labels for name, labels in samples if name == "stylebox_build_info"]
    assert dict(build) == {"version": "0.1.0", "device": "cpu"}
    label_values = {value for _, labels in samples for _, value in labels}
    assert not any("photo" in value or "broken" in value for value in label_values)


def test_healthz_says_starting_then_ok(tmp_path: Path, daemons: Daemons) -> None:
    daemon = daemons.start(_config(tmp_path))
    url = daemon.web_url()
    code, _, body = _get(url + "/healthz")
    if "outputs go to" not in daemon.log():  # still loading VGG-19, as it is for seconds
        assert (code, body) == (503, b"starting: loading VGG-19 and scanning the inbox\n")
    daemon.wait_ready()
    wait_for(lambda: _get(url + "/healthz")[:3:2] == (200, b"ok\n"), "healthy", daemon=daemon)


def test_a_port_in_use_leaves_the_daemon_working_without_its_page(
    tmp_path: Path, daemons: Daemons
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(tmp_path, web={"listen": f"127.0.0.1:{port}"})
        drop(tmp_path / "inbox" / "photo.jpg", photo_bytes(0))
        daemon = daemons.start(config)
        daemon.wait_for_log(f"web page: cannot listen on 127.0.0.1:{port}")
        wait_for(
            lambda: (
                [r["state"] for r in journal_rows(tmp_path / "state/journal.sqlite3")] == ["done"]
            ),
            "the photo done",
            daemon=daemon,
        )


@pytest.mark.parametrize(
    ("web", "expected"),
    [
        ({"listen": "8750"}, "web.listen: expected host:port"),
        ({"listen": "nas.local:8750"}, "expected an IP address"),
        ({"listen": "::1:8750"}, "an IPv6 address goes in brackets"),
        ({"listen": "127.0.0.1:99999"}, "web.listen: expected host:port"),
        ({"token_file": "missing-token"}, "missing-token: no such file"),
        ({"token_file": "short"}, "at least 16 characters"),
        ({"read_token_file": "short"}, "web.read_token_file: " + "{tmp}/short: the token must"),
        ({"token_file": "one", "read_token_file": "same"}, "a read token must differ"),
        ({"enabled": "yes"}, "web.enabled"),
    ],
)
def test_check_refuses_a_bad_web_section_with_its_line(
    tmp_path: Path, web: dict, expected: str
) -> None:
    (tmp_path / "short").write_text("abc\n")
    for name in ("one", "same"):
        (tmp_path / name).write_text("a-token-of-twenty-chars\n")
    config = write_config(tmp_path, web=web)
    run = stylebox("check", "--config", config)
    assert run.returncode == 2
    expected = expected.format(tmp=tmp_path)
    (line,) = [line for line in run.stderr.splitlines() if expected in line]
    assert re.search(r"config\.yaml:\d+: web\.", line), line


def test_check_accepts_a_token_file_and_an_ipv6_loopback(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, web={"listen": "[::1]:0", "token_file": str(_token_file(tmp_path))}
    )
    run = stylebox("check", "--config", config)
    assert run.returncode == 0, run.stderr


def test_the_templates_have_no_inline_script_or_style() -> None:
    """The CSP forbids inline scripts and styles: none may be in the templates either."""
    templates = Path(__file__).resolve().parents[1] / "daemon" / "web" / "templates"
    for template in templates.iterdir():
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\son[a-z]+=|\sstyle=|<style", text), template.name


def test_the_thumbnail_cache_keeps_the_ones_used_last(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "state").mkdir()  # the daemon's state_dir: always there
    cache = Thumbnails(tmp_path / "state", max_files=3)
    made = {}
    for index in range(3):
        drop(photos / f"{index}.jpg", photo_bytes(index))
        made[index] = cache.of(f"p{index}", photos / f"{index}.jpg", (photos,), 10**6)
    time.sleep(0.01)
    assert cache.of("p0", photos / "0.jpg", (photos,), 10**6) == made[0]  # used: kept
    for index in range(3, 5):
        time.sleep(0.01)
        drop(photos / f"{index}.jpg", photo_bytes(index))
        made[index] = cache.of(f"p{index}", photos / f"{index}.jpg", (photos,), 10**6)
    kept = {path.name for path in (tmp_path / "state" / "thumbnails").iterdir()}
    assert len(kept) <= 4  # the cap, and the one made since the last trim
    assert made[0].name in kept and made[4].name in kept
    assert made[1].name not in kept
    with Image.open(made[4]) as thumbnail:
        assert max(thumbnail.size) <= 240 and thumbnail.format == "JPEG"


def test_ids_out_of_range_are_404_and_cost_the_log_nothing(
    tmp_path: Path, daemons: Daemons
) -> None:
    """Issue 23: a huge id answered 500 and logged a traceback of some 200 lines, with local
    variables, per request: any local process could flood the log."""
    for root in ("inbox", "outbox", "state"):  # the user's to make: the daemon never does
        (tmp_path / root).mkdir()
    daemon = daemons.start(_config(tmp_path))
    url = daemon.web_url()
    daemon.wait_ready()
    huge, endless = str(2**63), "9" * 5000  # past SQLite's integers; past int()'s digit limit
    paths = [
        f"/files/{huge}/original",
        f"/files/{huge}/result",
        f"/thumbs/{huge}/result.jpg",
        f"/thumbs/{huge}/original.jpg",
        f"/previews/{huge}.jpg",
        f"/thumbs/preset/swirl/{huge}.jpg",
        f"/files/{endless}/original",
        f"/thumbs/{endless}/result.jpg",
        f"/previews/{endless}.jpg",
        f"/thumbs/preset/swirl/{endless}.jpg",
        "/files/-1/original",
        "/files/0/original",
        "/files/abc/result",
        "/files/1e3/result",
        "/files/%EF%BC%91/result",  # a fullwidth digit one: int() would take it
        "/thumbs/preset/swirl/-1.jpg",
        "/previews/x.jpg",
    ]
    before = daemon.log()
    for path in paths:
        code, _, body = _get(url + path)
        assert code == 404, (path[:60], code, body[:200])
    assert _get(url + "/healthz")[0] == 200  # and it still answers
    written = daemon.log()[len(before) :]
    assert "Traceback" not in written and "Exception in ASGI" not in written, written[:3000]
    assert len(written.splitlines()) <= len(paths), written[:3000]


def test_an_unexpected_error_is_one_log_line_a_request_and_its_traceback_once() -> None:
    """A fault a client can cause again and again costs the log a line each time; its
    traceback is written the first time only."""

    async def broken(scope: dict, receive: object, send: object) -> None:
        raise LookupError("no such thing " + "x" * 5000)

    app = OneLineErrors(broken)
    records: list[dict] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        for _ in range(3):
            scope = {"type": "http", "method": "GET", "path": "/files/" + "9" * 5000}
            asyncio.run(app(scope, None, None))
    finally:
        logger.remove(sink)
    assert [r["level"].name for r in records] == ["ERROR"] * 3
    assert [r["exception"] is not None for r in records] == [True, False, False]
    assert all(len(r["message"]) < 600 for r in records), records[0]["message"]
    assert "answered 500 (LookupError: no such thing" in records[0]["message"]
