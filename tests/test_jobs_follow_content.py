"""A job follows its photo's content inside the inbox (issue 23): sync tools rename and move
files all the time, and people delete a photo they dropped by mistake. The real daemon on real
folders; the worker is paused while the queue is rearranged, as a busy worker would leave it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from daemon_harness import (
    Daemons,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    tiny_preset,
    wait_for,
    write_config,
)


def settled(journal: Path) -> bool:
    return all(row["state"] not in ("queued", "running") for row in journal_rows(journal))


def test_renamed_moved_and_deleted_queued_photos(tmp_path: Path, daemons: Daemons) -> None:
    """Renamed and moved: one result each, from the job queued for them; deleted: its job is
    cancelled, nothing in failed/; the same bytes dropped later: a new job, done."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "paused").write_text("paused by the test\n")
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    photos = {name: photo_bytes(index) for index, name in enumerate(("a", "b", "c"))}
    daemon = daemons.start(config)
    daemon.wait_for_log("paused: no new job starts until resumed")
    for name, data in photos.items():
        drop(inbox / f"{name}.jpg", data)
    journal = state / "journal.sqlite3"
    wait_for(lambda: len(journal_rows(journal)) == 3, "three photos queued", daemon=daemon)
    queued = {Path(row["source_path"]).name: row["id"] for row in journal_rows(journal)}

    os.rename(inbox / "a.jpg", inbox / "a renamed.jpg")
    (inbox / "sub").mkdir()
    os.rename(inbox / "b.jpg", inbox / "sub" / "b.jpg")
    (inbox / "c.jpg").unlink()
    daemon.wait_for_log("its job follows it", times=2)
    (state / "paused").unlink()
    wait_for(lambda: settled(journal), "the queue worked through", daemon=daemon)

    rows = {row["id"]: row for row in journal_rows(journal)}
    assert sorted(rows) == sorted([queued["a.jpg"], queued["b.jpg"]])  # c's job is gone
    assert {row["state"] for row in rows.values()} == {"done"}
    assert {Path(row["source_path"]).name for row in rows.values()} == {"a renamed.jpg", "b.jpg"}
    sidecars = [json.loads(p.read_text()) for p in (outbox / "swirl").glob("*.json")]
    digests = {hashlib.sha256(photos[name]).hexdigest() for name in ("a", "b")}
    assert sorted(s["input_sha256"] for s in sidecars) == sorted(digests)
    assert not (outbox / "failed").exists() or files_under(outbox / "failed") == []
    assert files_under(inbox) == []  # both originals went to originals/
    originals = sorted(p.name for p in files_under(outbox / "originals"))
    assert originals == ["a renamed.jpg", "b.jpg"]

    drop(inbox / "c again.jpg", photos["c"])  # the deleted photo, dropped again: a new job
    wait_for(
        lambda: any(
            Path(r["source_path"]).name == "c again.jpg" and r["state"] == "done"
            for r in journal_rows(journal)
        ),
        "the photo dropped again done",
        daemon=daemon,
    )
    assert daemon.count("quarantined") == 0


def test_a_photo_renamed_while_it_is_painted_is_done_once(tmp_path: Path, daemons: Daemons) -> None:
    """Its result is kept, its original (under the new name) disposed of, and the new name is
    not a duplicate to report or a second job."""
    config = write_config(tmp_path, presets={"swirl": tiny_preset(size=64, steps=60)})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    drop(inbox / "long.jpg", photo_bytes(0))
    daemon.wait_for_log(" -> preset swirl")
    time.sleep(0.2)  # the engine is on it
    os.rename(inbox / "long.jpg", inbox / "long renamed.jpg")
    journal = tmp_path / "state" / "journal.sqlite3"
    wait_for(
        lambda: (
            [r["state"] for r in journal_rows(journal)] == ["done"] and files_under(inbox) == []
        ),
        "the job done and its original disposed of",
        daemon=daemon,
    )
    assert [p.name for p in files_under(outbox / "originals")] == ["long renamed.jpg"]
    assert len(list((outbox / "swirl").glob("*.json"))) == 1
    assert daemon.count("duplicate of") == 0


def test_a_kept_photo_replaced_keeping_its_size_and_mtime_is_done_again(
    tmp_path: Path, daemons: Daemons
) -> None:
    """`cp -p` (and sync tools) replace bytes keeping the size and mtime: the memo tells by the
    ctime, which nothing can set back, and the new content gets its own result."""
    config = write_config(tmp_path, originals={"policy": "keep"})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    first, replacement = photo_bytes(0, format="BMP"), photo_bytes(1, format="BMP")
    assert len(first) == len(replacement)  # uncompressed: the same size, as `cp -p` needs
    daemon = daemons.start(config)
    drop(inbox / "kept.bmp", first)
    journal = tmp_path / "state" / "journal.sqlite3"
    wait_for(lambda: settled(journal) and journal_rows(journal), "the first done", daemon=daemon)
    before = os.stat(inbox / "kept.bmp")
    (inbox / "kept.bmp").write_bytes(replacement)
    os.utime(inbox / "kept.bmp", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(inbox / "kept.bmp").st_size == before.st_size
    wait_for(
        lambda: len([r for r in journal_rows(journal) if r["state"] == "done"]) == 2,
        "the new content done too",
        daemon=daemon,
        timeout=60,
    )
    digests = {json.loads(p.read_text())["input_sha256"] for p in (outbox / "swirl").glob("*.json")}
    assert digests == {hashlib.sha256(first).hexdigest(), hashlib.sha256(replacement).hexdigest()}
