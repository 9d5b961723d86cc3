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
