"""Photos per minute with the dashboard open against closed: what looking costs the worker.

    python -m bench.web_load [--photos 6] [--size 128] [--rounds 3] [--client browser|poller]

Each run is the real daemon (`stylebox run --once`, as tests/daemon_harness.py starts it) on a
fresh folder with --photos distinct photos and the default preset at --size. Photos per minute
come from its journal: photos / (last finished_at - first started_at), so the model's load is
left out. "open" runs have a client on the dashboard for the whole run:

- browser: Debian's headless Chromium on `/`, started before the daemon (its own start-up is not
  the page's cost), refreshing itself every 2 s through the page's script, previews included;
- poller: this process fetching `/` and each preview it names every 2 s, as that script does,
  without a browser's own CPU (a phone or another PC looking at the page).

Closed and open alternate (closed, open, then open, closed, ...) so a drift of the shared machine
falls on both. Prints the ratio of the medians, writes web_load_<stamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import statistics
import tempfile
import threading
from collections.abc import Iterator
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


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@contextlib.contextmanager
def poller(url: str) -> Iterator[None]:
    """Fetch the dashboard and its previews every REFRESH_SECONDS until the block ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(REFRESH_SECONDS):
            with contextlib.suppress(OSError):
                _, _, page = http_request("GET", url + "/")
                for preview in _PREVIEW.findall(page):
                    http_request("GET", url + preview.decode())

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def photos_per_minute(folder: Path, size: int, photos: int, client: str | None) -> float:
    port = free_port()
    preset = {"style": str(STYLES / "swirl.png"), "size": size}
    config = write_config(
        folder,
        presets={"swirl": preset},
        web={"listen": f"127.0.0.1:{port}"},
        logging={"level": "INFO", "file": False},
    )
    for index in range(photos):
        drop(folder / "inbox" / f"photo{index}.jpg", photo_bytes(index, size=(size * 4 // 3, size)))
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as looking:
        if client == "browser":
            driver = looking.enter_context(chromium(folder / "profile"))
            driver.get("about:blank")
        daemon = Daemon(config, once=True)
        daemon.web_url()
        if client == "browser":
            driver.get(url + "/")
        elif client == "poller":
            looking.enter_context(poller(url))
        code = daemon.process.wait(timeout=60 * 60)
        assert code == 0, daemon.log_tail()
    rows = journal_rows(folder / "state" / "journal.sqlite3")
    assert [row["state"] for row in rows] == ["done"] * photos, rows
    span = max(row["finished_at"] for row in rows) - min(row["started_at"] for row in rows)
    return photos / span * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=("browser", "poller"), default="browser")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"closed": [], "open": []}
    for round_ in range(args.rounds):
        order = ("closed", "open") if round_ % 2 == 0 else ("open", "closed")
        for kind in order:
            with tempfile.TemporaryDirectory(prefix="stylebox-load-") as temp:
                client = args.client if kind == "open" else None
                rate = photos_per_minute(Path(temp), args.size, args.photos, client)
            rates[kind].append(rate)
            print(f"round {round_ + 1}, page {kind}: {rate:.2f} photos/min", flush=True)
    closed, opened = statistics.median(rates["closed"]), statistics.median(rates["open"])
    report: dict[str, Any] = {
        **vars(args),
        "out": str(args.out),
        "photos_per_minute": rates,
        "median_closed": closed,
        "median_open": opened,
        "open_over_closed": opened / closed,
    }
    print(
        f"{args.photos} photos at {args.size} px, {args.rounds} rounds, client {args.client}: "
        f"closed {closed:.2f}, open {opened:.2f} photos/min: open/closed {opened / closed:.3f}"
    )
    print(f"wrote {save_report(args.out, 'web_load', report)}")


if __name__ == "__main__":
    main()
