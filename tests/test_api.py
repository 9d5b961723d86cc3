"""The HTTP API (/api/v1) of the real daemon over real HTTP on loopback: photos sent with and
without the token, refused as what they are (not an image, a broken one, too large while it
streams, an unknown preset), hostile file names, the job followed to its result, the same bytes
sent twice, the page's session and the share target, a restart mid-upload, and the OpenAPI
document checked by openapi-spec-validator against the routes in the code."""

from __future__ import annotations

import contextlib
import io
import json
import re
import select
import signal
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    STYLES,
    Daemon,
    Daemons,
    http_request,
    journal_rows,
    photo_bytes,
    wait_for,
    write_config,
)
from openapi_spec_validator import validate
from PIL import Image

from daemon.web.api import Api

TOKEN = "test-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
LIMIT_MB = 1
WRITE = {"authorization": f"Bearer {TOKEN}"}
READ = {"authorization": f"Bearer {READ_TOKEN}"}


def _form(
    files: list[tuple[str, bytes, bytes]], fields: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """A multipart/form-data body written byte by byte, so that a file name goes out exactly
    as given (NUL, `..`, `/`): (body, content type)."""
    boundary = b"stylebox-test-boundary-7f3a"
    body = b""
    for name, value in (fields or {}).items():
        body += b"--" + boundary + b"\r\n"
        body += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value.encode() + b"\r\n"
    for field, filename, data in files:
        body += b"--" + boundary + b"\r\n"
        body += f'Content-Disposition: form-data; name="{field}"; filename="'.encode()
        body += filename + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary.decode()}"


def _send(
    url: str, data: bytes, *, name: bytes = b"photo.jpg", headers=None, **fields: str
) -> tuple[int, dict[str, str], dict]:
    """POST one photo to /api/v1/photos: status, headers, the JSON answer."""
    body, kind = _form([("file", name, data)], fields)
    code, answer_headers, answer = http_request(
        "POST",
        url + "/api/v1/photos",
        body=body,
        headers={"content-type": kind, **(WRITE if headers is None else headers)},
    )
    return code, answer_headers, json.loads(answer) if answer else {}


def _get_json(url: str, path: str, headers=None) -> tuple[int, dict]:
    code, _, body = http_request("GET", url + path, headers=READ if headers is None else headers)
    return code, json.loads(body)


def _broken_jpeg() -> bytes:
    whole = photo_bytes(5)
    return whole[: len(whole) // 2]  # the header says JPEG; the rest is missing


def _uploads_left(folder: Path) -> list[str]:
    """What is in state_dir/uploads and the inbox's temps: what an upload could leave."""
    left = [p.name for p in (folder / "state" / "uploads").glob("*")]
    return left + [p.name for p in (folder / "inbox").rglob(".*")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str, Path]]:
    """One daemon for the module (a start costs seconds on 2 cores): a token, a read token,
    uploads of at most LIMIT_MB."""
    folder = tmp_path_factory.mktemp("api")
    (folder / "token").write_text(TOKEN + "\n")
    (folder / "read-token").write_text(READ_TOKEN + "\n")
    web = {
        "listen": "127.0.0.1:0",
        "token_file": str(folder / "token"),
        "read_token_file": str(folder / "read-token"),
        "max_upload_mb": LIMIT_MB,
    }
    (folder / "paintings").mkdir()
    config = write_config(
        folder, web=web, originals={"policy": "keep"}, paintings=str(folder / "paintings")
    )
    started = Daemons()
    daemon = started.start(config)
    url = daemon.web_url()
    daemon.wait_ready()
    yield daemon, url, folder
    started.close()


def test_no_write_without_the_token_and_the_read_token_only_reads(site) -> None:
    _daemon, url, folder = site
    code, headers, answer = _send(url, photo_bytes(0), headers={})
    assert code == 401 and headers["www-authenticate"] == "Bearer"
    assert "Bearer" in answer["detail"]
    code, _, answer = _send(url, photo_bytes(0), headers={"authorization": "Bearer wrong-token"})
    assert code == 401
    code, _, answer = _send(url, photo_bytes(0), headers=READ)
    assert code == 403 and "read token" in answer["detail"]
    # with a read token configured, reads need one of the two tokens
    assert _get_json(url, "/api/v1/jobs", headers={})[0] == 401
    assert _get_json(url, "/api/v1/jobs", headers=READ)[0] == 200
    assert _get_json(url, "/api/v1/presets", headers=WRITE)[0] == 200
    assert list((folder / "inbox").rglob("*")) == [] and _uploads_left(folder) == []


