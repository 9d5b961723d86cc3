"""How far a running job is: what the executor reports and the journal keeps. Torch-free, so
that the journal, `stylebox status` and the page can read it without loading the engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class JobProgress:
    """One running job's latest evaluation, as `stylebox status` and the page show it."""

    evaluation: int
    budget: int
    objective: float | None  # the best so far; None while every value is inf or NaN
    elapsed_seconds: float
    updated_at: float
    worker: str | None = None  # the host painting it, with several hosts
    stage: int = 1  # coarse to fine: which scale it is at (the evaluations are this stage's)
    stages: int = 1
    stage_seconds: float | None = None  # spent in this stage (None: a host that did not say)
    later_evaluations: float = 0.0  # at most this many of this stage's size still to come after

    def seconds_left(self) -> float:
        """At most how long the job has left: this stage's rest and the later stages' budgets at
        this stage's pace (an upper bound: the stopping rule usually ends each stage sooner)."""
        spent = self.elapsed_seconds if self.stage_seconds is None else self.stage_seconds
        per_evaluation = spent / max(1, self.evaluation)
        return per_evaluation * (self.budget - self.evaluation + self.later_evaluations)

    @classmethod
    def from_dict(cls, data: Any) -> JobProgress | None:
        """From its JSON form (a journal row, a host's roster line); None if it is not one."""
        if not isinstance(data, dict):
            return None
        known = {field.name for field in fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except TypeError:
            return None

    def as_dict(self) -> dict[str, Any]:
        """The journal's and the roster's JSON form."""
        rounded = {"elapsed_seconds": round(self.elapsed_seconds, 3)}
        if self.stage_seconds is not None:
            rounded["stage_seconds"] = round(self.stage_seconds, 3)
        return {**asdict(self), **rounded}
