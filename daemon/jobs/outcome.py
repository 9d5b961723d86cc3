"""How one attempt at a job ended, in one vocabulary for both drivers and for the messages
between hosts, and the exceptions that sort a job's failure into it."""

from __future__ import annotations

import errno
from enum import StrEnum
from pathlib import Path

from daemon.engine import device
from daemon.errors import InputError, JournalDiskError
from daemon.media.files import sha256_file
from daemon.outbox import OutsideOutbox


class Outcome(StrEnum):
    """What became of one attempt at a job."""

    DONE = "done"
    RETRY = "retry"  # a transient fault (I/O, a device out of memory): worth another attempt
    FAILED = "failed"  # an unexpected error: retrying would meet it again
    QUARANTINED = "quarantined"  # the photo itself is bad
    SUPERSEDED = "superseded"  # the photo changed: its new content is queued on its own
    OUTSIDE = "outside"  # a folder of the outbox is linked out of it: an operator's link
    RELEASED = "released"  # stopped mid-job: back in the queue, the attempt not counted
    # A host could not do it (the share not visible there, a preset that differs): back in the
    # queue for a moment, the attempt not counted, with the reason kept in the journal.
    HANDED_BACK = "handed_back"
    # The device failed so that this process cannot use it again: the job goes back to the
    # queue and the process exits, for its supervisor to restart it.
    DEVICE_LOST = "device_lost"
    # A fault of the environment (the outbox or state_dir full, read-only, failing, a share
    # gone): no verdict on the photo, no attempt counted; work waits until it is fixed.
    PAUSED = "paused"
    # The photo left the inbox before it was painted (deleted, or moved where its job does not
    # follow): nothing to do, nothing to quarantine.
    CANCELLED = "cancelled"


class Vanished(Exception):
    """The photo is no longer where its job says, nor anywhere the job followed it to."""


class Superseded(Exception):
    """The photo's bytes changed after it was queued; the new content is a job of its own."""


class StopRequested(BaseException):
    """Raised inside the engine's callback to abandon the current job; BaseException so that no
    `except Exception` can record a shutdown as a failure."""


class DevicePoisoned(Exception):
    """A CUDA error after which the process cannot use the device again."""


# What a disk or a share says when it, not the photo, is at fault.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EIO,
        errno.ESTALE,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.ENODEV,
    }
)


def is_environment_fault(exc: BaseException) -> bool:
    """A full, read-only, failing or vanished disk or share (or the journal on one)."""
    if isinstance(exc, JournalDiskError):
        return True
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: I/O trouble and a device that ran out of memory this time."""
    return isinstance(exc, OSError) or device.is_out_of_memory(exc)


def classify(exc: Exception, source_name: str) -> tuple[Outcome, str]:
    """The outcome of an attempt that raised `exc`, with the reason a user reads."""
    if isinstance(exc, Superseded):
        return Outcome.SUPERSEDED, str(exc)
    if isinstance(exc, Vanished):
        return Outcome.CANCELLED, str(exc)
    if isinstance(exc, InputError):
        return Outcome.QUARANTINED, str(exc)
    if isinstance(exc, OutsideOutbox):
        return Outcome.OUTSIDE, str(exc)
    if is_environment_fault(exc):
        where = f"{exc.filename}: " if isinstance(exc, OSError) and exc.filename else ""
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Outcome.PAUSED, f"{where}{detail}"
    reason = f"{source_name}: {type(exc).__name__}: {exc}"
    return (Outcome.RETRY if is_transient(exc) else Outcome.FAILED), reason


def holds(source: Path, content_hash: str) -> bool:
    """Whether `source` is still the regular file, with these bytes, that its job was made for."""
    return not source.is_symlink() and sha256_file(source) == content_hash


def check_photo(source: Path, content_hash: str) -> None:
    """Raise InputError (not a regular file) or Superseded (its bytes changed) for a photo that
    is there but cannot be painted as it was queued; a missing one is the driver's to judge."""
    if source.is_symlink() or not source.is_file():
        raise InputError(f"{source.name}: not a regular file (symlinks are never followed)")
    if not holds(source, content_hash):
        raise Superseded(f"{source.name} changed after it was queued")
