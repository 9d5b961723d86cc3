"""The worker hosts as `stylebox status` and the web page show them, from the roster in Redis."""

from __future__ import annotations

import time
from typing import Any

from daemon.cluster import broker as brokers
from daemon.config import Config


def workers(config: Config) -> dict[str, Any] | None:
    """Each worker host: its devices, the jobs in hand, and whether it has been heard from
    within the heartbeat; None on a single host. Redis away is said, not raised."""
    if config.queue.url is None:
        return None
    shown: dict[str, Any] = {"queue": config.queue.shown_url, "error": None, "hosts": []}
    client = brokers.client_for(config.queue)
    try:
        lines = brokers.roster(client)
    except brokers.RedisError as exc:
        return {**shown, "error": f"Redis is unreachable: {exc}"}
    finally:
        client.close()
    now = time.time()
    for name, line in sorted(lines.items()):
        quiet = now - line["seen"]
        shown["hosts"].append(
            {
                "name": name,
                "devices": line["devices"],
                "jobs": sorted(line["jobs"]),
                "taking_jobs": bool(line.get("taking_jobs")),
                "quiet_seconds": round(quiet, 1),
                "heard": quiet < config.queue.heartbeat_seconds,
            }
        )
    return shown
