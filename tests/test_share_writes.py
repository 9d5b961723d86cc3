"""What a NAS share does to files on their way in, against the real daemon: a Windows client
copying through smbd sets the final size first and fills the file in afterwards, and may pause
for longer than `settle_seconds` half way (issue 23).

Each case writes as such a client does (`write_preallocated`: ftruncate to the final size, half
the bytes, fsync, a pause just over one settle period with the handle still open, the rest) and
checks what the photo's owner sees: exactly one result, made from the final bytes (its sidecar's
`input_sha256`), and with `originals: move` the original moved only once it was whole.

BMP and uncompressed TIFF decode at every byte (the zeros are pixels), so only what the platform
says about the writer keeps them back; PNG and JPEG have an end to check besides. Each runs in
native and in poll mode, with the kernel's word on writers (a read lease: we are the file's owner)
and without it (leases refused, as for another user's file without CAP_LEASE, or on a share): then
native mode has inotify's close event and poll mode only the bytes, looked at twice.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    Daemons,
    daemon_env,
    drop,
    files_under,
    http_request,
    journal_rows,
    photo_bytes,
    results,
    sha256,
    wait_for,
    write_config,
)
from PIL import Image

from daemon.config import JOURNAL_NAME

SETTLE_SECONDS = 1.0
# Where something tells that the writer still has the file (a lease, inotify's close event), the
# pause may be any length: the issue's, long enough that the half file would be stylised and the
# original moved before the rest came.
LONG_PAUSE_SECONDS = 3 * SETTLE_SECONDS
# Where nothing does (poll mode without leases: a share), only the bytes tell: a pause just over
# one settle period is taken by a check of size and mtime alone, and shorter than two, so that
# the second look, a settle period after the first, sees the rest arrive. A longer pause there
# cannot be told from a finished copy of a format without an end marker (BMP, TIFF).
SHORT_PAUSE_SECONDS = 1.4 * SETTLE_SECONDS
WATCH = {
    "settle_seconds": SETTLE_SECONDS,
    "poll_interval_seconds": 0.2,
    "rescan_interval_seconds": 2,
}


@dataclass
class Written:
    """What a preallocating writer saw: whether the file was still where it wrote it (not yet
    moved to originals/ or failed/) once its last byte was written."""

    in_place_when_whole: bool = False


def write_preallocated(path: Path, data: bytes, pause_seconds: float) -> Written:
    """Write `data` to `path` as an SMB client does: the final size first, then the first half,
    fsync, a pause with the handle open, then the rest; close."""
    written = Written()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(descriptor, len(data))
        half = len(data) // 2
        os.pwrite(descriptor, data[:half], 0)
        os.fsync(descriptor)
        time.sleep(pause_seconds)  # the writer's pause is the case under test, not a wait
        os.pwrite(descriptor, data[half:], half)
        os.fsync(descriptor)
        try:
            written.in_place_when_whole = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            written.in_place_when_whole = False
    finally:
        os.close(descriptor)
    return written


def no_leases_env(folder: Path) -> dict[str, str]:
    """Environment in which the daemon's read leases are refused (EACCES), as for a file of another
    user without CAP_LEASE: a sitecustomize module, found through PYTHONPATH, wraps fcntl.fcntl
    (as daemon_harness.slow_fsync_env wraps os.fsync); the daemon's code is not touched."""
    hooks = folder / "no-lease-hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / "sitecustomize.py").write_text(
        "import errno\n"
        "import fcntl\n"
        "\n"
        "_fcntl = fcntl.fcntl\n"
        "\n"
        "\n"
        "def _no_leases(fd, cmd, arg=0):\n"
        "    if cmd == fcntl.F_SETLEASE:\n"
        "        raise OSError(errno.EACCES, 'leases refused by the test')\n"
        "    return _fcntl(fd, cmd, arg)\n"
        "\n"
        "\n"
        "fcntl.fcntl = _no_leases\n",
        encoding="utf-8",
    )
    path = [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]
    return daemon_env(PYTHONPATH=os.pathsep.join(path))


def encoded(format: str, variant: int) -> bytes:
    """A distinct 64x48 photo in `format` (TIFF uncompressed, Pillow's default)."""
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(photo_bytes(variant, format="PNG"))) as image:
        image.save(buffer, format=format, **({"quality": 90} if format == "JPEG" else {}))
    return buffer.getvalue()


# name -> content. The JPEG is one whose first half, zeros after, decodes in full: only its
# missing EOI marker gives it away.
PHOTOS = {
    "scan-bmp.bmp": encoded("BMP", 1),
    "scan-tif.tif": encoded("TIFF", 2),
    "photo-png.png": encoded("PNG", 3),
    "photo-jpg.jpg": photo_bytes(0),
}


def sidecar(outbox: Path, stem: str) -> dict[str, Any]:
    """The JSON written next to the result for `stem` in outbox/swirl."""
    return json.loads((outbox / "swirl" / f"{stem}.json").read_text(encoding="utf-8"))


def outputs(*stems: str) -> list[str]:
    """The names in a preset folder for these photos: image and sidecar each."""
    return sorted(name for stem in stems for name in (f"{stem}.jpg", f"{stem}.json"))


