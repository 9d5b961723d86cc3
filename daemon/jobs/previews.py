"""Where a running job's picture so far is kept, for the web page: torch-free, since the page
reads it (the executor writes it, through its Snapshot)."""

from __future__ import annotations

from pathlib import Path

PREVIEWS_DIR = "previews"


def preview_path(state_dir: Path, job_id: int) -> Path:
    """Where a running job's picture so far is, for the web page."""
    return state_dir / PREVIEWS_DIR / f"{job_id}.jpg"
