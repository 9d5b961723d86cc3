"""Exit codes and the one small exception tree; each class knows its exit code.

A deterministic failure (the input itself is bad) is an `InputError`: the daemon quarantines such a
photo at once. A `TransientError` is worth retrying. Everything else is a bug or an environment
fault.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses, mapped from exceptions in one place (cli.py)."""

    OK = 0
    FAILURE = 1
    USAGE = 2


class StyleboxError(Exception):
    """Base of every error stylebox raises on purpose; the message is shown to the user as is."""

    exit_code = ExitCode.FAILURE


class UsageError(StyleboxError):
    """The command line asks for something impossible."""

    exit_code = ExitCode.USAGE


class ConfigError(StyleboxError):
    """A config file or preset is invalid; the message names the file, line and field."""

    exit_code = ExitCode.USAGE


class InputError(StyleboxError):
    """An input image cannot be used (cannot decode, too many pixels, ...); retrying cannot help."""

    exit_code = ExitCode.USAGE


class WeightsError(StyleboxError):
    """The VGG-19 weights cannot be loaded from the chosen source; the message names the others."""


class TransientError(StyleboxError):
    """A failure that may pass (I/O, device out of memory): the daemon retries with backoff."""
