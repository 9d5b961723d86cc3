"""The dashboard's first paint with a long history: 10,000 finished jobs in the journal.

    python -m bench.web_first_paint [--jobs 10000] [--loads 20]

A NAS daemon's journal keeps every job for the life of the install, so the page must stay
quick however many there are. The real daemon runs (as tests/daemon_harness.py starts it) on a
journal filled beforehand with --jobs done jobs (and a few queued and failed, so that every part
of the dashboard has rows), its inbox empty. Then:

- the server alone: `GET /` over loopback, --loads times, the time to the last byte;
- headless Chromium (Debian's, through chromedriver), warmed on a page of its own: --loads
  navigations to `/`, each one's first-contentful-paint from the browser's own Paint Timing,
  the first with nothing cached (CSS, script and icon fetched), the rest warm.

The rows are written with sqlite3 into the schema the daemon made: 10,000 jobs through the
journal's own transactions (each fsynced) would take minutes and measure nothing of the page.
Prints a table, writes web_first_paint_<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import save_report
from tests.browser_harness import chromium
from tests.daemon_harness import Daemon, http_request, write_config

QUEUED, FAILED = 20, 10


def fill_journal(journal: Path, jobs: int, folder: Path) -> None:
    """`jobs` done jobs, QUEUED queued and FAILED quarantined, as the daemon writes them."""
    now = time.time()
    rows = []
    for index in range(jobs + QUEUED + FAILED):
        state = "done" if index < jobs else "queued" if index < jobs + QUEUED else "quarantined"
        started = now - (jobs - index) * 30
        source = folder / "inbox" / f"IMG_{index:05d}.jpg"
        result = folder / "outbox" / "swirl" / f"IMG_{index:05d}.jpg"
        details = {"size": [512, 384], "seconds": 28.5, "losses": {}, "evaluations": 136}
        details |= {"device": "cpu", "batch": 1}  # what Painted reads (daemon/service/journal)
        outputs = [str(result), str(result.with_suffix(".json"))] if state == "done" else []
        rows.append(
            (
                f"{index:064x}",
                "swirl",
                "f" * 64,
                str(source),
                state,
                1 if state != "queued" else 0,
                started - 60,
                started if state != "queued" else None,
                started + 29 if state != "queued" else None,
                started - 60,
                json.dumps(outputs),
                "IMG: cannot decode it" if state == "quarantined" else None,
                json.dumps(details if state == "done" else {}),
            )
        )
    with sqlite3.connect(journal) as conn:
        conn.executemany(
            "INSERT INTO jobs (content_hash, preset, fingerprint, source_path, state, attempts,"
            " enqueued_at, started_at, finished_at, not_before, outputs, error, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def server_times(url: str, loads: int) -> list[float]:
    """Milliseconds from request to the last byte of `GET /`."""
    times = []
    for _ in range(loads):
        started = time.perf_counter()
        code, _, _ = http_request("GET", url + "/")
        assert code == 200
        times.append((time.perf_counter() - started) * 1000)
    return times


def browser_paints(url: str, loads: int, profile: Path) -> list[float]:
    """first-contentful-paint of each navigation to `/`, in milliseconds; the browser is warmed
    first on a page of its own (a user's browser is running already: its start-up is not the
    page's), so the first load is the page with nothing of it cached."""
    paints = []
    with chromium(profile) as driver:
        driver.get("data:text/html,<p>a browser already running</p>")
        for _ in range(loads):
            driver.get(url + "/")
            paint = driver.execute_script(
                "const e = performance.getEntriesByName('first-contentful-paint')[0];"
                "return e ? e.startTime : null"
            )
            if paint is None:  # painted after load returned: wait for the entry
                time.sleep(0.5)
                paint = driver.execute_script(
                    "return performance.getEntriesByName('first-contentful-paint')[0].startTime"
                )
            paints.append(float(paint))
    return paints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stylebox-paint-") as temp:
        folder = Path(temp)
        config = write_config(folder, logging={"level": "INFO", "file": False})
        first = Daemon(config)  # creates the journal's schema, then stops
        first.wait_ready()
        first.kill()
        fill_journal(folder / "state" / "journal.sqlite3", args.jobs, folder)
        daemon = Daemon(config)
        try:
            url = daemon.web_url()
            daemon.wait_ready()
            server = server_times(url, args.loads)
            paints = browser_paints(url, args.loads, folder / "profile")
        finally:
            daemon.kill()
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "loads": args.loads,
        "server_ms": {"median": statistics.median(server), "max": max(server), "all": server},
        "first_contentful_paint_ms": {
            "cold": paints[0],
            "warm_median": statistics.median(paints[1:]),
            "warm_max": max(paints[1:]),
            "all": paints,
        },
    }
    fcp = report["first_contentful_paint_ms"]
    print(
        f"dashboard with {args.jobs:,} finished jobs, {args.loads} loads each:\n"
        f"  server, GET / to its last byte: median {report['server_ms']['median']:.1f} ms, "
        f"max {report['server_ms']['max']:.1f} ms\n"
        f"  Chromium first contentful paint: cold {fcp['cold']:.0f} ms, "
        f"warm median {fcp['warm_median']:.0f} ms, warm max {fcp['warm_max']:.0f} ms"
    )
    print(f"wrote {save_report(args.out, 'web_first_paint', report)}")


if __name__ == "__main__":
    main()
