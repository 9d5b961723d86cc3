"""The records the executor and its drivers pass each other: a job as the executor paints it,
how its result is written, the photo once loaded, an evaluation's snapshot, and how a job
ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.jobs.outcome import Outcome
from daemon.jobs.progress import JobProgress
from daemon.media.decode import LoadedImage
from daemon.outbox import Delivery


@dataclass(frozen=True)
class Work:
    """One job as the executor paints it, whichever driver took it; paths are this host's."""

    job_id: int
    source: Path
    planned: Path  # the result's path, planned by the journal's owner
    content_hash: str
    attempt: int
    enqueued_at: float


@dataclass(frozen=True)
class Writing:
    """How results are written: the same on every host, from the coordinator's config."""

    format: str
    quality: int
    bit_depth: int
    file_mode: int
    strip_location: bool = False  # the photo's GPS directory left out of the result's EXIF


@dataclass(frozen=True)
class Loaded:
    """A job whose photo is checked and decoded, with the size its result will have."""

    work: Work
    photo: LoadedImage
    size: tuple[int, int]  # (H, W) of the result: photos of one size can share a batch


@dataclass(frozen=True)
class Snapshot:
    """One evaluation of one job, for its driver: its progress, and its picture so far (a copy
    from the device: for a seldom preview, not for every report)."""

    work: Work
    progress: JobProgress
    write_preview: Callable[[Path], None] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Ended:
    """How one job's attempt ended on the executor; a done one carries its published files and
    the sidecar written beside the image."""

    work: Work
    outcome: Outcome
    reason: str = ""
    delivery: Delivery | None = None
    sidecar: dict[str, Any] | None = None
