"""What travels through the broker, as plain JSON: an assignment of jobs to stylise together,
and one report per job. Paths are the coordinator's; each host maps them to its own mounts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Self

from daemon.service.journal import Job, JobState

RELEASED = "released"  # a worker stopped mid-job: back in the queue, the attempt not counted
# A host could not do it (the share not visible there, a preset that differs): back in the
# queue for a moment, the attempt not counted, with the reason kept in the journal.
HANDED_BACK = "handed_back"


@dataclass(frozen=True)
class Order:
    """One job of an assignment."""

    id: int
    source: str
    content_hash: str
    preset: str
    fingerprint: str
    planned: str
    attempts: int
    enqueued_at: float
    dispatch: str  # which sending of the job this is: a report of an older one is stale

    @classmethod
    def of(cls, job: Job, fingerprint: str, dispatch: str) -> Self:
        """`fingerprint`: the preset's as configured now (a reload may have changed it since
        the job was queued, and the hosts have the new one)."""
        assert job.planned_output is not None, "planned before it is sent"
        return cls(
            job.id,
            job.source_path,
            job.content_hash,
            job.preset,
            fingerprint,
            job.planned_output,
            job.attempts,
            job.enqueued_at,
            dispatch,
        )

    def as_job(self) -> Job:
        """The journal's view of it, as the worker host's sidecar and reports need it."""
        return Job(
            id=self.id,
            content_hash=self.content_hash,
            preset=self.preset,
            fingerprint=self.fingerprint,
            source_path=self.source,
            state=JobState.RUNNING,
            attempts=self.attempts,
            enqueued_at=self.enqueued_at,
            started_at=None,
            finished_at=None,
            not_before=0.0,
            planned_output=self.planned,
            outputs=(),
            error=None,
            details={},
        )


@dataclass(frozen=True)
class Assignment:
    """Jobs of one preset and output size, stylised together on one device (`batch_size`), and
    what the coordinator's config decides for them: the outbox they go to and how they are
    written, so that every host writes alike."""

    orders: tuple[Order, ...]
    inbox: str
    outbox: str
    output: dict[str, Any]  # format, quality, bit_depth, file_mode
    max_input_pixels: int
    max_attempts: int
    sent_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**{**data, "orders": tuple(Order(**order) for order in data["orders"])})


@dataclass(frozen=True)
class Report:
    """How one job of an assignment ended on a worker host: an Outcome's name (or RELEASED,
    HANDED_BACK) with the reason; a done job's result is read from the outbox, not from here."""

    job_id: int
    content_hash: str
    dispatch: str
    outcome: str
    worker: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**data)
