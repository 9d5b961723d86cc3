"""How a job ends, in the journal and the outbox, once its outcome is known.

Shared by the worker in this process and by the coordinator applying what a worker host reports
(daemon/cluster): one place decides what each outcome does to the journal, the photo and the
events, wherever the job ran (the outcomes themselves are daemon/jobs/outcome.py's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon.config import Config
from daemon.jobs.outcome import Outcome, holds
from daemon.outbox import Delivery, OutsideOutbox, open_outbox
from daemon.service import events
from daemon.service.backoff import backoff_seconds
from daemon.service.intake import dispose_original
from daemon.service.journal import Job, Journal, Painted
from daemon.service.metrics import Metrics

if TYPE_CHECKING:
    from loguru import Logger


class Finisher:
    """Applies outcomes to the journal, the outbox and the photo in the inbox."""

    def __init__(
        self,
        journal: Journal,
        metrics: Metrics,
        *,
        on_status: Callable[[str], None] = lambda text: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        self.on_status = on_status
        self.clock = clock

    def done(
        self,
        config: Config,
        job: Job,
        delivery: Delivery,
        sidecar: dict[str, Any],
    ) -> None:
        """Mark the job done with its published files and what its sidecar says of it, then
        dispose of the original."""
        done = events.photo_done(config, job, delivery.image, delivery.sidecar, sidecar)
        outputs = [str(delivery.image), str(delivery.sidecar)]
        self.journal.mark_done(job.id, outputs, Painted.of_sidecar(sidecar), events=[done])
        self.metrics.finished(job.preset, "done", self.clock() - (job.started_at or self.clock()))
        log = logger.bind(job=job.id)
        log.success("done: {}", delivery.image)
        self._dispose_original(config, job, log)

    def gave_up_on_crashes(self, config: Config, job: Job) -> bool:
        """Give up on a claimed job whose attempts are past the limit, which only a crash gets
        to (other failures are counted where they happen): a photo that kills the daemon every
        time must not do so forever under Restart=. True when it was given up."""
        if job.attempts <= config.retries.max_attempts:
            return False
        reason = f"gave up after {job.attempts - 1} attempt(s): the daemon died during each"
        self.quarantine(config, job, reason, gave_up=True)
        return True

    def ended(self, config: Config, job: Job, outcome: Outcome, reason: str) -> None:
        """Any outcome but done: a bad photo is quarantined, a changed one left for its new job,
        a folder linked out of the outbox fails it in place, a transient fault is retried with
        backoff until the attempts run out, anything else fails it."""
        log = logger.bind(job=job.id)
        source = Path(job.source_path)
        if outcome is Outcome.SUPERSEDED:
            # Leave the file alone: the watcher has seen the change and queues the new content.
            self.journal.mark_failed(job.id, reason)
            self.metrics.finished(job.preset, "failed")
            log.info("{}; its new content is queued on its own", reason)
        elif outcome is Outcome.QUARANTINED:
            self.quarantine(config, job, reason)
        elif outcome is Outcome.OUTSIDE:
            # The photo is not to blame, and retries would meet the same link. Failed at once,
            # left in the inbox: offered again (touched, or at a restart) once the link is gone,
            # it is queued afresh.
            failed = events.photo_given_up(config, job, source, reason, kind="failed")
            self.journal.mark_failed(job.id, reason, events=[failed])
            self.metrics.finished(job.preset, "failed")
            log.error("{}: {}; left in the inbox", source.name, reason)
        elif outcome is Outcome.CANCELLED:
            self.cancel(job, reason)
        elif outcome is Outcome.PAUSED:  # the environment's fault: back, unattempted
            self.journal.release(job.id, error=reason)
            log.warning("{}: {}; back in the queue until that is fixed", source.name, reason)
        elif outcome is Outcome.RETRY and job.attempts < config.retries.max_attempts:
            delay = backoff_seconds(job.attempts, first_seconds=config.retries.backoff_seconds)
            self.journal.mark_retry(job.id, reason, self.clock() + delay)
            log.warning("attempt {} failed ({}); retrying in {:g} s", job.attempts, reason, delay)
        else:
            # Out of the inbox, so that a restart does not fail it again; dropping it back retries.
            reason = f"gave up after {job.attempts} attempt(s): {reason}"
            self.quarantine(config, job, reason, gave_up=True)

    def cancel(self, job: Job, reason: str) -> None:
        """The photo left the inbox before it was painted: its job is forgotten, with nothing
        in failed/ (an error file for a photo that is not there could never be retried)."""
        self.journal.cancel(job.id)
        self.journal.forget_files([job.source_path])
        self.metrics.finished(job.preset, "cancelled")
        logger.bind(job=job.id).info("cancelled: {}", reason)
        self.on_status("idle")

    def quarantine(self, config: Config, job: Job, reason: str, *, gave_up: bool = False) -> None:
        """Move the photo to outbox/failed with its reason; `gave_up`: retries ran out (state
        failed: dropping it again retries), else the photo itself is bad (quarantined). A photo
        no longer there is cancelled instead."""
        log = logger.bind(job=job.id)
        source = Path(job.source_path)
        if not os.path.lexists(source):
            self.cancel(job, f"{source.name} left the inbox ({reason})")
            return
        outbox = open_outbox(config)
        details = {
            "reason": reason,
            "attempts": job.attempts,
            "preset": job.preset,
            "input_sha256": job.content_hash,
        }
        try:
            outbox.quarantine(source, details)
        except (OSError, OutsideOutbox) as exc:  # failed/ on a full or read-only disk, or a link
            log.error(
                "could not move {} to {} ({}); it stays where it is",
                source.name,
                outbox.root / "failed",
                exc,
            )
        mark = self.journal.mark_failed if gave_up else self.journal.mark_quarantined
        kind = "failed" if gave_up else "quarantined"
        mark(job.id, reason, events=[events.photo_given_up(config, job, source, reason, kind=kind)])
        self.metrics.finished(job.preset, kind)
        log.warning("{}: {}", kind, reason)
        self.on_status("idle")

    def _dispose_original(self, config: Config, job: Job, log: Logger) -> None:
        current = self.journal.get(job.id)  # renamed or moved while painted: where it is now
        source = Path(current.source_path if current is not None else job.source_path)
        try:
            if source.exists() and not holds(source, job.content_hash):
                log.debug("{} changed since its job began; left for its own job", source.name)
                return
            moved = dispose_original(config, self.journal, open_outbox(config), source)
        except (OSError, OutsideOutbox) as exc:  # the output is safe; a stuck original is untidy
            log.warning("could not {} the original {}: {}", config.originals.policy, source, exc)
            return
        if moved is not None:
            log.debug("original moved to {}", moved)
        if config.originals.policy != "delete":  # where the gallery finds it
            self.journal.note_original(job.id, str(moved or source))
