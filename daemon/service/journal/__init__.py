"""The SQLite journal that is also the job queue: four stores over one connection.

The stores are the jobs (`jobs.py`), the outbox of notify: events (`events.py`), the memo of
file hashes (`memo.py`) and the files skipped without a job (`skipped.py`); `db.py` holds the
connection, its lock and the one transaction helper they all go through, and `schema.py` what the
file holds. `Journal` opens them together and answers for them, so the daemon's threads share
one `Journal` and every caller has one object to hold.

Every public method is one transaction under one lock. Time comes from the injected `now` clock,
never from `time` directly, so tests drive backoff with a fake clock. Nothing here logs; callers
decide what is worth a log line.
"""

import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from daemon.errors import JournalError, JournalUnusable
from daemon.jobs.progress import JobProgress
from daemon.service.journal.db import BUSY_TIMEOUT_SECONDS, Database
from daemon.service.journal.details import Details, Dispatch, Painted
from daemon.service.journal.events import DeliveryState, Event, EventStore, Pending
from daemon.service.journal.jobs import AddResult, Job, JobState, JobStore
from daemon.service.journal.memo import FileMemo, FileVersion, version_of
from daemon.service.journal.schema import SCHEMA_VERSION
from daemon.service.journal.skipped import SkippedFiles

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "SCHEMA_VERSION",
    "AddResult",
    "Database",
    "DeliveryState",
    "Details",
    "Dispatch",
    "Event",
    "EventStore",
    "FileMemo",
    "FileVersion",
    "Job",
    "JobState",
    "JobStore",
    "Journal",
    "JournalError",
    "JournalUnusable",
    "Painted",
    "Pending",
    "SkippedFiles",
    "version_of",
]


