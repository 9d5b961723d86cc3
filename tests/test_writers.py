"""Writers that misbehave in time, against the real daemon: a photo written in two sittings, and a
photo replaced or deleted while it is being stylised.

The watcher's own tests cover a slow writer, a rename into place, a folder moved in, and the daemon
tests a photo replaced while still queued; these are the cases between those. Each test checks what
the owner of the photo sees at the end: one result per content, made from the whole file, the
original in originals/ only once its own content is done, nothing in failed/ that was not broken.
"""

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from daemon_harness import (
    Daemon,
    Daemons,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    results,
    sha256,
    stylebox,
    tiny_preset,
    wait_for,
    write_config,
)

from daemon.config import JOURNAL_NAME

SETTLE_SECONDS = 0.5
WATCH = {"settle_seconds": SETTLE_SECONDS, "poll_interval_seconds": 0.2}
# Past one settle period, so the watcher looks at (and decodes) the first half on its own; short
# of the five settle periods after which it hands over a file that never decodes (_READY_CHECKS).
LONG_PAUSE_SECONDS = 2.4 * SETTLE_SECONDS
SHORT_PAUSE_SECONDS = 0.2 * SETTLE_SECONDS
# A job of several seconds on a shared 2-core CPU: a change made once it is under way lands in it.
SLOW_PRESETS = {"swirl": tiny_preset(size=64, steps=60)}
# CPU the daemon burns on a job before we call it "in the engine": hashing and decoding a 64 px
# photo take milliseconds, and the idle daemon needs minutes for this much.
ENGINE_CPU_SECONDS = 1.0
UNFINISHED = ("queued", "running")
STOP_SECONDS = 10.0


def outputs(*stems: str) -> list[str]:
    """The names in a preset folder for these photos: image and sidecar each."""
    return sorted(name for stem in stems for name in (f"{stem}.jpg", f"{stem}.json"))


def sidecar(outbox: Path, stem: str) -> dict[str, Any]:
    """The JSON written next to the result for `stem` in outbox/swirl."""
    return json.loads((outbox / "swirl" / f"{stem}.json").read_text(encoding="utf-8"))


def rows(tmp_path: Path) -> list[dict[str, Any]]:
    """The daemon's journal, read as `stylebox status` would."""
    return journal_rows(tmp_path / "state" / JOURNAL_NAME)


