"""Videos are not photos: told by their bytes, skipped once, never hashed nor quarantined.

The videos are real: a few frames written by PyAV (FFmpeg) in each container; the photos are
written by Pillow and its HEIC and JPEG XL plugins. A Live Photo is a .HEIC beside a .MOV: the
.MOV is the case this is for, and HEIC and AVIF are ISO-BMFF files just like it.
"""

import json
import os
import signal
import sqlite3
from pathlib import Path

import av
import numpy as np
import pytest
from daemon_harness import (
    START_SECONDS,
    STYLES,
    drop,
    files_under,
    http_request,
    journal_rows,
    make_roots_of,
    photo_bytes,
    results,
    stylebox,
    wait_for,
    write_config,
)
from PIL import Image

import daemon.media.decode  # noqa: F401  (registers HEIC and JPEG XL with Pillow)
from daemon.config import JOURNAL_NAME, load_config
from daemon.media.videos import described, video_kind
from daemon.service.intake import Intake
from daemon.service.journal import SCHEMA_VERSION, JobState, Journal, version_of

TINY = {"style": str(STYLES / "swirl.png"), "size": 40, "steps": 2}
STOP_SECONDS = 60.0


def write_video(path: Path, container: str, *, codec: str = "libx264", frames: int = 5) -> Path:
    """A real 32x32 video of `frames` grey frames, a tenth of a second each, written by FFmpeg."""
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(frames):
            pixels = np.full((32, 32, 3), index * 20 % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():  # what the encoder still holds
            output.mux(packet)
    return path


def frames_in(path: Path) -> int:
    """How many frames FFmpeg decodes from a video: proof that it is one."""
    with av.open(str(path)) as video:
        return sum(1 for _ in video.decode(video=0))


def write_photo(path: Path, format: str) -> Path:
    """A small photo in `format`, written by Pillow (or the plugin that registered it)."""
    Image.new("RGB", (48, 32), (200, 120, 40)).save(path, format)
    return path


@pytest.mark.parametrize(
    ("container", "codec", "name", "kind"),
    [
        ("mov", "libx264", "IMG_0001.MOV", "QuickTime video"),
        ("mp4", "libx264", "clip.mp4", "MP4 video"),
        ("matroska", "libx264", "clip.mkv", "Matroska video"),
        ("webm", "libvpx", "clip.webm", "WebM video"),
        ("avi", "mpeg4", "clip.avi", "AVI video"),
        ("mpegts", "libx264", "00001.MTS", "MPEG transport stream video"),
    ],
)
def test_each_container_is_named_for_what_it_is(
    tmp_path: Path, container: str, codec: str, name: str, kind: str
) -> None:
    video = write_video(tmp_path / name, container, codec=codec)
    assert frames_in(video) == 5
    assert video_kind(video) == kind


def test_a_quicktime_movie_without_ftyp_is_still_a_quicktime_video(tmp_path: Path) -> None:
    """Older QuickTime files start with an atom such as `wide` (what libmagic reads); the
    `ftyp` box FFmpeg writes is turned into `wide` + `free` of the same length, so every offset
    in the file still holds and FFmpeg still decodes it."""
    data = write_video(tmp_path / "made.mov", "mov").read_bytes()
    ftyp = int.from_bytes(data[:4], "big")
    assert data[4:8] == b"ftyp" and ftyp >= 16
    wide = (8).to_bytes(4, "big") + b"wide"
    free = (ftyp - 8).to_bytes(4, "big") + b"free" + bytes(ftyp - 16)
    classic = tmp_path / "MVI_0042.MOV"
    classic.write_bytes(wide + free + data[ftyp:])
    assert frames_in(classic) == 5
    assert video_kind(classic) == "QuickTime video"


@pytest.mark.parametrize(
    ("format", "name"),
    [
        ("JPEG", "IMG_0001.JPG"),
        ("PNG", "shot.png"),
        ("HEIF", "IMG_0001.HEIC"),  # ISO-BMFF, as a MOV or MP4 is
        ("AVIF", "photo.avif"),  # ISO-BMFF too
        ("JXL", "photo.jxl"),
    ],
)
def test_photos_are_not_videos(tmp_path: Path, format: str, name: str) -> None:
    photo = write_photo(tmp_path / name, format)
    with Image.open(photo) as image:  # it is the photo it claims to be
        assert image.format == format and image.size == (48, 32)
    assert video_kind(photo) is None


def test_an_iso_bmff_photo_listing_isom_is_not_an_mp4(tmp_path: Path) -> None:
    """Canon's CR3 RAW starts `ftyp crx ` with `isom` among its brands, which filetype alone
    takes for an MP4. No library here writes a CR3, so a real MP4's `ftyp` brands are rewritten
    to a CR3's (the same length): the brands alone decide."""
    data = bytearray(write_video(tmp_path / "clip.mp4", "mp4").read_bytes())
    assert data[8:12] == b"isom" and video_kind(tmp_path / "clip.mp4") == "MP4 video"
    assert data[16:24] == b"isomiso2"  # the compatible brands begin
    data[8:12] = data[20:24] = b"crx "  # the major brand, and `crx ` among the compatible ones
    raw = tmp_path / "IMG_0001.CR3"
    raw.write_bytes(bytes(data))
    assert data[16:20] == b"isom" and video_kind(raw) is None


def test_a_video_is_told_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    movie = write_video(tmp_path / "made.mov", "mov")
    photo = write_photo(tmp_path / "made.jpg", "JPEG")
    movie.rename(tmp_path / "holiday.jpg")
    photo.rename(tmp_path / "holiday.mov")
    assert video_kind(tmp_path / "holiday.jpg") == "QuickTime video"
    assert video_kind(tmp_path / "holiday.mov") is None


def test_a_symlink_or_fifo_is_not_read(tmp_path: Path) -> None:
    movie = write_video(tmp_path / "clip.mov", "mov")
    (tmp_path / "link.mov").symlink_to(movie)
    os.mkfifo(tmp_path / "pipe.mov")  # no writer: a blocking open would wait for ever
    assert video_kind(tmp_path / "link.mov") is None
    assert video_kind(tmp_path / "pipe.mov") is None
    assert video_kind(tmp_path / "gone.mov") is None


def test_kinds_are_said_with_their_article() -> None:
    assert described("QuickTime video") == "a QuickTime video"
    assert described("MP4 video") == "an MP4 video"
    assert described("AVI video") == "an AVI video"
    assert described("Matroska video") == "a Matroska video"


# -- the journal's skipped_files ---------------------------------------------------------------


def test_skipped_files_are_kept_by_version_and_forgotten(tmp_path: Path) -> None:
    with Journal(tmp_path / JOURNAL_NAME, now=lambda: 1000.0) as journal:
        assert journal.skipped_count() == 0 and journal.skipped_version("/in/a.mov") is None
        journal.skip_file("/in/a.mov", (10, 20, 30), "QuickTime video")
        journal.skip_file("/in/b.mp4", (11, 21, 31), "MP4 video")
        journal.skip_file("/in/a.mov", (12, 22, 32), "QuickTime video")  # a new version of it
        assert journal.skipped_version("/in/a.mov") == (12, 22, 32)
        assert journal.skipped_count() == 2
        assert sorted(journal.skipped_paths()) == ["/in/a.mov", "/in/b.mp4"]
        journal.forget_skipped(["/in/a.mov"])
        journal.forget_skipped([])
        assert journal.skipped_paths() == ["/in/b.mp4"] and journal.skipped_count() == 1


def test_a_journal_of_version_3_gains_the_table_and_reads_as_nothing_skipped(tmp_path) -> None:
    path = tmp_path / JOURNAL_NAME
    with Journal(path) as journal:
        journal.add("ab" * 32, "tiny", "f" * 64, "/inbox/a.jpg")
    with sqlite3.connect(path) as conn:  # what stylebox wrote before it skipped videos
        conn.execute("DROP TABLE skipped_files")
        conn.execute("PRAGMA user_version = 3")
    # `stylebox status` of this stylebox while the daemon of the last one still runs
    with Journal.open_readonly(path) as journal:
        assert journal.skipped_count() == 0
    with Journal(path) as journal:
        assert [job.source_path for job in journal.pending()] == ["/inbox/a.jpg"]
        journal.skip_file("/inbox/a.mov", (1, 2, 3), "QuickTime video")
        assert journal.skipped_count() == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


# -- the intake, on a real config, journal and files -------------------------------------------


class Clock:
    """A clock that moves a second each time it is read: a row written again shows it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def skipped_rows(journal: Path) -> list[dict]:
    """The skipped_files rows, read-only as `stylebox status` reads the journal."""
    conn = sqlite3.connect(journal.absolute().as_uri() + "?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM skipped_files ORDER BY path")]
    finally:
        conn.close()


@pytest.fixture
def intake(tmp_path: Path):
    config_path = write_config(tmp_path, presets={"tiny": TINY}, routing={"default_preset": "tiny"})
    make_roots_of(config_path)
    config = load_config(config_path)
    with Journal(config.journal_path, now=Clock()) as journal:
        yield Intake(config, journal, on_queued=lambda: None)


def test_the_intake_skips_a_video_once_and_looks_again_when_it_changes(intake: Intake) -> None:
    journal, inbox = intake.journal, intake.config.inbox
    movie = write_video(inbox / "IMG_0001.MOV", "mov")
    assert intake.is_ready(movie)  # handed over once still: no photo decoder judges it
    intake.accept(movie)
    [row] = skipped_rows(journal.path)
    assert (row["path"], row["kind"]) == (str(movie), "QuickTime video")
    assert (row["size"], row["mtime_ns"], row["ctime_ns"]) == version_of(movie.stat())
    assert journal.counts()[JobState.QUEUED] == 0 and journal.remembered_paths() == []  # unhashed
    assert movie.exists() and files_under(intake.config.quarantine_dir) == []

    intake.accept(movie)  # a rescan, or a restart: passed by on its row, not written again
    assert skipped_rows(journal.path) == [row]

    write_video(movie, "mov", frames=7)  # a new version at the same path: looked at again
    intake.accept(movie)
    [again] = skipped_rows(journal.path)
    assert again["size"] == movie.stat().st_size and again["skipped_at"] > row["skipped_at"]

    drop(movie, photo_bytes(1))  # now a photo under the video's name: it goes to a job
    assert intake.is_ready(movie)
    intake.accept(movie)
    assert skipped_rows(journal.path) == [] and journal.skipped_count() == 0
    assert [job.source_path for job in journal.pending()] == [str(movie)]


def test_a_video_gone_from_the_inbox_loses_its_row(intake: Intake) -> None:
    inbox = intake.config.inbox
    kept, gone = write_video(inbox / "kept.mp4", "mp4"), write_video(inbox / "gone.mov", "mov")
    intake.accept(kept)
    intake.accept(gone)
    assert intake.journal.skipped_count() == 2
    gone.unlink()
    assert intake.forget_gone_files() == 1
    assert [row["path"] for row in skipped_rows(intake.journal.path)] == [str(kept)]


# -- the real daemon ---------------------------------------------------------------------------


def status_of(config: Path) -> tuple[dict, str]:
    """`stylebox status`, as JSON and as text."""
    as_json = stylebox("status", "--config", config, "--json")
    as_text = stylebox("status", "--config", config)
    assert as_json.returncode == 0 and as_text.returncode == 0, as_json.stderr + as_text.stderr
    return json.loads(as_json.stdout), as_text.stdout


def test_a_live_photo_movie_is_left_in_the_inbox_across_a_restart(tmp_path, daemons) -> None:
    config = write_config(tmp_path, presets={"tiny": TINY}, routing={"default_preset": "tiny"})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    journal = tmp_path / "state" / JOURNAL_NAME
    daemon = daemons.start(config)
    daemon.wait_ready()
    movie = write_video(tmp_path / "IMG_0001.MOV", "mov", frames=10)
    os.rename(movie, inbox / movie.name)  # whole, as a sync tool renames its finished copy
    drop(inbox / "IMG_0001.JPG", photo_bytes(0))
    movie = inbox / movie.name

    wait_for(
        lambda: (
            [row["state"] for row in journal_rows(journal)] == ["done"] and skipped_rows(journal)
        ),
        "the photo painted and the movie skipped",
        daemon=daemon,
    )
    [row] = skipped_rows(journal)
    assert (row["path"], row["kind"]) == (str(movie), "QuickTime video")
    assert [job["source_path"] for job in journal_rows(journal)] == [str(inbox / "IMG_0001.JPG")]
    assert str(movie) not in [file["path"] for file in journal_rows(journal, "files")]  # unhashed
    assert "IMG_0001.jpg" in results(outbox, ("tiny",))["tiny"]  # the photo, painted
    assert files_under(inbox) == [movie] and frames_in(movie) == 10
    assert not (outbox / "failed").exists() or files_under(outbox / "failed") == []
    report, text = status_of(config)
    assert report["skipped_videos"] == 1 and "skipped: 1 video in the inbox" in text
    code, _, body = http_request("GET", daemon.web_url() + "/api/status")  # the web page's JSON
    assert code == 200 and json.loads(body)["skipped_videos"] == 1

    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(STOP_SECONDS) == 0, daemon.log_tail()
    # --once walks the inbox, hands every file over and exits when nothing is left to do
    restart = daemons.start(config, once=True)
    assert restart.wait_exit(START_SECONDS + STOP_SECONDS) == 0, restart.log_tail()
    assert skipped_rows(journal) == [row]  # passed by on its row, not looked at again
    assert files_under(inbox) == [movie]
    assert not (outbox / "failed").exists() or files_under(outbox / "failed") == []
    assert [job["state"] for job in journal_rows(journal)] == ["done"]
    report, _ = status_of(config)
    assert report["skipped_videos"] == 1 and report["counts"]["quarantined"] == 0