def test_with_a_read_token_the_page_needs_a_login_too_and_the_read_token_only_looks(
    site,
) -> None:
    """Someone who sets a read token to keep the photos private finds the page closed as well
    as the API: pages lead to the login form, pictures and figures are 401. The read token logs
    in to look, never to act."""
    _daemon, url, folder = site
    browser = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for path in ("/", "/gallery?preset=swirl", "/failed", "/presets", "/view/1"):
        code, headers, _ = http_request("GET", url + path, headers=browser)
        expected = "/login?" + urllib.parse.urlencode({"next": path})
        assert (code, headers.get("location")) == (303, expected), path
    closed = ("/files/1/result", "/thumbs/1/result.jpg", "/thumbs/preset/swirl/0.jpg")
    for path in (*closed, "/previews/1.jpg", "/api/status", "/metrics", "/gallery"):
        code, headers, _ = http_request("GET", url + path)
        assert (code, headers.get("www-authenticate")) == (401, "Bearer"), path
    for path in ("/healthz", "/login", "/manifest.webmanifest", "/static/app.css"):
        assert http_request("GET", url + path)[0] == 200, path
    assert http_request("GET", url + "/metrics", headers=READ)[0] == 200  # a scraper's token
    assert http_request("GET", url + "/api/status", headers=WRITE)[0] == 200
    assert http_request("GET", url + "/thumbs/preset/swirl/0.jpg", headers=READ)[0] == 200

    form = {"content-type": "application/x-www-form-urlencoded"}
    code, headers, _ = http_request(
        "POST", url + "/login", body=urllib.parse.urlencode({"token": "x"}).encode(), headers=form
    )
    assert code == 401 and "set-cookie" not in headers
    # the login goes back to the page that led to it, and never to another site
    _, _, page = http_request("GET", url + "/login?next=%2Fview%2F1")
    assert b'name="next" value="/view/1"' in page
    for after, expected in (("/view/1", "/view/1"), ("//evil.example/", "/"), ("/\\x", "/")):
        fields = {"token": READ_TOKEN, "next": after}
        code, headers, _ = http_request(
            "POST", url + "/login", body=urllib.parse.urlencode(fields).encode(), headers=form
        )
        assert (code, headers["location"]) == (303, expected), after
    cookie = {"cookie": headers["set-cookie"].split(";")[0]}
    code, _, page = http_request("GET", url + "/", headers={**browser, **cookie})
    assert code == 200 and b"read-only" in page and b"Log out" in page
    assert b'id="upload-files"' not in page  # no upload panel for a session that only looks
    assert http_request("GET", url + "/thumbs/preset/swirl/0.jpg", headers=cookie)[0] == 200
    assert _get_json(url, "/api/v1/jobs", headers=cookie)[0] == 200

    csrf = re.search(rb'name="csrf" value="([0-9a-f]+)"', page)[1].decode()
    inbox_before = sorted((folder / "inbox").rglob("*"))
    code, _, answer = http_request(
        "POST",
        url + "/pause",
        body=urllib.parse.urlencode({"csrf": csrf}).encode(),
        headers={**form, **cookie},
    )
    assert code == 403 and b"read token only reads" in answer
    assert not (folder / "state" / "paused").exists()
    code, _, answer = _send(url, photo_bytes(40), headers={**cookie, "x-csrf-token": csrf})
    assert code == 403 and "read token only reads" in answer["detail"]
    assert sorted((folder / "inbox").rglob("*")) == inbox_before


