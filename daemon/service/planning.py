"""What the journal's owner decides before a job is painted, wherever it is painted: the job
still has its preset and its photo, and the name its result will have in the outbox."""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config
from daemon.errors import InputError
from daemon.jobs.outcome import Vanished, check_photo
from daemon.jobs.work import Work, Writing
from daemon.outbox import Outbox
from daemon.service.journal import Job, Journal

# How far down the queue to look for a batch's mates, per place in the batch: a queue that mixes
# portrait and landscape photos holds enough of one size within it, and each look reads a header.
CANDIDATES_PER_PLACE = 4


def checked_and_planned(job: Job, config: Config, outbox: Outbox, journal: Journal) -> Path:
    """The claimed job's output path, planned now if it is not yet; raises InputError (a photo
    to quarantine) or Superseded when the photo cannot be painted as it was queued."""
    source = Path(job.source_path)
    preset = config.presets.get(job.preset)
    if preset is None:
        raise InputError(f"{source.name}: preset {job.preset!r} is no longer configured")
    if not source.exists() and not source.is_symlink():
        raise Vanished(f"{source.name} left the inbox before it was painted")
    check_photo(source, job.content_hash)
    if job.planned_output is not None:
        return Path(job.planned_output)
    # Recorded before writing: an attempt after a crash overwrites this same name, and no
    # other unfinished job (a batch-mate called IMG_1.jpg too) is given it.
    taken = journal.planned_outputs()
    planned = str(outbox.plan(preset.name, source.name, job.content_hash, config.output.ext, taken))
    journal.set_planned_output(job.id, planned)
    return Path(planned)


def work_of(job: Job, planned: Path) -> Work:
    """The journal's job as the executor paints it."""
    return Work(
        job_id=job.id,
        source=Path(job.source_path),
        planned=planned,
        content_hash=job.content_hash,
        attempt=job.attempts,
        enqueued_at=job.enqueued_at,
    )


def writing_of(config: Config) -> Writing:
    """How this config writes results."""
    output = config.output
    return Writing(
        output.format, output.quality, output.bit_depth, output.file_mode, output.strip_location
    )
