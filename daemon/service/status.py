"""`stylebox status`: the journal, read from another process while the daemon runs (WAL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.service.journal import Job, Journal


def read_status(config: Config) -> dict[str, Any]:
    """Counts per state, the queue, the jobs running and recent failures, as plain data."""
    path = config.journal_path
    with Journal.open_readonly(path) as journal:
        return {
            "journal": str(path),
            "counts": {str(state): n for state, n in journal.counts().items()},
            "running": [_job(job) for job in journal.running()],
            "queue": [_job(job) for job in journal.pending(limit=20)],
            "recent_failures": [_job(job) for job in journal.recent_failures(limit=10)],
        }


def _job(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "source": Path(job.source_path).name,
        "preset": job.preset,
        "state": str(job.state),
        "attempts": job.attempts,
        "error": job.error,
        "outputs": list(job.outputs),
    }