def copy_all(inbox: Path, photos: dict[str, bytes], pause_seconds: float) -> dict[str, Written]:
    """Copy every photo into the inbox at once, each by its own preallocating writer."""
    written: dict[str, Written] = {}

    def copy(name: str) -> None:
        written[name] = write_preallocated(inbox / name, photos[name], pause_seconds)

    threads = [threading.Thread(target=copy, args=(name,)) for name in photos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return written


@pytest.mark.parametrize("leases", [True, False], ids=["lease", "no-lease"])
@pytest.mark.parametrize("mode", ["native", "poll"])
def test_preallocated_copies_are_stylised_once_from_their_final_bytes(
    tmp_path: Path, daemons: Daemons, mode: str, leases: bool
) -> None:
    config = write_config(tmp_path, watch={**WATCH, "mode": mode}, originals={"policy": "move"})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config, env=None if leases else no_leases_env(tmp_path))
    daemon.wait_ready()

    share_alone = mode == "poll" and not leases
    written = copy_all(inbox, PHOTOS, SHORT_PAUSE_SECONDS if share_alone else LONG_PAUSE_SECONDS)

    expected = {"swirl": outputs(*(Path(name).stem for name in PHOTOS))}
    wait_for(
        lambda: results(outbox, ("swirl",)) == expected and not files_under(inbox),
        "one result per photo and an empty inbox",
        daemon=daemon,
        state=lambda: (results(outbox, ("swirl",)), files_under(tmp_path / "outbox")),
    )
    for name, data in PHOTOS.items():
        assert sidecar(outbox, Path(name).stem)["input_sha256"] == sha256(data), name
        assert (outbox / "originals" / name).read_bytes() == data, name
        assert written[name].in_place_when_whole, f"{name} moved away before it was whole"
    assert not (outbox / "failed").exists()
    # No half file ever reached the worker: it would have made a job of its own (its own hash),
    # superseded or stylised, or failed an attempt.
    rows = journal_rows(tmp_path / "state" / JOURNAL_NAME)
    assert sorted(row["content_hash"] for row in rows) == sorted(map(sha256, PHOTOS.values()))
    assert {(row["state"], row["attempts"]) for row in rows} == {("done", 1)}


# -- stalled copies -----------------------------------------------------------------------------

QUICK_WATCH = {"settle_seconds": 0.3, "poll_interval_seconds": 0.2, "rescan_interval_seconds": 1}


def test_a_copy_stalled_with_its_handle_open_is_never_quarantined(
    tmp_path: Path, daemons: Daemons
) -> None:
    """The copy stalls for ten settle periods, its writer holding the file: no verdict while it
    may still be written (it used to be quarantined as truncated after five, and then finished
    writing inside failed/); once written, one result from the whole file."""
    config = write_config(tmp_path, watch={**QUICK_WATCH, "mode": "native"})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    data = encoded("PNG", 4)
    written = write_preallocated(inbox / "stalled.png", data, pause_seconds=3.0)
    assert written.in_place_when_whole
    wait_for(
        lambda: results(outbox, ("swirl",)) == {"swirl": outputs("stalled")},
        "the result",
        daemon=daemon,
    )
    assert sidecar(outbox, "stalled")["input_sha256"] == sha256(data)
    assert not (outbox / "failed").exists()


def test_a_copy_stalled_on_a_share_waits_stalled_seconds_and_comes_back_when_it_resumes(
    tmp_path: Path, daemons: Daemons
) -> None:
    """Poll mode without leases: nothing tells whether the writer is still there. The half file
    waits `stalled_seconds` before it is handed over (and quarantined as truncated); its writer
    then goes on inside failed/, and the next rescan moves it back, to be stylised whole."""
    stalled = 3.0
    watch = {**QUICK_WATCH, "mode": "poll", "stalled_seconds": stalled}
    config = write_config(tmp_path, watch=watch)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    failed = outbox / "failed"
    daemon = daemons.start(config, env=no_leases_env(tmp_path))
    daemon.wait_ready()
    data = encoded("PNG", 5)
    copy = threading.Thread(
        target=write_preallocated, args=(inbox / "stalled.png", data, stalled + 4.0)
    )
    started = time.monotonic()
    copy.start()
    quarantined = wait_for(
        lambda: (failed / "stalled.png").exists() and time.monotonic(),
        "the stalled copy quarantined",
        daemon=daemon,
    )
    assert quarantined - started >= stalled
    copy.join()
    wait_for(
        lambda: results(outbox, ("swirl",)) == {"swirl": outputs("stalled")},
        "the resumed copy stylised",
        daemon=daemon,
        state=lambda: files_under(tmp_path / "outbox"),
    )
    assert sidecar(outbox, "stalled")["input_sha256"] == sha256(data)
    assert not list(failed.iterdir())  # its error file went with it: no orphan
    daemon.wait_for_log("moved back")


# -- the inbox itself ---------------------------------------------------------------------------


def healthz(url: str) -> int:
    """The status /healthz answers."""
    return http_request("GET", url + "/healthz")[0]


def test_an_inbox_removed_and_made_again_is_watched_again_within_seconds(
    tmp_path: Path, daemons: Daemons
) -> None:
    """/healthz says so while it is gone; made again, it is watched at once (no rescan comes
    in this test), with a log line."""
    config = write_config(
        tmp_path, watch={**QUICK_WATCH, "mode": "native", "rescan_interval_seconds": 600}
    )
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    url = daemon.web_url()
    daemon.wait_ready()
    wait_for(lambda: healthz(url) == 200, "the daemon healthy", daemon=daemon)
    inbox.rmdir()
    wait_for(lambda: healthz(url) == 503, "/healthz 503 while the inbox is gone", daemon=daemon)
    inbox.mkdir()
    wait_for(lambda: healthz(url) == 200, "/healthz 200 once it is back", timeout=5, daemon=daemon)
    daemon.wait_for_log("watching it afresh", timeout=5)
    drop(inbox / "after.jpg", photo_bytes(6))
    wait_for(
        lambda: results(outbox, ("swirl",)) == {"swirl": outputs("after")},
        "the photo dropped into the new inbox stylised",
        timeout=20,
        daemon=daemon,
    )
