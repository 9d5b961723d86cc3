"""`stylebox status`: the journal, read from another process while the daemon runs (WAL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.journal import Job, Journal


def read_status(config: Config) -> dict[str, Any]:
    """Counts per state, the queue, the current job and recent failures, as plain data."""
    path = config.journal_path
    with Journal.open_readonly(path) as journal:
        return {
            "journal": str(path),
            "counts": {str(state): n for state, n in journal.counts().items()},
            "running": _job(journal.running()),
            "queue": [_job(job) for job in journal.pending(limit=20)],
            "recent_failures": [_job(job) for job in journal.recent_failures(limit=10)],
        }


def _job(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {
        "id": job.id,
        "source": Path(job.source_path).name,
        "preset": job.preset,
        "state": str(job.state),
        "attempts": job.attempts,
        "error": job.error,
        "outputs": list(job.outputs),
    }