def test_a_photo_goes_through_to_its_result_and_the_same_bytes_are_one_job(site) -> None:
    daemon, url, folder = site
    photo = photo_bytes(1)
    code, headers, job = _send(url, photo, name=b"holiday.jpg", preset="glass")
    assert code == 202, job
    assert job["created"] and job["preset"] == "glass" and job["name"] == "holiday.jpg"
    assert headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (folder / "inbox" / "glass" / "holiday.jpg").read_bytes() == photo

    def done() -> dict | None:
        now = _get_json(url, job["links"]["self"])[1]
        return now if now["state"] == "done" else None

    finished = wait_for(done, "the job done", daemon=daemon)
    assert finished["result"]["formats"] == ["jpg", "json"]
    assert finished["links"]["page"] == f"/view/{job['id']}"
    code, headers, image = http_request("GET", url + finished["links"]["result"], headers=READ)
    assert code == 200 and headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(image)) as painted:
        assert max(painted.size) == 40  # the tiny preset's size
    code, headers, _ = http_request("GET", url + finished["links"]["download"], headers=READ)
    assert code == 200 and headers["content-disposition"].startswith("attachment")
    code, _, sidecar = http_request(
        "GET", url + finished["links"]["result"] + "?format=json", headers=READ
    )
    assert code == 200 and json.loads(sidecar)["preset"] == "glass"
    assert _get_json(url, f"/api/v1/jobs/{job['id']}/result?format=png")[0] == 404

    # the same bytes again, under another name: the same job, nothing written
    code, _, again = _send(url, photo, name=b"copy.jpg", preset="glass")
    assert code == 202 and again["id"] == job["id"] and not again["created"]
    assert not (folder / "inbox" / "glass" / "copy.jpg").exists()
    page = _get_json(url, "/api/v1/jobs?state=done&preset=glass&page_size=1")[1]
    assert page["total"] == 1 and page["jobs"][0]["id"] == job["id"]
    # the watcher comes across the upload too: still one job, queued once
    time.sleep(1.0)  # several of the watcher's settle periods (0.3 s)
    rows = [row for row in journal_rows(folder / "state" / "journal.sqlite3")]
    assert [row["id"] for row in rows if row["preset"] == "glass"] == [job["id"]]
    assert daemon.count("queued glass/holiday.jpg") == 1


def test_uploads_are_refused_as_what_they_are(site) -> None:
    _daemon, url, folder = site
    before = sorted((folder / "inbox").rglob("*"))
    code, _, answer = _send(url, b"#!/bin/sh\necho hello\n", name=b"script.jpg")
    assert code == 415 and "not an image" in answer["detail"], answer
    code, _, answer = _send(url, _broken_jpeg(), name=b"half.jpg")
    assert code == 422 and answer["detail"].startswith("half.jpg: "), answer
    code, _, answer = _send(url, photo_bytes(2), preset="no-such-preset")
    assert code == 422 and "'no-such-preset'" in answer["detail"], answer
    code, _, answer = _send(url, photo_bytes(2), preset="../../etc")
    assert code == 422
    body, kind = _form([], {"preset": "swirl"})
    code, _, answer = http_request(
        "POST", url + "/api/v1/photos", body=body, headers={"content-type": kind, **WRITE}
    )
    assert code == 422 and "no file" in json.loads(answer)["detail"]
    code, _, _ = http_request(
        "POST", url + "/api/v1/photos", body=b"x", headers={"content-type": "image/jpeg", **WRITE}
    )
    assert code == 415
    assert sorted((folder / "inbox").rglob("*")) == before and _uploads_left(folder) == []


def test_an_oversized_upload_is_refused_while_it_streams(site) -> None:
    _daemon, url, folder = site
    # said by its Content-Length: refused before a byte of it is read
    body, kind = _form([("file", b"big.jpg", b"\xff" * (LIMIT_MB * 1024 * 1024 + 100_000))])
    code, _, answer = http_request(
        "POST", url + "/api/v1/photos", body=body, headers={"content-type": kind, **WRITE}
    )
    assert code == 413 and "max_upload_mb" in json.loads(answer)["detail"]
    # not said (chunked): refused once past the limit, long before the body's end
    total = 20 * LIMIT_MB * 1024 * 1024
    with _chunked_upload(url) as connection:
        sent = _send_chunks(connection, total, until_reply=True)
        reply = connection.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < total / 2
    wait_for(lambda: _uploads_left(folder) == [], "the cut upload's temp removed")
    assert not any(p.is_file() for p in (folder / "inbox").rglob("*big*"))


CHUNK = b"\xff\xd8" + b"\x00" * (64 * 1024 - 2)


