"""The daemon end to end: the real `stylebox run` as a subprocess on real photos in tmp_path.

Each test writes its own config (tiny presets, so a job takes about a second on a CPU), drops photos
the ways people and programs do, and waits on a deadline for what must follow. The daemon loads
VGG-19 at each start, so tests share a daemon between steps rather than start one per assertion.
"""

import json
import math
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import (
    JOB_SECONDS,
    START_SECONDS,
    daemon_env,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    results,
    sha256,
    stylebox,
    temp_files,
    tiny_preset,
    wait_for,
    write_config,
)
from PIL import Image

from daemon.config import JOURNAL_NAME
from daemon.errors import ExitCode
from daemon.outbox import TEMP_PREFIX

STOP_SECONDS = 10.0  # what systemd and users expect after SIGTERM
# Long enough to be interrupted for sure, short enough to finish quickly after a restart.
SLOW_PRESETS = {"swirl": tiny_preset(size=64, steps=30)}


def outputs(*stems: str, ext: str = "jpg") -> list[str]:
    """The names in a preset folder of the outbox for these photos: image and sidecar each."""
    return sorted(name for stem in stems for name in (f"{stem}.{ext}", f"{stem}.json"))


def jobs(folder: Path) -> list[tuple[str, str, int]]:
    """Each journal row as (photo name, state, attempts), sorted: what became of every job."""
    rows = journal_rows(folder / "state" / JOURNAL_NAME)
    return sorted((Path(row["source_path"]).name, row["state"], row["attempts"]) for row in rows)


def assert_result(
    outbox: Path, preset: str, stem: str, input_sha256: str, *, size: int = 40
) -> dict:
    """The image decodes at the preset's size, its sidecar names its source; returns the sidecar."""
    with Image.open(outbox / preset / f"{stem}.jpg") as image:
        image.load()
        assert max(image.size) == size
    sidecar = json.loads((outbox / preset / f"{stem}.json").read_text(encoding="utf-8"))
    assert sidecar["preset"] == preset
    assert sidecar["input_sha256"] == input_sha256
    assert {"content", "style", "total"} <= sidecar["losses"].keys()
    assert all(math.isfinite(value) for value in sidecar["losses"].values())
    assert {"stylebox", "torch", "python"} <= sidecar["versions"].keys()
    return sidecar


# -- photos in, results out -------------------------------------------------------------------


def test_photos_dropped_every_way_are_each_stylized_once(tmp_path, daemons) -> None:
    # A long rescan interval: every drop below must be caught by the watcher's events, not a rescan.
    watch = {"settle_seconds": 0.3, "poll_interval_seconds": 0.2, "rescan_interval_seconds": 300}
    config = write_config(tmp_path, watch=watch)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()

    dropped: dict[str, bytes] = {
        "top.jpg": photo_bytes(0),
        "x.jpg": photo_bytes(1),
        "renamed.jpg": photo_bytes(2),
        "a1.jpg": photo_bytes(3),
        "a2.png": photo_bytes(4, format="PNG"),
        "slow.png": photo_bytes(5, format="PNG", size=(160, 120)),
    }
    drop(inbox / "top.jpg", dropped["top.jpg"])  # saved straight into the inbox
    drop(inbox / "glass" / "x.jpg", dropped["x.jpg"])  # into a preset's folder
    drop(inbox / "renamed.jpg.part", dropped["renamed.jpg"])  # a download, renamed when whole
    os.rename(inbox / "renamed.jpg.part", inbox / "renamed.jpg")
    staging = tmp_path / "staging" / "album"  # a folder filled elsewhere, then moved in whole
    drop(staging / "a1.jpg", dropped["a1.jpg"])
    drop(staging / "a2.png", dropped["a2.png"])
    os.rename(staging, inbox / "album")
    # A slow copy: 1 KB every 0.05 s, for several times settle_seconds.
    slow = dropped["slow.png"]
    assert len(slow) > 20 * 1024
    with (inbox / "slow.png").open("wb") as file:
        for start in range(0, len(slow), 1024):
            file.write(slow[start : start + 1024])
            file.flush()
            time.sleep(0.05)

    expected = {
        "swirl": outputs("top", "renamed", "a1", "a2", "slow"),
        "glass": outputs("x"),
    }
    wait_for(
        lambda: results(outbox) == expected and not files_under(inbox),
        f"{expected} in the outbox and an empty inbox",
        daemon=daemon,
        state=lambda: (results(outbox), files_under(inbox)),
    )
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(STOP_SECONDS) == 0

    assert results(outbox) == expected  # nothing twice, no "-1" names
    for name, data in dropped.items():
        preset = "glass" if name == "x.jpg" else "swirl"
        assert_result(outbox, preset, Path(name).stem, sha256(data))
        assert (outbox / "originals" / name).read_bytes() == data  # policy move, bytes intact
    assert sorted(p.name for p in (outbox / "originals").iterdir()) == sorted(dropped)
    # One job per photo, done at its first attempt: none taken for another's duplicate, none
    # quarantined, none run twice.
    assert jobs(tmp_path) == sorted((name, "done", 1) for name in dropped)
    assert not (outbox / "failed").exists()
    assert temp_files(tmp_path) == []