class Journal:
    """The journal file's stores on one connection, shared by the daemon's threads.

    Its methods are the stores' own, under the names callers have always used; `jobs`, `events`,
    `memo` and `skipped` are there for code that wants one store alone.
    """

    def __init__(
        self, path: Path, *, now: Callable[[], float] = time.time, readonly: bool = False
    ) -> None:
        """Open (creating the file, not its folder) and check the journal at `path`.

        `readonly` opens an existing journal for `stylebox status` and never creates a file.
        """
        self._db = Database(path, now=now, readonly=readonly)
        self.path = self._db.path
        self.events = EventStore(self._db)
        self.jobs = JobStore(self._db, self.events)
        self.memo = FileMemo(self._db)
        self.skipped = SkippedFiles(self._db)

    @classmethod
    def open_readonly(cls, path: Path, *, now: Callable[[], float] = time.time) -> Self:
        """Open an existing journal for reading while the daemon may be writing it."""
        return cls(path, now=now, readonly=True)

    def close(self) -> None:
        """Close the connection; the last one out checkpoints the WAL into the main file."""
        self._db.close()

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

    # -- events: which channels they go to, and who is woken when some are committed ---------

    @property
    def event_routes(self) -> Callable[[str], Sequence[str]]:
        """The channels an event of a type goes to (the service sets it from notify:); an event
        no channel wants is not recorded at all."""
        return self.events.routes

    @event_routes.setter
    def event_routes(self, routes: Callable[[str], Sequence[str]]) -> None:
        """Route events from now on (the service, from notify:)."""
        self.events.routes = routes

    @property
    def on_events(self) -> Callable[[], None]:
        """Told once events are committed (the sender's wake-up)."""
        return self.events.on_events

    @on_events.setter
    def on_events(self, wake: Callable[[], None]) -> None:
        """Wake `wake` from now on when events are committed."""
        self.events.on_events = wake

    # -- the jobs store ----------------------------------------------------------------------

    def add(self, content_hash: str, preset: str, fingerprint: str, source_path: str) -> AddResult:
        """Queue a photo for a preset unless already known (JobStore.add)."""
        return self.jobs.add(content_hash, preset, fingerprint, source_path)

    def claim_next(self) -> Job | None:
        """Take the oldest due queued job and mark it running."""
        return self.jobs.claim_next()

    def claim(self, job_id: int) -> Job | None:
        """Take this job if it is still queued."""
        return self.jobs.claim(job_id)

    def batch_candidates(self, head: Job, limit: int) -> list[Job]:
        """Queued jobs that could be stylised with `head` (JobStore.batch_candidates)."""
        return self.jobs.batch_candidates(head, limit)

    def set_planned_output(self, job_id: int, path: str) -> None:
        """Record the output path before writing it, so a retry reuses the name."""
        self.jobs.set_planned_output(job_id, path)

    def record_progress(self, progress: dict[int, JobProgress]) -> None:
        """Keep how far each running job is, for readers in other processes."""
        self.jobs.record_progress(progress)

    def note_dispatch(self, job_ids: Sequence[int], dispatch: Dispatch) -> None:
        """Note the latest sending of these running jobs to the worker hosts."""
        self.jobs.note_dispatch(job_ids, dispatch)

    def note_original(self, job_id: int, path: str) -> None:
        """Note where a done job's original now lies, for the gallery."""
        self.jobs.note_original(job_id, path)

    def reopen(self, content_hash: str) -> int:
        """Let quarantined jobs of these bytes be queued again (JobStore.reopen)."""
        return self.jobs.reopen(content_hash)

    def mark_done(
        self,
        job_id: int,
        outputs: Sequence[str],
        painted: Painted,
        events: Sequence[Event] = (),
    ) -> None:
        """Record the delivered files and settle the job done; on disk once this returns."""
        self.jobs.mark_done(job_id, outputs, painted, events)

    def mark_retry(self, job_id: int, error: str, not_before: float) -> None:
        """Queue the job again after a transient failure, not before `not_before`."""
        self.jobs.mark_retry(job_id, error, not_before)

    def mark_failed(self, job_id: int, error: str, events: Sequence[Event] = ()) -> None:
        """Give up on the job: its retries are spent."""
        self.jobs.mark_failed(job_id, error, events)

    def mark_quarantined(self, job_id: int, error: str, events: Sequence[Event] = ()) -> None:
        """Give up on the job for good: the photo itself is bad."""
        self.jobs.mark_quarantined(job_id, error, events)

    def release(
        self, job_id: int, *, error: str | None = None, not_before: float | None = None
    ) -> None:
        """Put a job back, the attempt not counted (JobStore.release)."""
        self.jobs.release(job_id, error=error, not_before=not_before)

    def move_source(self, job_id: int, path: str) -> bool:
        """An unfinished job follows its photo to `path` (JobStore.move_source)."""
        return self.jobs.move_source(job_id, path)

    def cancel(self, job_id: int) -> None:
        """Forget a claimed job whose photo left the inbox (JobStore.cancel)."""
        self.jobs.cancel(job_id)

    def requeue_running(self) -> int:
        """At start-up, queue again the jobs a crash left running; how many."""
        return self.jobs.requeue_running()

    def get(self, job_id: int) -> Job | None:
        """The job with this id, if any."""
        return self.jobs.get(job_id)

    def find(self, content_hash: str, fingerprint: str) -> Job | None:
        """The job for these photo bytes and preset parameters, if any."""
        return self.jobs.find(content_hash, fingerprint)

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state, every state present."""
        return self.jobs.counts()

    def pending(self, limit: int = 50) -> list[Job]:
        """Queued jobs in claim order, those waiting out a backoff included."""
        return self.jobs.pending(limit)

    def planned_outputs(self) -> set[str]:
        """The output paths chosen for jobs not finished yet."""
        return self.jobs.planned_outputs()

    def running(self) -> list[Job]:
        """The jobs the worker is on: one, or the photos of a batch."""
        return self.jobs.running()

    def recent_failures(self, limit: int = 10) -> list[Job]:
        """Failed and quarantined jobs, the latest to finish first."""
        return self.jobs.recent_failures(limit)

    def finished(
        self, state: JobState, *, preset: str | None = None, page: int = 1, page_size: int = 24
    ) -> tuple[int, int, list[Job]]:
        """A page of jobs in a final state: the total, the page shown, its jobs (JobStore's)."""
        return self.jobs.finished(state, preset=preset, page=page, page_size=page_size)

    def next_wake_time(self) -> float | None:
        """When the earliest queued job becomes due."""
        return self.jobs.next_wake_time()

    # -- the event store ---------------------------------------------------------------------

    def record_events(self, events: Sequence[Event]) -> None:
        """Events that change no job (a duplicate skipped, the daemon started), on their own."""
        self.events.record(events)

    def due(self, channel: str, limit: int = 50) -> list[Pending]:
        """The channel's pending events whose next try is due, oldest first."""
        return self.events.due(channel, limit)

    def abandon_channels_but(self, channels: Sequence[str]) -> int:
        """Give up the pending events of every channel not in `channels`; how many."""
        return self.events.abandon_channels_but(channels)

    def next_try(self, channel: str) -> float | None:
        """When the channel's next pending event is due, if it has one."""
        return self.events.next_try(channel)

    def last_delivered(self, channel: str) -> float | None:
        """When the channel last had an event delivered (a digest's clock)."""
        return self.events.last_delivered(channel)

    def settle(
        self,
        pending: Sequence[Pending],
        state: DeliveryState,
        *,
        error: str | None = None,
        next_try: float | None = None,
    ) -> None:
        """After a try: delivered (sent), given up, or pending again from `next_try`."""
        self.events.settle(pending, state, error, next_try)

    def delivery_counts(self) -> dict[str, dict[str, Any]]:
        """Per channel: events pending, sent and given up, and the last error (for status)."""
        return self.events.delivery_counts()

    def prune_events(self, before: float) -> int:
        """Forget events older than `before` that no channel still waits for; how many."""
        return self.events.prune(before)

    # -- the file memo -----------------------------------------------------------------------

    def remember_file(self, path: str, version: FileVersion, content_hash: str) -> None:
        """Note the hash of a file as it is now (size, mtime and ctime: its version)."""
        self.memo.remember(path, version, content_hash)

    def known_hash(self, path: str, version: FileVersion) -> str | None:
        """The remembered hash, only if the file is still the same version."""
        return self.memo.known_hash(path, version)

    def remembered_paths(self) -> list[str]:
        """Every path the memo holds."""
        return self.memo.paths()

    def forget_files(self, paths: Collection[str]) -> None:
        """Drop the memo of files that left the inbox, in one transaction."""
        self.memo.forget(paths)

    # -- the files skipped (videos) ----------------------------------------------------------

    def skip_file(self, path: str, version: FileVersion, kind: str) -> None:
        """Note that the file, as it is now (its version), was skipped as `kind`."""
        self.skipped.record(path, version, kind)

    def skipped_version(self, path: str) -> FileVersion | None:
        """The version of the file at `path` that was skipped, if it was."""
        return self.skipped.version(path)

    def skipped_count(self) -> int:
        """How many files in the inbox are skipped (videos)."""
        return self.skipped.count()

    def skipped_paths(self) -> list[str]:
        """Every path skipped."""
        return self.skipped.paths()

    def forget_skipped(self, paths: Collection[str]) -> None:
        """Drop the rows of skipped files that left the inbox, in one transaction."""
        self.skipped.forget(paths)