def _chunked_upload(url: str) -> socket.socket:
    """A raw connection that has begun to POST a photo form without a Content-Length
    (chunked), up to the file's first byte; the caller sends the chunks."""
    parts = urllib.parse.urlsplit(url)
    head, kind = _form([("file", b"stream.jpg", b"")])
    opening = head[: head.index(b"\r\n--stylebox-test-boundary-7f3a--")]
    request = (
        f"POST /api/v1/photos HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: {kind}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    connection = socket.create_connection((parts.hostname, parts.port), timeout=30)
    connection.sendall(request + b"%x\r\n%s\r\n" % (len(opening), opening))
    return connection


def _send_chunks(connection: socket.socket, total: int, *, until_reply: bool) -> int:
    """Send up to `total` bytes of the file; with `until_reply`, stop once the server has
    answered (before the end); how many were sent."""
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while sent < total:
            connection.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            sent += len(CHUNK)
            if until_reply and select.select([connection], [], [], 0)[0]:
                break
    return sent


def test_hostile_file_names_reach_no_path_but_a_safe_name(site) -> None:
    _daemon, url, folder = site
    inbox = folder / "inbox"
    names = {
        b"../../escape.jpg": "escape.jpg",
        b"/etc/passwd.jpg": "passwd.jpg",
        b"a\x00b.jpg": "a_b.jpg",
        b"new\nline.jpg": "new_line.jpg",  # a bare newline inside the part's header
        b".hidden.jpg": "hidden.jpg",
        b"thumbs.db": None,  # a name the watcher passes over: one of the hash
    }
    for variant, (name, expected) in enumerate(names.items(), start=10):
        code, _, answer = _send(url, photo_bytes(variant), name=name)
        assert code == 202, (name, answer)
        made = answer["name"]
        assert "/" not in made and "\x00" not in made and "\n" not in made
        assert not made.startswith(".")
        if expected is not None:
            assert made == expected
        assert (inbox / made).is_file()
    assert not (folder / "escape.jpg").exists() and not (folder.parent / "escape.jpg").exists()
    assert all(p.parent == inbox for p in inbox.glob("*") if p.is_file())


def test_the_page_session_acts_only_with_its_csrf_header_and_the_share_target(site) -> None:
    _daemon, url, folder = site
    code, headers, _ = http_request(
        "POST",
        url + "/login",
        body=urllib.parse.urlencode({"token": TOKEN}).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert code == 303
    cookie = headers["set-cookie"].split(";")[0]
    _, _, page = http_request("GET", url + "/", headers={"cookie": cookie})
    csrf = re.search(rb'data-csrf="([0-9a-f]+)"', page)[1].decode()
    assert b'id="upload-files"' in page and b"/thumbs/preset/swirl/0.jpg" in page
    # a cookie alone changes nothing: another site's form could send it
    code, _, answer = _send(url, photo_bytes(30), headers={"cookie": cookie})
    assert code == 403 and "stale or from another site" in answer["detail"]
    code, _, _ = _send(
        url,
        photo_bytes(30),
        headers={"cookie": cookie, "x-csrf-token": csrf, "origin": "http://evil.example"},
    )
    assert code == 403
    code, _, answer = _send(
        url,
        photo_bytes(30),
        headers={"cookie": cookie, "x-csrf-token": csrf, "sec-fetch-site": "same-origin"},
    )
    assert code == 202 and answer["created"]
    assert _get_json(url, f"/api/v1/jobs/{answer['id']}", headers={"cookie": cookie})[0] == 200

    # the share target: the session, and the browser's word that it sent it itself
    body, kind = _form([("file", b"shared-1.jpg", photo_bytes(31))])
    for fetch_site, expected in (("cross-site", 403), (None, 403), ("none", 303)):
        sent = {"content-type": kind, "cookie": cookie}
        if fetch_site is not None:
            sent["sec-fetch-site"] = fetch_site
        code, headers, _ = http_request("POST", url + "/share", body=body, headers=sent)
        assert code == expected, fetch_site
    assert re.fullmatch(r"/\?shared=\d+", headers["location"])
    assert (folder / "inbox" / "shared-1.jpg").is_file()
    code, headers, _ = http_request(
        "POST", url + "/share", body=body, headers={"content-type": kind}
    )
    assert code == 303 and headers["location"] == "/login"  # not logged in: nothing taken

    code, headers, manifest = http_request("GET", url + "/manifest.webmanifest")
    assert code == 200 and headers["content-type"].startswith("application/manifest+json")
    share = json.loads(manifest)["share_target"]
    assert share["action"] == "/share" and share["enctype"] == "multipart/form-data"
    assert share["params"]["files"][0]["name"] == "file"


def test_the_openapi_document_validates_and_lists_every_route(site) -> None:
    _daemon, url, _folder = site
    code, _, body = http_request("GET", url + "/api/v1/openapi.json")
    assert code == 200
    document = json.loads(body)
    validate(document)  # raises with the first fault
    assert document["servers"] == [{"url": "/api/v1"}]
    listed = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    in_code = {
        (route.path, method)
        for route in Api(None, None, None, None).router().routes  # type: ignore[arg-type]
        for method in route.methods
    }
    assert listed == in_code
    assert ("/photos", "POST") in listed and ("/jobs/{job_id}/result", "GET") in listed
    form = document["paths"]["/photos"]["post"]["requestBody"]["content"]
    assert form["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    # the docs page works offline: Swagger UI's files come from the daemon itself
    code, headers, page = http_request("GET", url + "/api/v1/docs")
    assert code == 200 and b"https://" not in page and b"http://" not in page
    assert "script-src 'self'" in headers["content-security-policy"]
    for asset in re.findall(rb'(?:src|href)="(/api/v1/docs/[^"]+)"', page):
        code, _, content = http_request("GET", url + asset.decode())
        assert code == 200 and len(content) > 100


def test_a_painting_added_by_the_api_paints_a_photo_and_is_removed_by_it(site) -> None:
    daemon, url, folder = site
    with (STYLES / "stained_glass.png").open("rb") as file, Image.open(file) as painting:
        small = io.BytesIO()
        painting.convert("RGB").resize((48, 48)).save(small, "PNG")
    form = {"name": "Rose Window", "parameters": json.dumps({"size": 32, "steps": 2})}
    body, kind = _form([("painting", b"window.png", small.getvalue())], form)
    code, _, answer = http_request(
        "POST", url + "/api/v1/presets", body=body, headers={"content-type": kind, **WRITE}
    )
    assert code == 202, answer
    added = json.loads(answer)
    assert added == {"name": "Rose_Window", "file": "Rose_Window.png"}

    def listed() -> dict | None:
        presets = _get_json(url, "/api/v1/presets")[1]
        return next((p for p in presets if p["name"] == "Rose_Window"), None)

    preset = wait_for(listed, "the painting a preset", daemon=daemon)
    assert preset["from_painting"] and preset["changed"] == {"size": 32, "steps": 2}
    code, _, job = _send(url, photo_bytes(60), preset="Rose_Window")
    assert code == 202, job
    done = wait_for(
        lambda: (now := _get_json(url, f"/api/v1/jobs/{job['id']}")[1])["state"] == "done" and now,
        "the photo painted with it",
        daemon=daemon,
    )
    assert (
        done["preset"] == "Rose_Window"
        and max(done["result"]["width"], done["result"]["height"]) == 32
    )

    # refusals: not an image, a config preset, none of that name
    body, kind = _form([("painting", b"notes.png", b"not a painting")], {"name": "notes"})
    code, _, answer = http_request(
        "POST", url + "/api/v1/presets", body=body, headers={"content-type": kind, **WRITE}
    )
    assert code == 422, answer
    code, _, answer = http_request("DELETE", url + "/api/v1/presets/swirl", headers=WRITE)
    assert code == 409, answer
    code, _, answer = http_request("DELETE", url + "/api/v1/presets/Rose_Window", headers=READ)
    assert code == 403
    code, _, answer = http_request("DELETE", url + "/api/v1/presets/Rose_Window", headers=WRITE)
    assert code == 200 and sorted(json.loads(answer)["removed"]) == [
        "Rose_Window.png",
        "Rose_Window.yaml",
    ]
    assert list((folder / "paintings").iterdir()) == []
    wait_for(lambda: listed() is None, "the preset gone", daemon=daemon)
    code, _, _ = http_request("DELETE", url + "/api/v1/presets/Rose_Window", headers=WRITE)
    assert code == 404


def test_a_restart_mid_upload_leaves_no_photo_and_no_temp(site) -> None:
    daemon, url, folder = site
    jobs_before = len(journal_rows(folder / "state" / "journal.sqlite3"))
    uploads = folder / "state" / "uploads"
    with _chunked_upload(url) as connection:
        _send_chunks(connection, 512 * 1024, until_reply=False)
        wait_for(lambda: list(uploads.glob(".upload-*")), "the upload's temp in state_dir")
        # and what a crash while it is copied into the inbox would leave there
        (folder / "inbox" / ".stylebox-tmp-cut").write_bytes(photo_bytes(40)[:100])
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(30)
    again = Daemon(daemon.config)
    try:
        again.web_url()
        again.wait_ready()
        assert _uploads_left(folder) == []
        assert again.count("upload(s) a stop cut short") == 1
        time.sleep(1.0)  # the watcher's settle periods: nothing of it becomes a job
        assert len(journal_rows(folder / "state" / "journal.sqlite3")) == jobs_before
    finally:
        again.kill()


def test_without_a_token_the_api_only_reads_and_the_page_says_how_to_send(
    tmp_path: Path, daemons: Daemons
) -> None:
    daemon = daemons.start(write_config(tmp_path))
    url = daemon.web_url()
    code, _, answer = _send(url, photo_bytes(50), headers={})
    assert code == 403 and "web.token_file" in answer["detail"]
    assert _get_json(url, "/api/v1/presets", headers={})[0] == 200  # reads open, as the page's
    _, _, page = http_request("GET", url + "/")
    assert b"Uploads are off" in page and b"web.token_file" in page
    assert b'id="upload-files"' not in page
    assert list((tmp_path / "inbox").rglob("*")) == []