def test_corrupt_photos_are_quarantined_while_good_ones_are_done(tmp_path, daemons) -> None:
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    failed = outbox / "failed"
    daemon = daemons.start(config)
    daemon.wait_ready()

    whole = photo_bytes(0)
    bad = {
        "truncated.jpg": whole[: len(whole) // 2],
        "noise.jpg": random.Random(0).randbytes(4096),
    }
    for name, data in bad.items():
        drop(inbox / name, data)
    good = {"good": drop(inbox / "good.jpg", photo_bytes(1))}
    good["good2"] = drop(inbox / "glass" / "good2.jpg", photo_bytes(2))

    expected_failed = sorted([*bad, *(f"{name}.error.json" for name in bad)])
    wait_for(
        lambda: (
            results(outbox) == {"swirl": outputs("good"), "glass": outputs("good2")}
            and failed.is_dir()
            and sorted(p.name for p in failed.iterdir()) == expected_failed
        ),
        "the good photos done and the bad ones in failed/",
        daemon=daemon,
    )
    assert_result(outbox, "swirl", "good", good["good"])
    assert_result(outbox, "glass", "good2", good["good2"])
    for name, data in bad.items():
        assert (failed / name).read_bytes() == data
        error = json.loads((failed / f"{name}.error.json").read_text(encoding="utf-8"))
        reason = error["reason"]
        assert name in reason and "Traceback" not in reason and len(reason) < 300, reason
        assert error["input_sha256"] == sha256(data)

    # Still up, and still working.
    assert daemon.process.poll() is None
    later = drop(inbox / "later.jpg", photo_bytes(3))
    wait_for(  # the original moves just after the result is published
        lambda: "later.json" in results(outbox).get("swirl", []) and files_under(inbox) == [],
        "later.jpg done and its original moved",
        daemon=daemon,
    )
    assert_result(outbox, "swirl", "later", later)


def test_the_same_photo_under_another_name_is_a_duplicate(tmp_path, daemons) -> None:
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()

    data = photo_bytes(0)
    drop(inbox / "first.jpg", data)
    wait_for(
        lambda: results(outbox) == {"swirl": outputs("first")} and not files_under(inbox),
        "first.jpg done",
        daemon=daemon,
    )
    drop(inbox / "second.jpg", data)
    daemon.wait_for_log("duplicate")
    wait_for(lambda: not files_under(inbox), "second.jpg out of the inbox", daemon=daemon)

    assert results(outbox) == {"swirl": outputs("first")}
    assert jobs(tmp_path) == [("first.jpg", "done", 1)]  # no job of its own for second.jpg
    [line] = [line for line in daemon.log().splitlines() if "duplicate" in line]
    assert "second.jpg" in line and "first.jpg" in line
    assert (outbox / "originals" / "second.jpg").read_bytes() == data


def test_a_photo_replaced_while_queued_is_done_once_with_its_new_content(tmp_path, daemons) -> None:
    config = write_config(tmp_path, presets=SLOW_PRESETS)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    drop(inbox / "busy.jpg", photo_bytes(0))
    daemon.wait_for_log(" -> preset ")  # the worker is busy: the next photo waits in the queue
    drop(inbox / "second.jpg", photo_bytes(1))
    daemon.wait_for_log("queued second.jpg")
    new_digest = drop(inbox / "second.jpg", photo_bytes(2))  # the same name, other bytes
    wait_for(
        lambda: (
            results(outbox, ("swirl",)) == {"swirl": outputs("busy", "second")}
            and not files_under(inbox)
        ),
        "both photos done",
        timeout=3 * JOB_SECONDS,
        daemon=daemon,
    )

    assert assert_result(outbox, "swirl", "second", new_digest, size=64)["attempt"] == 1
    # The job for its first bytes ended without a result, saying why; the new bytes had their own.
    assert jobs(tmp_path) == [
        ("busy.jpg", "done", 1),
        ("second.jpg", "done", 1),
        ("second.jpg", "failed", 1),
    ]
    [old] = [row for row in journal_rows(tmp_path / "state" / JOURNAL_NAME) if row["error"]]
    assert (old["content_hash"], old["outputs"]) == (sha256(photo_bytes(1)), "[]"), old
    assert "changed after it was queued" in old["error"], old
    assert (outbox / "originals" / "second.jpg").read_bytes() == photo_bytes(2)


# -- crashes and signals ----------------------------------------------------------------------


def test_a_job_killed_mid_way_completes_after_a_restart(tmp_path, daemons) -> None:
    config = write_config(tmp_path, presets=SLOW_PRESETS)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    digest = drop(inbox / "long.jpg", photo_bytes(0))
    daemon.wait_for_log(" -> preset ")
    daemon.send(signal.SIGKILL)
    daemon.wait_exit(STOP_SECONDS)

    assert results(outbox, ("swirl",)) == {}  # it really was mid-job
    status = stylebox("status", "--config", config, "--json")
    assert status.returncode == 0, status.stderr
    assert [job["source"] for job in json.loads(status.stdout)["running"]] == ["long.jpg"]
    # What a crash inside atomic_write would leave behind.
    stale = outbox / "swirl" / f"{TEMP_PREFIX}crashed"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half an image")

    restart = daemons.start(config, once=True)
    assert restart.wait_exit(START_SECONDS + JOB_SECONDS) == 0, restart.log_tail()
    assert results(outbox, ("swirl",)) == {"swirl": outputs("long")}
    sidecar = assert_result(outbox, "swirl", "long", digest, size=64)
    assert sidecar["attempt"] == 2  # the killed attempt counts: the photo might be what crashed
    assert restart.count("requeued") == 1
    assert (outbox / "originals" / "long.jpg").exists() and files_under(inbox) == []
    assert temp_files(tmp_path) == []


def test_a_photo_that_kills_the_daemon_each_time_is_given_up(tmp_path, daemons) -> None:
    # Kill the daemon during each of the max_attempts (2) attempts, as a photo that makes it crash
    # (say by exhausting memory) would; the retry limit must then stop the crash loop.
    config = write_config(tmp_path, presets=SLOW_PRESETS)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    drop(inbox / "deadly.jpg", photo_bytes(0))
    for attempt in (1, 2):
        daemon = daemons.start(config)
        daemon.wait_for_log(f"-> preset swirl (attempt {attempt})", timeout=START_SECONDS)
        daemon.send(signal.SIGKILL)
        daemon.wait_exit(STOP_SECONDS)

    restart = daemons.start(config, once=True)
    assert restart.wait_exit(START_SECONDS + JOB_SECONDS) == 0, restart.log_tail()
    # Given up when claimed a third time, before stylising: no output, and the reason says why.
    [row] = journal_rows(tmp_path / "state" / JOURNAL_NAME)
    assert (row["state"], row["outputs"]) == ("failed", "[]"), row
    assert row["error"].startswith("gave up after 2 attempt(s)"), row
    assert results(outbox, ("swirl",)) == {}
    error = json.loads((outbox / "failed" / "deadly.jpg.error.json").read_text(encoding="utf-8"))
    assert "2 attempt" in error["reason"]
    status = json.loads(stylebox("status", "--config", config, "--json").stdout)
    assert status["counts"]["failed"] == 1 and status["counts"]["done"] == 0


def test_sigterm_while_idle_exits_0_promptly(tmp_path, daemons) -> None:
    daemon = daemons.start(write_config(tmp_path))
    daemon.wait_ready()
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(STOP_SECONDS) == 0
    assert daemon.count("stopping") == 1


def test_sigterm_mid_job_exits_0_promptly_and_the_job_runs_at_the_next_start(
    tmp_path, daemons
) -> None:
    config = write_config(tmp_path, presets=SLOW_PRESETS)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    digest = drop(inbox / "long.jpg", photo_bytes(0))
    daemon.wait_for_log(" -> preset ")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(STOP_SECONDS) == 0

    assert daemon.count("stopped mid-job") == 1
    assert results(outbox, ("swirl",)) == {}
    assert (inbox / "long.jpg").read_bytes() == photo_bytes(0)  # untouched
    # Put back in the queue, not recorded as a failure: a stop is not the photo's fault.
    status = stylebox("status", "--config", config, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"]["queued"] == 1 and report["recent_failures"] == []
    assert [(job["source"], job["attempts"]) for job in report["queue"]] == [("long.jpg", 0)]
    restart = daemons.start(config, once=True)
    assert restart.wait_exit(START_SECONDS + JOB_SECONDS) == 0, restart.log_tail()
    assert results(outbox, ("swirl",)) == {"swirl": outputs("long")}
    sidecar = assert_result(outbox, "swirl", "long", digest, size=64)
    assert sidecar["attempt"] == 1  # a stop is not a failed attempt
    assert files_under(inbox) == [] and temp_files(tmp_path) == []


def test_sighup_keeps_the_old_config_when_the_new_one_is_broken(tmp_path, daemons) -> None:
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()

    good_text = config.read_text(encoding="utf-8")
    assert "steps: 4" in good_text
    config.write_text(good_text.replace("steps: 4", "steps: many", 1), encoding="utf-8")
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("reload refused")
    [line] = [line for line in daemon.log().splitlines() if "reload refused" in line]
    assert "keeping" in line
    assert "presets.swirl.steps" in daemon.log()  # and says what is wrong
    digest = drop(inbox / "after_bad.jpg", photo_bytes(0))
    wait_for(lambda: results(outbox) == {"swirl": outputs("after_bad")}, "a drop", daemon=daemon)
    sidecar = assert_result(outbox, "swirl", "after_bad", digest)
    assert sidecar["parameters"]["steps"] == 4  # the old config

    # A valid change: a new preset, whose folder works at once.
    presets = {
        "swirl": tiny_preset(),
        "glass": tiny_preset("stained_glass.png"),
        "ink": tiny_preset("stained_glass.png", style_scale=0.5),
    }
    write_config(tmp_path, presets=presets)
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("config reloaded")
    digest = drop(inbox / "ink" / "inked.jpg", photo_bytes(1))
    wait_for(
        lambda: results(outbox, ("ink",)) == {"ink": outputs("inked")},
        "inked.jpg in outbox/ink",
        daemon=daemon,
    )
    assert assert_result(outbox, "ink", "inked", digest)["parameters"]["style_scale"] == 0.5
    assert daemon.process.poll() is None


def test_sighup_refuses_a_config_that_loops_once_the_old_folders_are_kept(
    tmp_path, daemons
) -> None:
    """A new inbox needs a restart, so the old one stays; originals moved into it would then be
    taken for new photos, recognised as done, and disposed of again: refused, not half-taken."""
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    write_config(
        tmp_path,
        inbox=str(tmp_path / "new_inbox"),
        originals={"policy": "move", "move_to": str(inbox / "done")},
    )
    (tmp_path / "new_inbox").mkdir()  # made by its user: the daemon never makes a root
    daemon.send(signal.SIGHUP)
    daemon.wait_for_log("reload refused")
    assert "originals.move_to: inside inbox" in daemon.log()
    digest = drop(inbox / "kept.jpg", photo_bytes(0))
    wait_for(lambda: results(outbox) == {"swirl": outputs("kept")}, "kept.jpg", daemon=daemon)
    assert_result(outbox, "swirl", "kept", digest)
    wait_for(lambda: files_under(inbox) == [], "the original moved out of the inbox", daemon=daemon)
    assert sorted(path.name for path in (outbox / "originals").iterdir()) == ["kept.jpg"]


def test_sighup_during_start_up_does_not_kill_the_daemon(tmp_path, daemons) -> None:
    daemon = daemons.start(write_config(tmp_path))
    daemon.wait_for_log("loading VGG-19", timeout=START_SECONDS)  # loading takes seconds
    daemon.send(signal.SIGHUP)
    daemon.wait_ready()
    digest = drop(tmp_path / "inbox" / "early.jpg", photo_bytes(0))
    wait_for(
        lambda: results(tmp_path / "outbox") == {"swirl": outputs("early")},
        "early.jpg",
        daemon=daemon,
    )
    assert_result(tmp_path / "outbox", "swirl", "early", digest)


# -- modes ------------------------------------------------------------------------------------


def test_once_exits_0_when_the_inbox_is_done(tmp_path) -> None:
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    digests = {
        ("swirl", "one"): drop(inbox / "one.jpg", photo_bytes(0)),
        ("glass", "two"): drop(inbox / "glass" / "two.jpg", photo_bytes(1)),
        ("swirl", "three"): drop(inbox / "album" / "three.png", photo_bytes(2, format="PNG")),
    }
    run = stylebox("run", "--config", config, "--once", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert results(outbox) == {"swirl": outputs("one", "three"), "glass": outputs("two")}
    for (preset, stem), digest in digests.items():
        assert_result(outbox, preset, stem, digest)
    assert files_under(inbox) == []
    assert "inbox done (--once)" in run.stderr


def test_poll_mode_picks_up_a_drop(tmp_path, daemons) -> None:
    # No rescan within the test: only the polling observer can find the photo.
    watch = {"mode": "poll", "settle_seconds": 0.3, "poll_interval_seconds": 0.2}
    config = write_config(tmp_path, watch={**watch, "rescan_interval_seconds": 300})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    daemon = daemons.start(config)
    daemon.wait_ready()
    assert "(poll mode)" in daemon.log()
    digest = drop(inbox / "polled.jpg", photo_bytes(0))
    wait_for(lambda: results(outbox) == {"swirl": outputs("polled")}, "polled.jpg", daemon=daemon)
    assert_result(outbox, "swirl", "polled", digest)


# -- configs the daemon refuses ---------------------------------------------------------------


def test_check_and_run_refuse_a_bad_config_naming_its_line(tmp_path) -> None:
    config = write_config(tmp_path)
    lines = config.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() == "steps: 4")
    lines[index] = lines[index].replace("steps: 4", "steps: many")
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    where = f"{config}:{index + 1}: presets.swirl.steps"

    check = stylebox("check", "--config", config, make_roots=False)
    assert check.returncode == 2
    assert where in check.stderr
    run = stylebox("run", "--config", config, timeout=60, make_roots=False)
    assert run.returncode == 2
    assert where in run.stderr
    assert not (tmp_path / "inbox").exists()  # refused before touching anything


def test_run_refuses_an_outbox_inside_the_inbox(tmp_path) -> None:
    config = write_config(tmp_path, outbox=str(tmp_path / "inbox" / "results"))
    check = stylebox("check", "--config", config, make_roots=False)
    assert check.returncode == 2
    assert "outbox" in check.stderr and "inside inbox" in check.stderr
    run = stylebox("run", "--config", config, timeout=60, make_roots=False)
    assert run.returncode == 2
    assert "inside inbox" in run.stderr
    assert not (tmp_path / "inbox").exists()


# -- reporting --------------------------------------------------------------------------------


def test_status_json_counts_a_run(tmp_path) -> None:
    config = write_config(tmp_path)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    drop(inbox / "good.jpg", photo_bytes(0))
    drop(inbox / "good2.jpg", photo_bytes(1))
    whole = photo_bytes(2)
    drop(inbox / "broken.jpg", whole[: len(whole) // 2])  # quarantined: the photo is bad
    # A file where the glass folder should be: an I/O error each attempt, so retried, then failed.
    outbox.mkdir()
    (outbox / "glass").write_text("not a folder")
    drop(inbox / "glass" / "blocked.jpg", photo_bytes(3))
    run = stylebox("run", "--config", config, "--once", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "retrying in" in run.stderr

    status = stylebox("status", "--config", config, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"] == {"queued": 0, "running": 0, "done": 2, "failed": 1, "quarantined": 1}
    assert report["running"] == [] and report["queue"] == []
    failures = {job["source"]: job for job in report["recent_failures"]}
    assert failures.keys() == {"broken.jpg", "blocked.jpg"}
    assert failures["broken.jpg"]["state"] == "quarantined"
    assert "broken.jpg" in failures["broken.jpg"]["error"]
    assert failures["blocked.jpg"]["state"] == "failed"
    assert failures["blocked.jpg"]["attempts"] == 2
    assert "gave up after 2 attempt(s)" in failures["blocked.jpg"]["error"]


@pytest.fixture
def notify_socket(tmp_path) -> Iterator[tuple[socket.socket, Path]]:
    """An AF_UNIX datagram socket standing in for systemd's, at a path short enough to bind."""
    folder = tmp_path
    if len(os.fsencode(tmp_path / "notify.sock")) > 100:  # sun_path holds 108 bytes
        folder = Path(tempfile.mkdtemp(dir="/tmp"))
    path = folder / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.bind(str(path))
        receiver.setblocking(False)
        yield receiver, path
    finally:
        receiver.close()
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)


def test_sd_notify_ready_watchdog_and_stopping(tmp_path, daemons, notify_socket) -> None:
    receiver, path = notify_socket
    env = daemon_env(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")
    daemon = daemons.start(write_config(tmp_path), env=env)
    fields: list[str] = []
    log_at_ready: list[str] = []

    def received(field: str, times: int = 1) -> bool:
        while True:
            try:
                message = receiver.recv(4096).decode("utf-8")
            except BlockingIOError:
                break
            fields.extend(message.split("\n"))
            if "READY=1" in message.split("\n"):
                log_at_ready.append(daemon.log())
        return fields.count(field) >= times

    wait_for(lambda: received("READY=1"), "READY=1", timeout=START_SECONDS, daemon=daemon)
    assert "loading VGG-19" in log_at_ready[0] and "outputs go to" in log_at_ready[0]
    assert fields.count("READY=1") == 1
    # WATCHDOG_USEC=1 s: a ping every half second, so three within a few seconds.
    wait_for(lambda: received("WATCHDOG=1", 3), "three WATCHDOG=1", timeout=5, daemon=daemon)
    assert "STOPPING=1" not in fields
    daemon.send(signal.SIGTERM)
    wait_for(lambda: received("STOPPING=1"), "STOPPING=1", timeout=STOP_SECONDS)
    assert daemon.wait_exit(STOP_SECONDS) == 0


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(tmp_path, daemons) -> None:
    config = write_config(tmp_path)
    first = daemons.start(config)
    first.wait_ready()
    second = daemons.start(config)
    assert second.wait_exit(START_SECONDS) == ExitCode.LOCKED
    assert "another stylebox daemon" in second.log()
    # The first is untouched and still working.
    digest = drop(tmp_path / "inbox" / "solo.jpg", photo_bytes(0))
    wait_for(
        lambda: results(tmp_path / "outbox") == {"swirl": outputs("solo")}, "solo.jpg", daemon=first
    )
    assert_result(tmp_path / "outbox", "swirl", "solo", digest)
