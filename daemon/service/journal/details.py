"""What a job's `details` column holds, as typed records: how far it is while running, which
sending is the latest (several hosts), what its result is once done, and where its original
went. Stored as the same JSON as ever (one object; a done job's result keys at its top level), so
the schema and older journals are unchanged; a key this version does not know is ignored."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from daemon.jobs.progress import JobProgress

R = TypeVar("R")


@dataclass(frozen=True)
class Dispatch:
    """One sending of a running job to the worker hosts: a report of an older one is stale."""

    id: str
    sent_at: float
    message: str | None = None  # the broker's id for it, once sent


@dataclass(frozen=True)
class Painted:
    """What the journal keeps of a done job's result (the rest is in its sidecar)."""

    size: list[int]  # [width, height]
    seconds: float
    losses: dict[str, float]
    evaluations: int
    device: str
    batch: int
    worker: dict[str, Any] | None = None

    @classmethod
    def of_sidecar(cls, sidecar: dict[str, Any]) -> Painted:
        """From the result's sidecar."""
        return cls(
            size=list(sidecar["size"]),
            seconds=sidecar["seconds"]["stylise"],
            losses=dict(sidecar["losses"]),
            evaluations=sidecar["evaluations"],
            device=sidecar["device"],
            batch=sidecar["batch"],
            worker=sidecar.get("worker"),
        )


@dataclass(frozen=True)
class Details:
    """A job's details column, read."""

    progress: JobProgress | None = None
    dispatch: Dispatch | None = None
    painted: Painted | None = None
    original: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Details:
        """Read the column; a record that does not fit (an older or hand-edited row) is None."""
        if not isinstance(data, dict):
            return cls()
        original = data.get("original")
        return cls(
            progress=JobProgress.from_dict(data.get("progress")),
            dispatch=_record(Dispatch, data.get("dispatch")),
            painted=_record(Painted, data if "size" in data else None),
            original=original if isinstance(original, str) else None,
        )


def _record(kind: type[R], data: Any) -> R | None:
    """`kind` from the known keys of `data`, None when they do not make one."""
    if not isinstance(data, dict):
        return None
    known = {field.name for field in dataclasses.fields(kind)}  # type: ignore[arg-type]
    try:
        return kind(**{key: value for key, value in data.items() if key in known})
    except TypeError:
        return None


def as_json(record: JobProgress | Dispatch | Painted) -> dict[str, Any]:
    """A record's JSON form in the column."""
    return record.as_dict() if isinstance(record, JobProgress) else asdict(record)
