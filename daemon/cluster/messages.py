"""What travels through the broker, as plain JSON: an assignment of jobs to stylise together,
and one report per job. Paths are the coordinator's; each host maps them to its own mounts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from daemon.jobs.outcome import Outcome
from daemon.jobs.work import Work, Writing
from daemon.service.journal import Job


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

    def as_work(self, source: Path, planned: Path) -> Work:
        """What the executor paints, with this host's paths for the photo and the result."""
        return Work(
            job_id=self.id,
            source=source,
            planned=planned,
            content_hash=self.content_hash,
            attempt=self.attempts,
            enqueued_at=self.enqueued_at,
        )


@dataclass(frozen=True)
class Assignment:
    """Jobs of one preset and output size, stylised together on one device (`batch_size`), and
    what the coordinator's config decides for them: the outbox they go to and how they are
    written, so that every host writes alike."""

    orders: tuple[Order, ...]
    inbox: str
    outbox: str
    writing: Writing
    max_input_pixels: int
    max_attempts: int
    sent_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        orders = tuple(Order(**order) for order in data["orders"])
        return cls(**{**data, "orders": orders, "writing": Writing(**data["writing"])})


@dataclass(frozen=True)
class Report:
    """How one job of an assignment ended on a worker host, with the reason; a done job's
    result is read from the outbox, not from here."""

    job_id: int
    content_hash: str
    dispatch: str
    outcome: Outcome
    worker: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})
