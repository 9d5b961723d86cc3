"""`stylebox status`: the journal, read from another process while the daemon runs (WAL)."""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.config import Config
from daemon.config.paintings import waiting_for, waiting_reason
from daemon.paths import shown as readable
from daemon.service.channels import channel_labels
from daemon.service.environment import look, watched_of
from daemon.service.journal import Job, Journal
from daemon.service.pause import is_paused


def read_status(
    config: Config, journal: Journal | None = None, *, workers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Counts per state, the videos skipped in the inbox, the queue, the jobs running (with how
    far each is, and on which worker host), recent failures, each notify: channel's deliveries,
    the paintings folder (each painting's fate, and the photos waiting for one) and the
    `workers` given (the worker hosts, with queue.url), as plain data; from `journal` if given
    (the web page keeps one open), else from a read-only connection of its own."""
    if journal is None:
        with Journal.open_readonly(config.journal_path) as own:
            return read_status(config, own, workers=workers)
    return {
        "journal": str(config.journal_path),
        "time": time.time(),
        "paused": is_paused(config),
        # a fault of the environment that holds work (a share gone, a disk full), if any
        "waiting": look(watched_of(config)),
        "counts": {str(state): n for state, n in journal.counts().items()},
        # files left in the inbox without a job: videos (a Live Photo's .MOV), said once in the log
        "skipped_videos": journal.skipped_count(),
        "running": [_job(job, progress=True) for job in journal.running()],
        "queue": [_job(job) for job in journal.pending(limit=20)],
        "recent_failures": [_job(job) for job in journal.recent_failures(limit=10)],
        "events": _events(config, journal),
        "paintings": _paintings(config),
        "workers": workers,
    }


def _paintings(config: Config) -> dict[str, Any] | None:
    """Each file in the paintings folder as the config in force saw it, and the inbox folders
    whose photos wait for a painting (their count, and why); None without a paintings folder."""
    if config.paintings is None:
        return None
    return {
        "folder": str(config.paintings),
        "found": [painting.as_dict() for painting in config.paintings_seen],
        "waiting": _waiting_photos(config),
    }


def _waiting_photos(config: Config) -> list[dict[str, Any]]:
    """The inbox's subfolders that name no preset, with how many photos in each wait for a
    painting (the routing rules may take some) and why."""
    try:
        folders = sorted(
            entry.name
            for entry in os.scandir(config.inbox)
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
        )
    except OSError:  # the inbox away: said under "waiting"
        return []
    found = []
    for folder in folders:
        if waiting_for(config, PurePosixPath(folder, "photo")) is None:
            continue  # a preset's folder
        photos = 0
        for parent, _, names in os.walk(config.inbox / folder):
            relative = Path(parent).relative_to(config.inbox).as_posix()
            photos += sum(
                not name.startswith(".")
                and waiting_for(config, PurePosixPath(relative, name)) is not None
                for name in names
            )
        if photos:
            reason = waiting_reason(config, folder)
            found.append({"painting": folder, "photos": photos, "reason": reason})
    return found


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
