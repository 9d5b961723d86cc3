"""The SQLite journal that is also the job queue: one row per (photo content hash, preset).

Why SQLite (as huey's storage does): the queue must survive a crash, be readable by
`stylebox status` from another process while the daemon runs, and claim a job atomically. WAL
gives readers that never block the writer, and `BEGIN IMMEDIATE` takes the write lock before the
claim reads anything, so two connections (threads or processes) can never claim the same row.
`synchronous=FULL` because the worker deletes the original photo right after `mark_done` commits:
that commit must be on disk.

Every public method is one transaction under one lock, so the watcher thread and the worker thread
can share a `Journal`. Time comes from the injected `now` clock, never from `time` directly, so
tests drive backoff with a fake clock. Nothing here logs; callers decide what is worth a log line.
"""

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from daemon.errors import JournalError, JournalUnusable

SCHEMA_VERSION = 2
BUSY_TIMEOUT_SECONDS = 5.0

# Each statement is run on its own: executescript() would COMMIT the surrounding transaction.
_SCHEMA = (
    """
    CREATE TABLE jobs (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids appear in logs
        content_hash   TEXT NOT NULL,
        preset         TEXT NOT NULL,
        fingerprint    TEXT NOT NULL,
        source_path    TEXT NOT NULL,
        state          TEXT NOT NULL
            CHECK (state IN ('queued', 'running', 'done', 'failed', 'quarantined')),
        attempts       INTEGER NOT NULL CHECK (attempts >= 0),
        enqueued_at    REAL NOT NULL,
        started_at     REAL,
        finished_at    REAL,
        not_before     REAL NOT NULL,
        planned_output TEXT,
        outputs        TEXT NOT NULL DEFAULT '[]',  -- JSON array of paths
        error          TEXT,
        details        TEXT NOT NULL DEFAULT '{}'   -- JSON object
    )
    """,
    "CREATE UNIQUE INDEX jobs_identity ON jobs (content_hash, fingerprint)",
    "CREATE INDEX jobs_claim ON jobs (state, id)",
    """
    CREATE TABLE files (
        path         TEXT PRIMARY KEY,
        size         INTEGER NOT NULL,
        mtime_ns     INTEGER NOT NULL,
        content_hash TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    "PRAGMA user_version = 1",
)
# Version 2: the transactional outbox of events (notify:). An event is inserted in the same
# transaction as the state change it reports, with one delivery row per channel it goes to; the
# sender marks each row sent or given up. A journal of version 1 gains these when opened.
_MIGRATIONS = {
    2: (
        """
        CREATE TABLE events (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order they happened in
            id       TEXT NOT NULL UNIQUE,               -- what receivers de-duplicate by
            type     TEXT NOT NULL,
            time     REAL NOT NULL,
            payload  TEXT NOT NULL                       -- the event as sent, JSON
        )
        """,
        """
        CREATE TABLE deliveries (
            seq       INTEGER NOT NULL REFERENCES events (seq),
            channel   TEXT NOT NULL,
            state     TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'given_up')),
            attempts  INTEGER NOT NULL DEFAULT 0,
            next_try  REAL NOT NULL,
            done_at   REAL,
            error     TEXT,
            PRIMARY KEY (channel, seq)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX deliveries_due ON deliveries (channel, state, next_try)",
        "PRAGMA user_version = 2",
    ),
}


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
    details: dict[str, Any]


@dataclass(frozen=True)
class Event:
    """Something the notify: channels are told; `payload` is the whole event as sent (its id,
    type and time included)."""

    id: str
    type: str
    time: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Pending:
    """An event still to be delivered to one channel."""

    seq: int
    channel: str
    attempts: int  # tries so far
    event: Event


class DeliveryState(StrEnum):
    """Where one event stands with one channel."""

    PENDING = "pending"
    SENT = "sent"
    GIVEN_UP = "given_up"


@dataclass(frozen=True)
class AddResult:
    """What `Journal.add` did; when not `created`, `job.state` tells the caller why."""

    job: Job
    created: bool


