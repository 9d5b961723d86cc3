"""Rows in the journal's file memo after a run of many photos: it must hold only the inbox.

    python -m bench.file_memo [--photos 1000] [--policy move] [--workdir DIR] [--out bench/results]

The memo (`files` table: path, size, mtime -> sha256) spares rescans re-hashing originals kept in
the inbox. A row for a path no longer there is dead weight, and one per photo ever processed is a
table that grows for the life of the install. The real daemon, a 16 px one-evaluation preset (so
the daemon's own machinery dominates) and `--photos` distinct 16x12 PNGs dropped at once; once all
are done, the memo's rows are counted beside the files left in the inbox. The default rescan
interval (300 s) does not come round within the run. Prints the figures and writes
file_memo_<stamp>.json.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import save_report
from daemon.config import load_config
from tests.daemon_harness import (
    STYLES,
    Daemon,
    drop,
    files_under,
    journal_rows,
    photo_bytes,
    sha256,
    wait_for,
    write_config,
)

TINY = {"style": str(STYLES / "swirl.png"), "size": 16, "steps": 1}


def run(root: Path, photos: int, policy: str) -> dict[str, Any]:
    """One daemon, `photos` dropped at once, all done: the memo's rows and the inbox's files."""
    config = write_config(
        root,
        presets={"tiny": TINY},
        routing={"default_preset": "tiny"},
        originals={"policy": policy},
        watch={"settle_seconds": 0.3, "poll_interval_seconds": 0.2},
        logging={"level": "INFO", "file": False},
    )
    journal = load_config(config).journal_path
    data = [photo_bytes(index, format="PNG", size=(16, 12)) for index in range(photos)]
    assert len({sha256(photo) for photo in data}) == photos, "photos must be distinct"
    daemon = Daemon(config)
    try:
        daemon.wait_ready()
        started = time.monotonic()
        for index, photo in enumerate(data):
            drop(root / "inbox" / f"p{index:05d}.png", photo)

        def done() -> int:
            return sum(row["state"] == "done" for row in journal_rows(journal))

        wait_for(
            lambda: done() == photos,
            f"{photos} photos done",
            timeout=120 + photos,
            daemon=daemon,
            state=done,
        )
        seconds = time.monotonic() - started
        time.sleep(1.0)  # the last original's move (and its memo row) follows its mark_done
        rows, in_inbox = len(journal_rows(journal, "files")), len(files_under(root / "inbox"))
        daemon.send(signal.SIGTERM)
        daemon.wait_exit(30)
    finally:
        daemon.kill()
    return {
        "photos": photos,
        "policy": policy,
        "seconds": seconds,
        "memo_rows": rows,
        "files_in_inbox": in_inbox,
    }


def main() -> None:
    """Parse the options, run once in a temporary folder (or --workdir), print and save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--policy", choices=("keep", "move", "delete"), default="move")
    parser.add_argument("--workdir", type=Path, help="keep the folders here (default: a temp)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(args.workdir, args.photos, args.policy)
    else:
        with tempfile.TemporaryDirectory(prefix="stylebox-memo-") as root:
            report = run(Path(root), args.photos, args.policy)
    print(
        f"{report['photos']} photos ({report['policy']}) in {report['seconds']:.1f} s: "
        f"{report['memo_rows']} memo rows, {report['files_in_inbox']} files left in the inbox"
    )
    print("saved", save_report(args.out, "file_memo", report))


if __name__ == "__main__":
    main()
