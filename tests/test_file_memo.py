"""The journal's file memo (path, size, mtime -> hash) holds only files still in the inbox.

It spares rescans re-hashing originals kept in the inbox; a row for a path that is gone is of no
use, and without pruning the table would grow by one row per photo for ever. The real daemon, with
16 px photos and a one-evaluation preset so that thirty photos take seconds.
"""

from pathlib import Path

from daemon_harness import (
    STYLES,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    wait_for,
    write_config,
)

from daemon.config import JOURNAL_NAME

TINY = {"style": str(STYLES / "swirl.png"), "size": 16, "steps": 1}


def memo_paths(journal: Path) -> list[str]:
    """The paths the journal's file memo holds, sorted (read-only, as `stylebox status` reads)."""
    return [row["path"] for row in journal_rows(journal, "files")]


def start(tmp_path: Path, daemons, *, policy: str, rescan_seconds: float):
    """A daemon on the tiny preset; (daemon, inbox, journal)."""
    config = write_config(
        tmp_path,
        presets={"tiny": TINY},
        routing={"default_preset": "tiny"},
        originals={"policy": policy},
        watch={
            "settle_seconds": 0.3,
            "poll_interval_seconds": 0.2,
            "rescan_interval_seconds": rescan_seconds,
        },
        logging={"level": "INFO"},
    )
    daemon = daemons.start(config)
    daemon.wait_ready()
    return daemon, tmp_path / "inbox", tmp_path / "state" / JOURNAL_NAME


def drop_photos(inbox: Path, count: int) -> None:
    """`count` distinct 16x12 PNGs."""
    for index in range(count):
        drop(inbox / f"p{index:02d}.png", photo_bytes(index, format="PNG", size=(16, 12)))


def done(journal: Path) -> int:
    return sum(row["state"] == "done" for row in journal_rows(journal))


def test_originals_moved_away_leave_no_row_behind(tmp_path, daemons) -> None:
    # No rescan within the test: the rows must go as the originals leave, not at the next scan.
    daemon, inbox, journal = start(tmp_path, daemons, policy="move", rescan_seconds=300)
    drop_photos(inbox, 30)
    wait_for(
        lambda: done(journal) == 30 and not files_under(inbox),
        "30 photos done and the inbox empty",
        daemon=daemon,
        state=lambda: (done(journal), len(files_under(inbox))),
    )
    wait_for(
        lambda: memo_paths(journal) == [],
        "no memo row for the 30 originals moved away",
        timeout=5,
        daemon=daemon,
        state=lambda: f"{len(memo_paths(journal))} rows",
    )


def test_kept_originals_keep_their_rows_and_deleted_ones_lose_them(tmp_path, daemons) -> None:
    daemon, inbox, journal = start(tmp_path, daemons, policy="keep", rescan_seconds=1)
    drop_photos(inbox, 10)
    wait_for(lambda: done(journal) == 10, "10 photos done", daemon=daemon)
    kept = [str(path) for path in files_under(inbox)]
    assert memo_paths(journal) == kept  # each kept original is remembered: rescans skip hashing
    for path in kept[::2]:  # the share's users tidy up behind the daemon
        Path(path).unlink()
    wait_for(
        lambda: memo_paths(journal) == kept[1::2],
        "the rows of the deleted originals gone, the others kept",
        timeout=10,
        daemon=daemon,
        state=lambda: memo_paths(journal),
    )
    assert done(journal) == 10  # the rescans that pruned queued nothing again


def test_a_duplicate_moved_away_by_intake_leaves_no_row_behind(tmp_path, daemons) -> None:
    # The same bytes under a second name: intake, not the worker, moves that original.
    daemon, inbox, journal = start(tmp_path, daemons, policy="move", rescan_seconds=300)
    picture = photo_bytes(0, format="PNG", size=(16, 12))
    drop(inbox / "first.png", picture)
    wait_for(lambda: done(journal) == 1 and not files_under(inbox), "first.png", daemon=daemon)
    drop(inbox / "again.png", picture)
    wait_for(lambda: not files_under(inbox), "again.png moved to originals", daemon=daemon)
    wait_for(
        lambda: memo_paths(journal) == [],
        "no memo row for the duplicate moved away",
        timeout=5,
        daemon=daemon,
        state=lambda: memo_paths(journal),
    )
    assert [row["source_path"] for row in journal_rows(journal)] == [str(inbox / "first.png")]
