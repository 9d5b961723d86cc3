"""The one containment check: whether a path lies inside a folder, both by its name (no `..`
walks out) and by where it really is (no link leads out). Every place that reads or writes on a
path it did not choose itself (the outbox, the page's files, a worker host's mapped paths, a
quarantined photo's way back) asks here."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath


def really_within(real: Path, folders: Iterable[Path]) -> bool:
    """Whether `real`, a path already resolved (or read from an open descriptor), lies inside
    one of `folders`, each resolved here (a share mounted through a link is still itself)."""
    return any(real.is_relative_to(folder.resolve()) for folder in folders)


def named_within(path: PurePath | str, folder: PurePath | str) -> PurePath | None:
    """`path` made normal, if its name alone puts it inside `folder` (no `..` walks out);
    None if not. Says nothing of links: pair it with `really_within` before using the path."""
    normal = PurePath(os.path.normpath(path))
    if ".." in normal.parts or not normal.is_relative_to(os.path.normpath(folder)):
        return None
    return normal


def shown(text: str) -> str:
    """A name as a person reads it: the bytes of a name that is not UTF-8 (legacy SMB, FTP and
    zip names), which Python holds as lone surrogates, as `\\xNN`; anything else as it is. For
    logs, the page, events and error messages, which must be valid UTF-8 to be written at all."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an undecodable byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def stored(path: str) -> str | bytes:
    """A path as the journal keeps it: text when it is UTF-8, else its bytes (a BLOB, as SQLite
    stores what it is given), so that every name a filesystem allows is kept exactly."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def restored(value: str | bytes) -> str:
    """A path the journal kept (`stored`), as Python names it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def missing_root(field: str, folder: Path) -> str:
    """The line that says one of the daemon's roots (inbox, outbox, state_dir) is not there, as
    `check`, the start and a running daemon's health say it."""
    return (
        f"{field} {folder} does not exist: is the share mounted? (stylebox makes folders inside "
        f"it, never the {field} itself)"
    )
