"""What looking at the dashboard costs the worker: the same photo done with the page open and
with it closed, in one daemon run, photo by photo.

    python -m bench.web_load [--photos 8] [--size 128] [--client browser|poller]

The real daemon (`stylebox run`, as tests/daemon_harness.py starts it) on a fresh folder with
two presets that do the same work, `closed` and `open` (the default preset at --size; they
differ in `seed` alone, which the default `init: content` does not use, so only their
fingerprints differ), and each of --photos photos dropped into both preset folders. The page is
opened the moment an `open` job starts and closed when a `closed` one does (seen in the
journal). Each photo's pair of jobs took the same evaluations (checked), so the ratio of their
times (finished_at - started_at: load, stylise, publish) is what the page cost that photo, and
a drift of the shared machine falls on both halves of a pair alike. Whole runs, one with the
page and one without, differ by more than the effect (DECISIONS.md, "The web page").

- browser: Debian's headless Chromium, on the dashboard when open (refreshing itself every 2 s
  through the page's script, previews included), on about:blank when closed: its own CPU on
  these 2 cores counts, as it would for a user looking on the same machine;
- poller: this process fetching `/` and each preview it names every 2 s when open, as that
  script does, without a browser (a phone or another PC looking at the page).

Prints the median over photos of open/closed (above 1: the page costs that much; photos per
minute fall by as much), writes web_load_<stamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import save_report
from tests.browser_harness import chromium
from tests.daemon_harness import (
    STYLES,
    Daemon,
    drop,
    http_request,
    journal_rows,
    photo_bytes,
    write_config,
)

REFRESH_SECONDS = 2.0  # daemon/web/static/app.js
_PREVIEW = re.compile(rb'src="(/previews/[^"]+)"')


class Poller:
    """Fetches the dashboard and its previews every REFRESH_SECONDS while `open`."""

    def __init__(self, url: str) -> None:
        self.url, self.open = url, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            if not self.open:
                continue
            with contextlib.suppress(OSError):
                _, _, page = http_request("GET", self.url + "/")
                for preview in _PREVIEW.findall(page):
                    http_request("GET", self.url + preview.decode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def run(folder: Path, size: int, photos: int, client: str) -> list[dict[str, Any]]:
    """Each photo's two jobs: their seconds and evaluations, page closed and open."""
    preset = {"style": str(STYLES / "swirl.png"), "size": size}
    config = write_config(
        folder,
        presets={"closed": {**preset, "seed": 0}, "open": {**preset, "seed": 1}},
        routing={"default_preset": "closed"},
        logging={"level": "INFO", "file": False},
    )
    journal = folder / "state" / "journal.sqlite3"
    with contextlib.ExitStack() as stack:
        daemon = Daemon(config)
        stack.callback(daemon.kill)
        url = daemon.web_url()
        daemon.wait_ready()
        if client == "browser":
            driver = stack.enter_context(chromium(folder / "profile"))

            def look(open_: bool) -> None:
                driver.get(url + "/" if open_ else "about:blank")
        else:
            poller = Poller(url)
            stack.callback(poller.close)

            def look(open_: bool) -> None:
                poller.open = open_

        look(False)
        for index in range(photos):
            data = photo_bytes(index, size=(size * 4 // 3, size))
            first, second = ("closed", "open") if index % 2 == 0 else ("open", "closed")
            for kind in (first, second):  # each kind first for half the photos
                drop(folder / "inbox" / kind / f"photo{index:02d}.jpg", data)
        _follow(journal, 2 * photos, look)
    rows = journal_rows(journal)
    pairs = []
    for name in sorted({Path(row["source_path"]).name for row in rows}):
        jobs = {row["preset"]: row for row in rows if Path(row["source_path"]).name == name}
        seconds = {k: jobs[k]["finished_at"] - jobs[k]["started_at"] for k in jobs}
        evaluations = {k: json.loads(jobs[k]["details"])["evaluations"] for k in jobs}
        pairs.append({"photo": name, "seconds": seconds, "evaluations": evaluations})
    return pairs


def _follow(journal: Path, jobs: int, look: Callable[[bool], None]) -> None:
    """Open the page as each `open` job starts and close it as each `closed` one does."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60 * 60
    while time.monotonic() < deadline:
        rows = journal_rows(journal)
        for row in rows:
            if row["state"] == "running" and row["id"] not in seen:
                seen.add(row["id"])
                look(row["preset"] == "open")
        if len(rows) == jobs and all(row["state"] == "done" for row in rows):
            return
        time.sleep(0.05)
    raise TimeoutError("the daemon did not finish within an hour")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--client", choices=("browser", "poller"), default="browser")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stylebox-load-") as temp:
        pairs = run(Path(temp), args.size, args.photos, args.client)
    same = all(p["evaluations"]["open"] == p["evaluations"]["closed"] for p in pairs)
    ratios = [p["seconds"]["open"] / p["seconds"]["closed"] for p in pairs]
    report: dict[str, Any] = {
        **vars(args),
        "out": str(args.out),
        "pairs": pairs,
        "same_evaluations": same,
        "open_over_closed": ratios,
        "median_open_over_closed": statistics.median(ratios),
    }
    print(
        f"{args.photos} photos at {args.size} px, each with the page closed and open, client "
        f"{args.client}: open/closed median {statistics.median(ratios):.3f} "
        f"(from {min(ratios):.3f} to {max(ratios):.3f}); same evaluations: {same}"
    )
    print(f"wrote {save_report(args.out, 'web_load', report)}")


if __name__ == "__main__":
    main()
