"""Any name a filesystem allows (issue 23): a name that is not UTF-8 (legacy SMB, FTP and zip
names) goes through the real daemon end to end: the journal, the result, the original, the
page, `status`, the failed list and its retry."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon_harness import (
    Daemons,
    files_under,
    http_request,
    journal_rows,
    photo_bytes,
    stylebox,
    wait_for,
    write_config,
)

TOKEN = "test-token-0123456789abcdef"


def drop_bytes_named(folder: Path, name: bytes, data: bytes) -> None:
    """Write a photo under a name given as bytes, as a legacy share would (temp, then rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = os.fsencode(folder) + b"/.incoming"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(temp, os.fsencode(folder) + b"/" + name)


def test_names_that_are_not_utf8_are_painted_listed_and_retried(
    tmp_path: Path, daemons: Daemons
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n", encoding="utf-8")
    token.chmod(0o600)
    config = write_config(tmp_path, web={"listen": "127.0.0.1:0", "token_file": str(token)})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    url = daemon.web_url()
    drop_bytes_named(inbox, b"caf\xe9.jpg", photo_bytes(0))
    whole = photo_bytes(1)
    drop_bytes_named(inbox, b"broken \xff.jpg", whole[: len(whole) // 2])
    journal = tmp_path / "state" / "journal.sqlite3"
    wait_for(
        lambda: sorted(r["state"] for r in journal_rows(journal)) == ["done", "quarantined"],
        "one photo done and one quarantined",
        daemon=daemon,
    )
    wait_for(lambda: files_under(inbox) == [], "the original moved", daemon=daemon)
    [sidecar] = [json.loads(p.read_text()) for p in (outbox / "swirl").glob("*.json")]
    assert sidecar["source"] == os.fsdecode(b"caf\xe9.jpg")  # read back exactly
    # what the daemon names itself is UTF-8: "_" for each byte that is not
    assert [p.name for p in files_under(outbox / "originals")] == ["caf_.jpg"]
    assert [p.name for p in files_under(outbox / "swirl")] == ["caf_.jpg", "caf_.json"]

    code, _, gallery = http_request("GET", url + "/gallery")
    assert code == 200 and b"caf\\xe9.jpg" in gallery
    code, _, page = http_request("GET", url + "/failed")
    assert code == 200 and b"broken _.jpg" in page
    status = stylebox("status", "--config", config, "--json")
    assert status.returncode == 0, status.stderr
    [failure] = json.loads(status.stdout)["recent_failures"]
    assert failure["source"] == "broken \\xff.jpg"

    error = json.loads((outbox / "failed" / "broken _.jpg.error.json").read_text())
    assert os.fsencode(error["source"]).endswith(b"/broken \xff.jpg")  # where it came from
    headers = {
        "authorization": f"Bearer {TOKEN}",
        "content-type": "application/x-www-form-urlencoded",
    }
    code, _, body = http_request(
        "POST", url + "/failed/retry", body=b"name=broken%20_.jpg", headers=headers
    )
    assert code == 200, body
    assert json.loads(body)["retried"] == "broken _.jpg"
    assert daemon.process.poll() is None
