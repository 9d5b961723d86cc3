"""The job queue: one row per (photo content hash, preset), claimed atomically by the workers.

A job settled by a worker is settled with the events that report it, in one transaction, through
the event store's `insert`; nothing here logs, callers decide what is worth a log line.
"""

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from daemon.errors import JournalError
from daemon.jobs.progress import JobProgress
from daemon.paths import restored, shown, stored
from daemon.service.journal.db import Database
from daemon.service.journal.details import Details, Dispatch, Painted, as_json
from daemon.service.journal.events import Event, EventStore


class JobState(StrEnum):
    """Where a job stands; stored as its string value, so the database reads without this enum."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class Job:
    """A snapshot of one journal row.

    `started_at` is when the latest attempt began; `finished_at` is set only in a final state
    (done, failed, quarantined). `planned_output` is chosen before the output is written, so an
    attempt retried after a crash overwrites the same path instead of leaving a second file.
    """

    id: int
    content_hash: str
    preset: str
    fingerprint: str
    source_path: str
    state: JobState
    attempts: int
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    not_before: float
    planned_output: str | None
    outputs: tuple[str, ...]
    error: str | None
    details: Details


@dataclass(frozen=True)
class AddResult:
    """What `JobStore.add` did; when not `created`, `job.state` tells the caller why."""

    job: Job
    created: bool


def _job(row: sqlite3.Row) -> Job:
    """Build a Job from a `SELECT *` row, decoding the enum and the JSON columns."""
    return Job(
        id=row["id"],
        content_hash=row["content_hash"],
        preset=row["preset"],
        fingerprint=row["fingerprint"],
        source_path=restored(row["source_path"]),
        state=JobState(row["state"]),
        attempts=row["attempts"],
        enqueued_at=row["enqueued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        not_before=row["not_before"],
        planned_output=row["planned_output"],
        outputs=tuple(json.loads(row["outputs"])),
        error=row["error"],
        details=Details.from_json(json.loads(row["details"])),
    )


def _get(conn: sqlite3.Connection, job_id: int) -> Job | None:
    """Read one job inside a transaction that is already open."""
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


class JobStore:
    """The `jobs` table: queueing, claiming and settling jobs, and reading them back."""

    def __init__(self, db: Database, events: EventStore) -> None:
        """Keep jobs over the journal's one connection; `events` records what settling reports."""
        self._db = db
        self._events = events

    # -- the queue ---------------------------------------------------------------------------

    def add(self, content_hash: str, preset: str, fingerprint: str, source_path: str) -> AddResult:
        """Queue a photo for a preset, unless this (content, preset fingerprint) is already known.

        A FAILED job (transient errors exhausted) is queued afresh: dropping the photo again is the
        user asking for another go. A QUARANTINED one stays: the same bytes fail the same way.
        """
        now = self._db.now()
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE content_hash = ? AND fingerprint = ?",
                (content_hash, fingerprint),
            ).fetchone()
            if row is None:
                job_id = conn.execute(
                    "INSERT INTO jobs (content_hash, preset, fingerprint, source_path, state,"
                    " attempts, enqueued_at, not_before) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                    (
                        content_hash,
                        preset,
                        fingerprint,
                        stored(source_path),
                        JobState.QUEUED,
                        now,
                        now,
                    ),
                ).lastrowid
            elif row["state"] == JobState.FAILED:
                # It keeps its id (the logs of the earlier tries stay linked), and so its place.
                job_id = row["id"]
                conn.execute(
                    "UPDATE jobs SET state = ?, preset = ?, source_path = ?, attempts = 0,"
                    " enqueued_at = ?, not_before = ?, started_at = NULL, finished_at = NULL,"
                    " planned_output = NULL, outputs = '[]', error = NULL, details = '{}'"
                    " WHERE id = ?",
                    (JobState.QUEUED, preset, stored(source_path), now, now, job_id),
                )
            else:
                return AddResult(_job(row), created=False)
            return AddResult(_get(conn, job_id), created=True)

    def claim_next(self) -> Job | None:
        """Take the oldest queued job that is due, mark it running and count the attempt."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE state = ? AND not_before <= ? ORDER BY id LIMIT 1",
                (JobState.QUEUED, self._db.now()),
            ).fetchone()
            return None if row is None else self._claim(conn, row["id"])

    def claim(self, job_id: int) -> Job | None:
        """Take this job if it is still queued (see claim_next); None if it is not."""
        with self._db.transaction() as conn:
            return self._claim(conn, job_id)

    def _claim(self, conn: sqlite3.Connection, job_id: int) -> Job | None:
        """Within an open write transaction, so that no one else takes the job in between."""
        # details held the last attempt's progress, if any: this attempt starts from nothing
        claimed = conn.execute(
            "UPDATE jobs SET state = ?, attempts = attempts + 1, started_at = ?,"
            " finished_at = NULL, details = '{}' WHERE id = ? AND state = ?",
            (JobState.RUNNING, self._db.now(), job_id, JobState.QUEUED),
        ).rowcount
        return _get(conn, job_id) if claimed else None

    def batch_candidates(self, head: Job, limit: int) -> list[Job]:
        """Queued jobs that could be stylised with `head`: due, of its preset, in claim order,
        and never attempted, so that a photo retried after a crash or a failure runs alone and
        cannot cost others an attempt."""
        return self._jobs(
            "SELECT * FROM jobs WHERE state = ? AND preset = ? AND attempts = 0 AND id != ?"
            " AND not_before <= ? ORDER BY id LIMIT ?",
            (JobState.QUEUED, head.preset, head.id, self._db.now(), limit),
        )

    def set_planned_output(self, job_id: int, path: str) -> None:
        """Record the output path before writing it, so a retry after a crash reuses the name."""
        self._update_running(
            job_id,
            "plan its output",
            "UPDATE jobs SET planned_output = ? WHERE id = ? AND state = ?",
            (path, job_id, JobState.RUNNING),
        )

    def record_progress(self, progress: dict[int, JobProgress]) -> None:
        """Keep how far each running job is in its details, one transaction for a batch, so that
        `stylebox status` and the web page see it from any process. A job no longer running
        (stopped, done) is left as it is."""
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET details = json_set(details, '$.progress', json(?)) WHERE id = ?"
                " AND state = ?",
                [
                    (json.dumps(as_json(p)), job_id, JobState.RUNNING)
                    for job_id, p in progress.items()
                ],
            )

    def note_dispatch(self, job_ids: Sequence[int], dispatch: Dispatch) -> None:
        """Which sending of these running jobs is the latest, and its broker message (several
        hosts): the coordinator sends again what is lost. A job settled meanwhile is left."""
        encoded = json.dumps(as_json(dispatch))
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE jobs SET details = json_set(details, '$.dispatch', json(?)) WHERE id = ?"
                " AND state = ?",
                [(encoded, job_id, JobState.RUNNING) for job_id in job_ids],
            )

    def note_original(self, job_id: int, path: str) -> None:
        """Where a done job's original now lies (kept, or moved), for the gallery."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET details = json_set(details, '$.original', json(?)) WHERE id = ?"
                " AND state = ?",
                (json.dumps(path), job_id, JobState.DONE),
            )

    def reopen(self, content_hash: str) -> int:
        """Let quarantined jobs of these bytes be queued again when the photo is dropped again
        (the user asked for a retry); they become failed, which `add` queues afresh."""
        with self._db.transaction() as conn:
            return conn.execute(
                "UPDATE jobs SET state = ? WHERE content_hash = ? AND state = ?",
                (JobState.FAILED, content_hash, JobState.QUARANTINED),
            ).rowcount

    def mark_done(
        self, job_id: int, outputs: Sequence[str], painted: Painted, events: Sequence[Event]
    ) -> None:
        """Record the delivered files; once this returns, the commit is on disk."""
        self._update_running(
            job_id,
            "mark it done",
            "UPDATE jobs SET state = ?, finished_at = ?, outputs = ?, details = ?, error = NULL"
            " WHERE id = ? AND state = ?",
            (
                JobState.DONE,
                self._db.now(),
                json.dumps(list(outputs)),
                json.dumps(as_json(painted)),
                job_id,
                JobState.RUNNING,
            ),
            events,
        )

    def mark_retry(self, job_id: int, error: str, not_before: float) -> None:
        """Queue the job again after a transient failure, not before `not_before` (backoff)."""
        self._update_running(
            job_id,
            "retry it",
            "UPDATE jobs SET state = ?, error = ?, not_before = ? WHERE id = ? AND state = ?",
            (JobState.QUEUED, shown(error), not_before, job_id, JobState.RUNNING),
        )

    def mark_failed(self, job_id: int, error: str, events: Sequence[Event] = ()) -> None:
        """Give up on the job: its retries are spent."""
        self._give_up(job_id, JobState.FAILED, "mark it failed", error, events)

    def mark_quarantined(self, job_id: int, error: str, events: Sequence[Event] = ()) -> None:
        """Give up on the job for good: the photo itself is bad, so retrying cannot help."""
        self._give_up(job_id, JobState.QUARANTINED, "quarantine it", error, events)

    def _give_up(
        self, job_id: int, state: JobState, action: str, error: str, events: Sequence[Event]
    ) -> None:
        """Settle a running job in a final state other than done: failed and quarantined differ
        only in whether dropping the same bytes again retries them."""
        self._update_running(
            job_id,
            action,
            "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ? AND state = ?",
            (state, shown(error), self._db.now(), job_id, JobState.RUNNING),
            events,
        )

    def release(
        self, job_id: int, *, error: str | None = None, not_before: float | None = None
    ) -> None:
        """Put a job back, the attempt not counted: on shutdown (a stop is not a failure), or
        handed back by a worker host that could not do it, with why and when to try again."""
        if error is None:
            self._update_running(
                job_id,
                "release it",
                "UPDATE jobs SET state = ?, attempts = attempts - 1 WHERE id = ? AND state = ?",
                (JobState.QUEUED, job_id, JobState.RUNNING),
            )
            return
        self._update_running(
            job_id,
            "release it",
            "UPDATE jobs SET state = ?, attempts = attempts - 1, error = ?, not_before = ?"
            " WHERE id = ? AND state = ?",
            (
                JobState.QUEUED,
                shown(error),
                not_before or self._db.now(),
                job_id,
                JobState.RUNNING,
            ),
        )

    def move_source(self, job_id: int, path: str) -> bool:
        """The photo of an unfinished job was renamed or moved inside the inbox (sync tools do
        it all the time): the job follows its content there. False if it has finished."""
        with self._db.transaction() as conn:
            return (
                conn.execute(
                    "UPDATE jobs SET source_path = ? WHERE id = ? AND state IN (?, ?)",
                    (stored(path), job_id, JobState.QUEUED, JobState.RUNNING),
                ).rowcount
                == 1
            )

    def cancel(self, job_id: int) -> None:
        """Forget a claimed job whose photo left the inbox before it was painted: there is
        nothing to paint, to quarantine or to retry, and the same bytes dropped again later are
        a new job."""
        with self._db.transaction() as conn:
            if (
                conn.execute(
                    "DELETE FROM jobs WHERE id = ? AND state = ?", (job_id, JobState.RUNNING)
                ).rowcount
                == 0
            ):
                job = _get(conn, job_id)
                found = "no such job" if job is None else f"the job is {job.state}"
                raise JournalError(
                    f"cannot cancel job {job_id} in the journal at {self._db.path}: it is not "
                    f"running ({found})"
                )

    def requeue_running(self) -> int:
        """At start-up, queue again the jobs a crash left running; returns how many.

        Their attempts stay counted: the photo may be what crashed the daemon, and the retry limit
        is what stops it from doing so forever.
        """
        with self._db.transaction() as conn:
            return conn.execute(
                "UPDATE jobs SET state = ? WHERE state = ?", (JobState.QUEUED, JobState.RUNNING)
            ).rowcount

    def _update_running(
        self,
        job_id: int,
        action: str,
        statement: str,
        params: tuple[Any, ...],
        events: Sequence[Event] = (),
    ) -> None:
        """Run `statement`, a whole UPDATE of job `job_id` that matches it only while it is
        running, with the `events` that report it in the same transaction. Nothing updated means
        the job is not running (two workers, or a bug): that raises, naming `action`."""
        with self._db.transaction() as conn:
            inserted = self._events.insert(conn, events)
            if conn.execute(statement, params).rowcount == 0:
                job = _get(conn, job_id)
                found = "no such job" if job is None else f"the job is {job.state}"
                raise JournalError(
                    f"cannot {action}: job {job_id} in the journal at {self._db.path} is not "
                    f"running ({found}); is another stylebox daemon using the same state_dir?"
                )
        if inserted:
            self._events.on_events()

    # -- reading -----------------------------------------------------------------------------

    def _jobs(self, statement: str, params: tuple[Any, ...]) -> list[Job]:
        """Run one whole `SELECT * FROM jobs` statement and build the Jobs."""
        with self._db.reading() as conn:
            return [_job(row) for row in conn.execute(statement, params)]

    def get(self, job_id: int) -> Job | None:
        """The job with this id, if any."""
        with self._db.reading() as conn:
            return _get(conn, job_id)

    def find(self, content_hash: str, fingerprint: str) -> Job | None:
        """The job for these photo bytes and preset parameters, if any."""
        jobs = self._jobs(
            "SELECT * FROM jobs WHERE content_hash = ? AND fingerprint = ?",
            (content_hash, fingerprint),
        )
        return jobs[0] if jobs else None

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state, every state present so a report can list zeros."""
        counts = dict.fromkeys(JobState, 0)
        with self._db.reading() as conn:
            for state, count in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                counts[JobState(state)] = count
        return counts

    def pending(self, limit: int = 50) -> list[Job]:
        """Queued jobs in claim order, those waiting out a backoff included."""
        return self._jobs(
            "SELECT * FROM jobs WHERE state = ? ORDER BY id LIMIT ?", (JobState.QUEUED, limit)
        )

    def planned_outputs(self) -> set[str]:
        """The output paths chosen for jobs not finished yet: taken, though not on disk."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT planned_output FROM jobs WHERE planned_output IS NOT NULL"
                " AND state IN (?, ?)",
                (JobState.QUEUED, JobState.RUNNING),
            )
            return {row[0] for row in rows}

    def running(self) -> list[Job]:
        """The jobs the worker is on: one, or the photos of a batch."""
        return self._jobs("SELECT * FROM jobs WHERE state = ? ORDER BY id", (JobState.RUNNING,))

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """Failed and quarantined jobs, the latest to finish first."""
        return self._jobs(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY finished_at DESC, id DESC LIMIT ?",
            (JobState.FAILED, JobState.QUARANTINED, limit),
        )

    def finished(
        self, state: JobState, *, preset: str | None = None, page: int = 1, page_size: int = 24
    ) -> tuple[int, int, list[Job]]:
        """Jobs in a final state, the latest to finish first, a page at a time (of `preset`
        alone, if given), in one read: how many there are in all, the page shown (`page`
        clamped to those there are: past the last is the last), and its jobs."""
        # `? IS NULL OR preset = ?`: one statement serves both, a NULL preset matching every row.
        with self._db.reading() as conn:
            total = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = ? AND (? IS NULL OR preset = ?)",
                (state, preset, preset),
            ).fetchone()[0]
            page = min(max(1, page), max(1, -(-total // page_size)))
            limit, offset = page_size, (page - 1) * page_size
            rows = conn.execute(
                "SELECT * FROM jobs WHERE state = ? AND (? IS NULL OR preset = ?)"
                " ORDER BY finished_at DESC, id DESC LIMIT ? OFFSET ?",
                (state, preset, preset, limit, offset),
            ).fetchall()
        return total, page, [_job(row) for row in rows]

    def next_wake_time(self) -> float | None:
        """When the earliest queued job becomes due, so the worker can sleep until then."""
        with self._db.reading() as conn:
            return conn.execute(
                "SELECT MIN(not_before) FROM jobs WHERE state = ?", (JobState.QUEUED,)
            ).fetchone()[0]