def _job(row: sqlite3.Row) -> Job:
    """Build a Job from a `SELECT *` row, decoding the enum and the JSON columns."""
    return Job(
        id=row["id"],
        content_hash=row["content_hash"],
        preset=row["preset"],
        fingerprint=row["fingerprint"],
        source_path=row["source_path"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        enqueued_at=row["enqueued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        not_before=row["not_before"],
        planned_output=row["planned_output"],
        outputs=tuple(json.loads(row["outputs"])),
        error=row["error"],
        details=json.loads(row["details"]),
    )


class Journal:
    """One connection to the journal file, shared by the daemon's threads under a lock."""

    def __init__(
        self, path: Path, *, now: Callable[[], float] = time.time, readonly: bool = False
    ) -> None:
        """Open (creating the file, not its folder) and check the journal at `path`.

        `readonly` opens an existing journal for `stylebox status` and never creates a file.
        """
        self.path = Path(path)
        self._now = now
        self._readonly = readonly
        # Which channels an event of a type goes to (the service sets it from notify:); an
        # event no channel wants is not recorded at all.
        self.event_routes: Callable[[str], Sequence[str]] = lambda event_type: ()
        self.on_events: Callable[[], None] = lambda: None  # told once events are committed
        self._lock = threading.Lock()
        self._conn = self._connect()
        try:
            with self._errors():
                self._prepare()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open_readonly(cls, path: Path, *, now: Callable[[], float] = time.time) -> Self:
        """Open an existing journal for reading while the daemon may be writing it."""
        return cls(path, now=now, readonly=True)

    def _connect(self) -> sqlite3.Connection:
        """Open the connection; autocommit mode, because every transaction here is explicit."""
        options: dict[str, Any] = {
            "timeout": BUSY_TIMEOUT_SECONDS,
            "isolation_level": None,
            "check_same_thread": False,
        }
        try:
            if self._readonly:
                if not self.path.is_file():
                    raise JournalError(
                        f"there is no journal at {self.path}; check state_dir, or start the "
                        "daemon once to create it"
                    )
                # mode=ro never creates the database; as_uri() escapes '?' and '#' in the path.
                uri = self.path.absolute().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, **options)
            else:
                conn = sqlite3.connect(self.path, **options)
        except sqlite3.Error as exc:
            raise self._journal_error(exc, None) or exc from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _prepare(self) -> None:
        """Set the pragmas, create or check the schema, and refuse a damaged file."""
        conn = self._conn
        if self._readonly:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise JournalError(
                    f"the journal at {self.path} is empty; start the daemon once to create it"
                )
            self._check_version(version)
            return
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise JournalUnusable(
                f"the journal at {self.path} cannot use write-ahead logging (got {mode!r}); "
                "put state_dir on a local disk"
            )
        conn.execute("PRAGMA synchronous = FULL")
        # IMMEDIATE so two daemons starting at once cannot both create the schema.
        with self._transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
            for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
        # The original photo is deleted on the journal's word: refuse to start on a damaged file
        # rather than find out halfway through a job. It reads the whole file, which stays small.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise self._corrupt("; ".join(problems[:3]))

    def _check_version(self, version: int) -> None:
        """Refuse a journal written by a newer stylebox rather than misread it."""
        if version > SCHEMA_VERSION:
            raise JournalUnusable(
                f"the journal at {self.path} has schema version {version}, but this stylebox "
                f"knows only up to {SCHEMA_VERSION}; run the newer stylebox, or move the file "
                "aside to start a fresh journal"
            )

    def _corrupt(self, detail: str) -> JournalUnusable:
        """The one message for a damaged journal, so every path to it gives the same remedy; on one
        line, as every error the CLI prints (SQLite's integrity report spans several)."""
        detail = " ".join(detail.split())
        return JournalUnusable(
            f"the journal at {self.path} is corrupt ({detail}); stop the daemon and move the file "
            "(with its -wal and -shm files) aside to start a fresh journal"
        )

    def _journal_error(
        self, exc: sqlite3.Error, conn: sqlite3.Connection | None
    ) -> JournalError | None:
        """Explain an SQLite error the user can act on; None for the rest (those are bugs).

        `conn`, when there is one, is used to ask `quick_check` what exactly is damaged.
        """
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF  # the extended code's low byte is the primary result code
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            detail = str(exc)
            if conn is not None:
                # If it is too damaged even to check, the first error says enough.
                with suppress(sqlite3.Error):
                    detail += "; quick_check: " + "; ".join(
                        row[0] for row in conn.execute("PRAGMA quick_check").fetchmany(3)
                    )
            return self._corrupt(detail)
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return JournalError(
                f"the journal at {self.path} stayed locked for over {BUSY_TIMEOUT_SECONDS:g} s "
                f"({exc}); is another stylebox daemon using the same state_dir?"
            )
        if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
            return JournalUnusable(
                f"cannot open or write the journal at {self.path} ({exc}); check that its folder "
                "exists and that this user may write there"
            )
        if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            return JournalError(
                f"cannot write the journal at {self.path} ({exc}); check the disk holding it "
                "(full? failing?)"
            )
        return None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite errors the user can act on into JournalError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._journal_error(exc, self._conn) or exc from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: the write lock is taken before the first read."""
        if self._readonly:
            raise JournalError(f"the journal at {self.path} was opened read-only")
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One locked write transaction: the unit every public writer is made of."""
        with self._lock, self._errors(), self._transaction() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Locked access for a single SELECT (atomic on its own in autocommit mode)."""
        with self._lock, self._errors():
            yield self._conn

    def close(self) -> None:
        """Close the connection; the last one out checkpoints the WAL into the main file."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        """Use as `with Journal(path) as journal:` to close it on the way out."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close, whatever happened."""
        self.close()

    # -- the queue ---------------------------------------------------------------------------

    def add(self, content_hash: str, preset: str, fingerprint: str, source_path: str) -> AddResult:
        """Queue a photo for a preset, unless this (content, preset fingerprint) is already known.

        A FAILED job (transient errors exhausted) is queued afresh: dropping the photo again is the
        user asking for another go. A QUARANTINED one stays: the same bytes fail the same way.
        """
        now = self._now()
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE content_hash = ? AND fingerprint = ?",
                (content_hash, fingerprint),
            ).fetchone()
            if row is None:
                job_id = conn.execute(
                    "INSERT INTO jobs (content_hash, preset, fingerprint, source_path, state,"
                    " attempts, enqueued_at, not_before) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                    (content_hash, preset, fingerprint, source_path, JobState.QUEUED, now, now),
                ).lastrowid
            elif row["state"] == JobState.FAILED:
                # It keeps its id (the logs of the earlier tries stay linked), and so its place.
                job_id = row["id"]
                conn.execute(
                    "UPDATE jobs SET state = ?, preset = ?, source_path = ?, attempts = 0,"
                    " enqueued_at = ?, not_before = ?, started_at = NULL, finished_at = NULL,"
                    " planned_output = NULL, outputs = '[]', error = NULL, details = '{}'"
                    " WHERE id = ?",
                    (JobState.QUEUED, preset, source_path, now, now, job_id),
                )
            else:
                return AddResult(_job(row), created=False)
            return AddResult(self._get(conn, job_id), created=True)

    def claim_next(self) -> Job | None:
        """Take the oldest queued job that is due, mark it running and count the attempt."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE state = ? AND not_before <= ? ORDER BY id LIMIT 1",
                (JobState.QUEUED, self._now()),
            ).fetchone()
            return None if row is None else self._claim(conn, row["id"])

    def claim(self, job_id: int) -> Job | None:
        """Take this job if it is still queued (see claim_next); None if it is not."""
        with self._write() as conn:
            return self._claim(conn, job_id)

    def _claim(self, conn: sqlite3.Connection, job_id: int) -> Job | None:
        """Within an open write transaction, so that no one else takes the job in between."""
        # details held the last attempt's progress, if any: this attempt starts from nothing
        claimed = conn.execute(
            "UPDATE jobs SET state = ?, attempts = attempts + 1, started_at = ?,"
            " finished_at = NULL, details = '{}' WHERE id = ? AND state = ?",
            (JobState.RUNNING, self._now(), job_id, JobState.QUEUED),
        ).rowcount
        return self._get(conn, job_id) if claimed else None

    def batch_candidates(self, head: Job, limit: int) -> list[Job]:
        """Queued jobs that could be stylised with `head`: due, of its preset, in claim order,
        and never attempted, so that a photo retried after a crash or a failure runs alone and
        cannot cost others an attempt."""
        return self._jobs(
            "SELECT * FROM jobs WHERE state = ? AND preset = ? AND attempts = 0 AND id != ?"
            " AND not_before <= ? ORDER BY id LIMIT ?",
            (JobState.QUEUED, head.preset, head.id, self._now(), limit),
        )

    def set_planned_output(self, job_id: int, path: str) -> None:
        """Record the output path before writing it, so a retry after a crash reuses the name."""
        self._update_running(job_id, "plan its output", "planned_output = ?", (path,))

    def record_progress(self, progress: dict[int, dict[str, Any]]) -> None:
        """Keep how far each running job is in its details, one transaction for a batch, so that
        `stylebox status` and the web page see it from any process. A job no longer running
        (stopped, done) is left as it is."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE jobs SET details = json_set(details, '$.progress', json(?)) WHERE id = ?"
                " AND state = ?",
                [(json.dumps(p), job_id, JobState.RUNNING) for job_id, p in progress.items()],
            )

    def note_dispatch(self, job_ids: Sequence[int], dispatch: dict[str, Any]) -> None:
        """Which sending of these running jobs is the latest, and its broker message (several
        hosts): the coordinator sends again what is lost. A job settled meanwhile is left."""
        dispatch = json.dumps(dispatch)
        with self._write() as conn:
            conn.executemany(
                "UPDATE jobs SET details = json_set(details, '$.dispatch', json(?)) WHERE id = ?"
                " AND state = ?",
                [(dispatch, job_id, JobState.RUNNING) for job_id in job_ids],
            )

    def note_original(self, job_id: int, path: str) -> None:
        """Where a done job's original now lies (kept, or moved), for the gallery."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET details = json_set(details, '$.original', ?) WHERE id = ?"
                " AND state = ?",
                (path, job_id, JobState.DONE),
            )

    def reopen(self, content_hash: str) -> int:
        """Let quarantined jobs of these bytes be queued again when the photo is dropped again
        (the user asked for a retry); they become failed, which `add` queues afresh."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE jobs SET state = ? WHERE content_hash = ? AND state = ?",
                (JobState.FAILED, content_hash, JobState.QUARANTINED),
            ).rowcount

    def mark_done(
        self,
        job_id: int,
        outputs: Sequence[str],
        details: dict[str, Any],
        events: Sequence[Event] = (),
    ) -> None:
        """Record the delivered files; once this returns, the commit is on disk."""
        self._update_running(
            job_id,
            "mark it done",
            "state = ?, finished_at = ?, outputs = ?, details = ?, error = NULL",
            (JobState.DONE, self._now(), json.dumps(list(outputs)), json.dumps(details)),
            events,
        )

    def mark_retry(self, job_id: int, error: str, not_before: float) -> None:
        """Queue the job again after a transient failure, not before `not_before` (backoff)."""
        self._update_running(
            job_id,
            "retry it",
            "state = ?, error = ?, not_before = ?",
            (JobState.QUEUED, error, not_before),
        )

    def mark_failed(self, job_id: int, error: str, events: Sequence[Event] = ()) -> None:
        """Give up on the job: its retries are spent."""
        self._update_running(
            job_id,
            "mark it failed",
            "state = ?, error = ?, finished_at = ?",
            (JobState.FAILED, error, self._now()),
            events,
        )

    def mark_quarantined(self, job_id: int, error: str, events: Sequence[Event] = ()) -> None:
        """Give up on the job for good: the photo itself is bad, so retrying cannot help."""
        self._update_running(
            job_id,
            "quarantine it",
            "state = ?, error = ?, finished_at = ?",
            (JobState.QUARANTINED, error, self._now()),
            events,
        )

    def release(
        self, job_id: int, *, error: str | None = None, not_before: float | None = None
    ) -> None:
        """Put a job back, the attempt not counted: on shutdown (a stop is not a failure), or
        handed back by a worker host that could not do it, with why and when to try again."""
        if error is None:
            assignments, params = "state = ?, attempts = attempts - 1", (JobState.QUEUED,)
        else:
            assignments = "state = ?, attempts = attempts - 1, error = ?, not_before = ?"
            params = (JobState.QUEUED, error, not_before or self._now())
        self._update_running(job_id, "release it", assignments, params)

    def requeue_running(self) -> int:
        """At start-up, queue again the jobs a crash left running; returns how many.

        Their attempts stay counted: the photo may be what crashed the daemon, and the retry limit
        is what stops it from doing so forever.
        """
        with self._write() as conn:
            return conn.execute(
                "UPDATE jobs SET state = ? WHERE state = ?", (JobState.QUEUED, JobState.RUNNING)
            ).rowcount

    def _update_running(
        self,
        job_id: int,
        action: str,
        assignments: str,
        params: tuple[Any, ...],
        events: Sequence[Event] = (),
    ) -> None:
        """Apply `assignments` to a running job, with the `events` that report it in the same
        transaction; anything else than a running job means two workers or a bug."""
        with self._write() as conn:
            inserted = self._insert_events(conn, events)
            updated = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ?",
                (*params, job_id, JobState.RUNNING),
            ).rowcount
            if updated == 0:
                job = self._get(conn, job_id)
                found = "no such job" if job is None else f"the job is {job.state}"
                raise JournalError(
                    f"cannot {action}: job {job_id} in the journal at {self.path} is not running "
                    f"({found}); is another stylebox daemon using the same state_dir?"
                )
        if inserted:
            self.on_events()

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def _get(conn: sqlite3.Connection, job_id: int) -> Job | None:
        """Read one job inside a transaction that is already open."""
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def _jobs(self, sql: str, params: tuple[Any, ...]) -> list[Job]:
        """Run one SELECT over jobs and build the Jobs."""
        with self._read() as conn:
            return [_job(row) for row in conn.execute(sql, params)]

    def get(self, job_id: int) -> Job | None:
        """The job with this id, if any."""
        with self._read() as conn:
            return self._get(conn, job_id)

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
        with self._read() as conn:
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
        with self._read() as conn:
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
        self, state: JobState, *, preset: str | None = None, limit: int = 24, offset: int = 0
    ) -> tuple[int, list[Job]]:
        """Jobs in a final state, the latest to finish first, a page at a time, with how many
        there are in all (of `preset` alone, if given)."""
        where, params = "state = ?", [state]
        if preset is not None:
            where, params = where + " AND preset = ?", [*params, preset]
        with self._read() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT * FROM jobs WHERE {where} ORDER BY finished_at DESC, id DESC"
                " LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return total, [_job(row) for row in rows]

    def next_wake_time(self) -> float | None:
        """When the earliest queued job becomes due, so the worker can sleep until then."""
        with self._read() as conn:
            return conn.execute(
                "SELECT MIN(not_before) FROM jobs WHERE state = ?", (JobState.QUEUED,)
            ).fetchone()[0]

    # -- events: the transactional outbox of notify: ----------------------------------------

    def _insert_events(self, conn: sqlite3.Connection, events: Sequence[Event]) -> int:
        """Within an open write transaction: each event, pending for each channel it goes to;
        how many were wanted by a channel."""
        inserted = 0
        for event in events:
            channels = self.event_routes(event.type)
            if not channels:
                continue
            added = conn.execute(
                "INSERT OR IGNORE INTO events (id, type, time, payload) VALUES (?, ?, ?, ?)",
                (event.id, event.type, event.time, json.dumps(event.payload)),
            )
            if not added.rowcount:
                continue  # told already (an id made from what it reports: a duplicate's)
            seq = added.lastrowid
            conn.executemany(
                "INSERT INTO deliveries (seq, channel, state, next_try) VALUES (?, ?, ?, ?)",
                [(seq, channel, DeliveryState.PENDING, event.time) for channel in channels],
            )
            inserted += 1
        return inserted

    def record_events(self, events: Sequence[Event]) -> None:
        """Events that change no job (a duplicate skipped, the daemon started), on their own."""
        with self._write() as conn:
            inserted = self._insert_events(conn, events)
        if inserted:
            self.on_events()

    def due(self, channel: str, limit: int = 50) -> list[Pending]:
        """The channel's pending events whose next try is due, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT d.seq, d.attempts, e.id, e.type, e.time, e.payload FROM deliveries d"
                " JOIN events e ON e.seq = d.seq WHERE d.channel = ? AND d.state = ?"
                " AND d.next_try <= ? ORDER BY d.seq LIMIT ?",
                (channel, DeliveryState.PENDING, self._now(), limit),
            ).fetchall()
        return [
            Pending(
                row["seq"],
                channel,
                row["attempts"],
                Event(row["id"], row["type"], row["time"], json.loads(row["payload"])),
            )
            for row in rows
        ]

    def abandon_channels_but(self, channels: Sequence[str]) -> int:
        """Give up the pending events of every channel not in `channels` (one taken out of the
        config, or a webhook whose URL changed): nothing would ever deliver them."""
        marks = ", ".join("?" * len(channels))
        with self._write() as conn:
            return conn.execute(
                f"UPDATE deliveries SET state = ?, done_at = ?, error = ? WHERE state = ?"
                f" AND channel NOT IN ({marks})",
                (
                    DeliveryState.GIVEN_UP,
                    self._now(),
                    "the channel is no longer in notify:",
                    DeliveryState.PENDING,
                    *channels,
                ),
            ).rowcount

    def next_try(self, channel: str) -> float | None:
        """When the channel's next pending event is due, if it has one."""
        with self._read() as conn:
            return conn.execute(
                "SELECT MIN(next_try) FROM deliveries WHERE channel = ? AND state = ?",
                (channel, DeliveryState.PENDING),
            ).fetchone()[0]

    def last_delivered(self, channel: str) -> float | None:
        """When the channel last had an event delivered (a digest's clock)."""
        with self._read() as conn:
            return conn.execute(
                "SELECT MAX(done_at) FROM deliveries WHERE channel = ? AND state = ?",
                (channel, DeliveryState.SENT),
            ).fetchone()[0]

    def settle(
        self,
        pending: Sequence[Pending],
        state: DeliveryState,
        *,
        error: str | None = None,
        next_try: float | None = None,
    ) -> None:
        """After a try: delivered (sent), given up, or pending again from `next_try`."""
        now = self._now()
        done_at = None if state is DeliveryState.PENDING else now
        with self._write() as conn:
            conn.executemany(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, done_at = ?,"
                " error = ?, next_try = ? WHERE channel = ? AND seq = ?",
                [
                    (state, done_at, error, next_try or now, item.channel, item.seq)
                    for item in pending
                ],
            )

    def delivery_counts(self) -> dict[str, dict[str, Any]]:
        """Per channel: how many events are pending, sent and given up, and the last error of
        one still pending (for `stylebox status`); {} for a journal older than events."""
        found: dict[str, dict[str, Any]] = {}
        with self._read() as conn:
            try:
                rows = conn.execute(
                    "SELECT channel, state, COUNT(*) AS n FROM deliveries GROUP BY channel, state"
                ).fetchall()
            except sqlite3.OperationalError:  # version 1: no deliveries table
                return {}
            for row in rows:
                counts = found.setdefault(row["channel"], dict.fromkeys(map(str, DeliveryState), 0))
                counts[row["state"]] = row["n"]
            for channel, counts in found.items():
                last = conn.execute(
                    "SELECT error FROM deliveries WHERE channel = ? AND state = ?"
                    " AND error IS NOT NULL ORDER BY seq DESC LIMIT 1",
                    (channel, DeliveryState.PENDING),
                ).fetchone()
                counts["last_error"] = last[0] if last else None
        return found

    def prune_events(self, before: float) -> int:
        """Forget events older than `before` that no channel still waits for; how many."""
        with self._write() as conn:
            old = "SELECT seq FROM events WHERE time < ? AND seq NOT IN" + (
                " (SELECT seq FROM deliveries WHERE state = ?)"
            )
            params = (before, DeliveryState.PENDING)
            conn.execute(f"DELETE FROM deliveries WHERE seq IN ({old})", params)
            return conn.execute(f"DELETE FROM events WHERE seq IN ({old})", params).rowcount

    # -- file memo: periodic rescans skip re-hashing originals kept in the inbox --------------

    def remember_file(self, path: str, size: int, mtime_ns: int, content_hash: str) -> None:
        """Note the hash of a file as it is now (size and mtime identify the version)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO files (path, size, mtime_ns, content_hash) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash",
                (path, size, mtime_ns, content_hash),
            )

    def known_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The remembered hash, only if the file still has the same size and mtime."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT content_hash FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
                (path, size, mtime_ns),
            ).fetchone()
        return None if row is None else row[0]

    def remembered_paths(self) -> list[str]:
        """Every path the memo holds, so a caller can find those no longer in the inbox."""
        with self._read() as conn:
            return [row[0] for row in conn.execute("SELECT path FROM files")]

    def forget_files(self, paths: Collection[str]) -> None:
        """Drop the memo of files that left the inbox, in one transaction: a row per photo ever
        seen would make the table grow for the life of the install."""
        if not paths:
            return
        with self._write() as conn:
            conn.executemany("DELETE FROM files WHERE path = ?", [(path,) for path in paths])