def all_finished(tmp_path: Path) -> bool:
    """Jobs exist and none is queued or running, and the inbox holds no file."""
    found = rows(tmp_path)
    return (
        bool(found)
        and all(row["state"] not in UNFINISHED for row in found)
        and not files_under(tmp_path / "inbox")
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def wait_until_stylizing(daemon: Daemon, tmp_path: Path, name: str) -> dict[str, Any]:
    """Wait until the job for `name` is inside the engine, past every check on the photo; its row.

    The worker records the planned output after checking the photo's hash and before loading it; a
    second of CPU after that can only be the engine. The job must still be running afterwards, or
    the test did not test what it says (make the preset slower).
    """

    def planned() -> dict[str, Any] | None:
        for row in rows(tmp_path):
            if Path(row["source_path"]).name == name and row["planned_output"]:
                return row
        return None

    row = wait_for(planned, f"the job for {name} past its checks", daemon=daemon)
    start = cpu_seconds(daemon.process.pid)
    wait_for(
        lambda: cpu_seconds(daemon.process.pid) - start >= ENGINE_CPU_SECONDS,
        f"{ENGINE_CPU_SECONDS} s of CPU spent on {name}",
        daemon=daemon,
    )
    [now] = [found for found in rows(tmp_path) if found["id"] == row["id"]]
    assert now["state"] == "running", f"{name} was done before the test could change it: {now}"
    return now


# -- written in two sittings --------------------------------------------------------------------


def write_in_two_sittings(path: Path, data: bytes, head_bytes: int, pause_seconds: float) -> None:
    """Write the head and close; reopen after the pause and append the rest (a resumed copy)."""
    with path.open("wb") as file:
        file.write(data[:head_bytes])
    time.sleep(pause_seconds)  # the writer's pause, which is the case under test, not a wait
    with path.open("ab") as file:
        file.write(data[head_bytes:])


def test_a_photo_written_in_two_sittings_is_stylized_once_from_its_whole_content(
    tmp_path: Path, daemons: Daemons
) -> None:
    """A pause shorter than settle_seconds never lets the file settle; a longer one does, and then
    only the decode check stands between the half file and the engine. Pillow decodes a PNG that
    lacks its last chunk (IEND), so the PNG cut there is the case that needs more than decoding."""
    config = write_config(tmp_path, watch=WATCH)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()

    jpeg, png = photo_bytes(0), photo_bytes(1, format="PNG")
    writers = {
        # name: (whole content, bytes in the first sitting, pause)
        "short_pause.jpg": (photo_bytes(2), len(photo_bytes(2)) // 2, SHORT_PAUSE_SECONDS),
        "long_pause.jpg": (jpeg, len(jpeg) // 2, LONG_PAUSE_SECONDS),
        "long_pause_before_iend.png": (png, len(png) - 12, LONG_PAUSE_SECONDS),
    }
    threads = [
        threading.Thread(target=write_in_two_sittings, args=(inbox / name, *writer))
        for name, writer in writers.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stems = [Path(name).stem for name in writers]
    wait_for(
        lambda: all_finished(tmp_path) and len(rows(tmp_path)) >= len(writers),
        "every photo's job finished and the inbox empty",
        daemon=daemon,
        state=lambda: (rows(tmp_path), files_under(tmp_path)),
    )
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(STOP_SECONDS) == 0

    assert results(outbox, ("swirl",)) == {"swirl": outputs(*stems)}
    for name, (data, _, _) in writers.items():
        assert sidecar(outbox, Path(name).stem)["input_sha256"] == sha256(data), name
        assert (outbox / "originals" / name).read_bytes() == data
    assert sorted(row["content_hash"] for row in rows(tmp_path)) == sorted(
        sha256(data) for data, _, _ in writers.values()
    )
    # No half file ever reached the worker: it would have failed an attempt, or made a job of its
    # own (its own hash), or a result from it.
    assert {(row["state"], row["attempts"]) for row in rows(tmp_path)} == {("done", 1)}
    assert not (outbox / "failed").exists()


# -- replaced or deleted mid-job ----------------------------------------------------------------


def test_a_photo_replaced_while_it_is_stylized_is_done_once_with_its_new_content(
    tmp_path: Path, daemons: Daemons
) -> None:
    """The old content's result is not delivered: its owner replaced it, a result for it would be
    a second output for one name (swap.jpg and swap-1.jpg), and a file that changes under the
    engine may have been a half-written one that happened to decode. The new content must stay in
    the inbox until its own job is done, and then be stylised once."""
    config = write_config(tmp_path, presets=SLOW_PRESETS, watch=WATCH)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    old_digest = drop(inbox / "swap.jpg", photo_bytes(0))
    first = wait_until_stylizing(daemon, tmp_path, "swap.jpg")
    new = photo_bytes(1)
    new_digest = drop(inbox / "swap.jpg", new)  # rewritten in place, as cp or an editor's save does
    wait_for(
        lambda: all_finished(tmp_path),
        "both contents' jobs finished and the inbox empty",
        timeout=180,
        daemon=daemon,
        state=lambda: (rows(tmp_path), files_under(tmp_path)),
    )

    assert daemon.process.poll() is None
    by_hash = {row["content_hash"]: row for row in rows(tmp_path)}
    assert by_hash.keys() == {old_digest, new_digest}
    assert by_hash[old_digest]["id"] == first["id"]
    assert by_hash[new_digest]["state"] == "done"
    assert by_hash[old_digest]["state"] == "failed"  # superseded, as when replaced while queued
    assert results(outbox, ("swirl",)) == {"swirl": outputs("swap")}
    assert sidecar(outbox, "swap")["input_sha256"] == new_digest
    assert [p.name for p in (outbox / "originals").iterdir()] == ["swap.jpg"]
    assert (outbox / "originals" / "swap.jpg").read_bytes() == new
    assert not (outbox / "failed").exists()


def test_a_photo_deleted_while_it_is_stylized_is_delivered_once_and_the_daemon_goes_on(
    tmp_path: Path, daemons: Daemons
) -> None:
    """The photo was whole and checked when the job began, so its result is delivered (a sync tool
    may have taken the file; the work is not thrown away). Nothing is quarantined, no original is
    invented, the journal says done with the outputs on disk, and the next photo is done as
    usual."""
    config = write_config(tmp_path, presets=SLOW_PRESETS, watch=WATCH)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    digest = drop(inbox / "gone.jpg", photo_bytes(0))
    wait_until_stylizing(daemon, tmp_path, "gone.jpg")
    (inbox / "gone.jpg").unlink()
    wait_for(lambda: all_finished(tmp_path), "the job finished", timeout=180, daemon=daemon)

    [row] = rows(tmp_path)
    assert row["state"] == "done" and row["attempts"] == 1, row
    assert results(outbox, ("swirl",)) == {"swirl": outputs("gone")}
    assert sorted(json.loads(row["outputs"])) == [
        str(outbox / "swirl" / name) for name in ("gone.jpg", "gone.json")
    ]
    assert sidecar(outbox, "gone")["input_sha256"] == digest
    assert not (outbox / "failed").exists()
    assert not (outbox / "originals" / "gone.jpg").exists()

    after = drop(inbox / "after.jpg", photo_bytes(1))
    wait_for(
        lambda: all_finished(tmp_path) and len(rows(tmp_path)) == 2,
        "the next photo done",
        timeout=180,
        daemon=daemon,
    )
    assert sidecar(outbox, "after")["input_sha256"] == after
    status = stylebox("status", "--config", config, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"] == {
        "queued": 0,
        "running": 0,
        "done": 2,
        "failed": 0,
        "quarantined": 0,
    }
    # A watcher that trips over the vanished file logs the exception and carries on; only the log
    # tells. Both results' lines read, so the levels are read right.
    levels = daemon.levels()
    assert (levels["SUCCESS"], levels["ERROR"], levels["CRITICAL"]) == (2, 0, 0), levels
