"""`stylebox status`: the journal, read from another process while the daemon runs (WAL)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.paths import shown as readable
from daemon.service.channels import channel_labels
from daemon.service.environment import look, roots_of
from daemon.service.journal import Job, Journal
from daemon.service.pause import is_paused


def read_status(
    config: Config, journal: Journal | None = None, *, workers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Counts per state, the videos skipped in the inbox, the queue, the jobs running (with how
    far each is, and on which worker host), recent failures, each notify: channel's deliveries
    and the `workers` given (the worker hosts, with queue.url), as plain data; from `journal` if
    given (the web page keeps one open), else from a read-only connection of its own."""
    if journal is None:
        with Journal.open_readonly(config.journal_path) as own:
            return read_status(config, own, workers=workers)
    return {
        "journal": str(config.journal_path),
        "time": time.time(),
        "paused": is_paused(config),
        # a fault of the environment that holds work (a share gone, a disk full), if any
        "waiting": look(roots_of(config)),
        "counts": {str(state): n for state, n in journal.counts().items()},
        # files left in the inbox without a job: videos (a Live Photo's .MOV), said once in the log
        "skipped_videos": journal.skipped_count(),
        "running": [_job(job, progress=True) for job in journal.running()],
        "queue": [_job(job) for job in journal.pending(limit=20)],
        "recent_failures": [_job(job) for job in journal.recent_failures(limit=10)],
        "events": _events(config, journal),
        "workers": workers,
    }


def _events(config: Config, journal: Journal) -> list[dict[str, Any]]:
    """Each notify: channel's deliveries: pending, sent, given up, and the last error."""
    labels = channel_labels(config)
    return [
        {"channel": labels.get(channel, channel), **counts}
        for channel, counts in journal.delivery_counts().items()
        if channel in labels or counts["pending"]
    ]


def _job(job: Job, *, progress: bool = False) -> dict[str, Any]:
    shown = {
        "id": job.id,
        "source": readable(Path(job.source_path).name),
        "preset": job.preset,
        "state": str(job.state),
        "attempts": job.attempts,
        "started_at": job.started_at,
        "error": job.error,
        "outputs": list(job.outputs),
    }
    if progress:  # None until the worker's first report (the photo loading)
        running = job.details.progress
        shown["progress"] = running.as_dict() if running is not None else None
    return shown
