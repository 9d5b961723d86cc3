"""The three folders a user names (inbox, outbox, state_dir) are theirs, and often shares: they
are never created here, only checked. One missing at start is refused (`stylebox check` says the
same); one that goes away, or turns into another filesystem (a mount came or went: `st_dev`),
while the daemon runs is a fault of the environment: work pauses with a health error and goes on
by itself once the folder is back as it was. Writing on a share that is not mounted would put
results on the local disk under the mount point, where nobody looks."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.paths import missing_root as missing

Identity = tuple[int, int]  # (st_dev, st_ino) of a folder


def identity(folder: Path) -> Identity | None:
    """Which folder `folder` is now, None when it is not there (or not a folder)."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    if not os.path.isdir(folder):
        return None
    return info.st_dev, info.st_ino


def mounted(folder: Path) -> bool | None:
    """Whether `folder` is a mount point (another filesystem than its parent's), None when it
    is not there. A share's device number may change with each mount; being one does not."""
    if identity(folder) is None:
        return None
    try:
        return os.stat(folder).st_dev != os.stat(folder.resolve().parent).st_dev
    except OSError:
        return None


class RootWatch:
    """The roots as they were at start; `problem` says which one is gone, or has lost (or
    gained) the mount it had, since."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = roots
        self.known = {field: mounted(folder) for field, folder in roots.items()}

    def problem(self) -> str | None:
        """Why work must wait, in a line (the first root at fault); None while all are there."""
        for field, folder in self.roots.items():
            now = mounted(folder)
            if now is None:
                return missing(field, folder)
            if now != self.known[field]:
                change = "is no longer mounted" if self.known[field] else "has a new mount on it"
                return (
                    f"{field} {folder} {change} (it was {'' if self.known[field] else 'not '}"
                    "a mount point at the start): waiting for it to be as it was"
                )
        return None
