"""The photos in outbox/failed/ with their reasons, and the retry that puts one back in the inbox.

The folder, not the journal, is what is listed: intake quarantines files that never became jobs
(links, unmatched names), and a user may have removed photos from it by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.media.files import sha256_file
from daemon.outbox import ERROR_SUFFIX, open_outbox
from daemon.paths import shown
from daemon.service.journal import Journal

LISTED = 200  # the newest; a folder of thousands of failures is read by other means


@dataclass(frozen=True)
class FailedPhoto:
    """One quarantined photo, as its error file tells it."""

    name: str  # in failed/, as shown (a name that is not UTF-8 with \xNN)
    key: str  # what the retry form sends back for it (see `key_of`)
    reason: str
    preset: str | None
    attempts: int | None
    failed_at: float  # the error file's mtime
    came_from: str | None  # its path below the inbox, when known


def list_failed(config: Config, limit: int = LISTED) -> list[FailedPhoto]:
    """Quarantined photos, the latest first."""
    folder = config.quarantine_dir
    try:
        entries = [e for e in os.scandir(folder) if e.name.endswith(ERROR_SUFFIX)]
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        name = entry.name.removesuffix(ERROR_SUFFIX)
        if not (folder / name).is_file() or (folder / name).is_symlink():
            continue  # retried, or taken away by hand: only its error file is left
        try:
            document = json.loads(Path(entry.path).read_bytes())
            failed_at = entry.stat(follow_symlinks=False).st_mtime
        except (OSError, ValueError):
            document, failed_at = {}, 0.0
        if not isinstance(document, dict):
            document = {}
        found.append(_photo(name, document, failed_at, config))
    found.sort(key=lambda photo: photo.failed_at, reverse=True)
    return found[:limit]


def _photo(name: str, document: dict[str, Any], failed_at: float, config: Config) -> FailedPhoto:
    source = document.get("source")
    came_from = None
    if isinstance(source, str) and Path(source).is_relative_to(config.inbox):
        came_from = shown(Path(source).relative_to(config.inbox).as_posix())
    attempts = document.get("attempts")
    return FailedPhoto(
        name=shown(name),
        key=key_of(name),
        reason=shown(str(document.get("reason", "no reason recorded"))),
        preset=document.get("preset") if isinstance(document.get("preset"), str) else None,
        attempts=attempts if isinstance(attempts, int) else None,
        failed_at=failed_at,
        came_from=came_from,
    )


def key_of(name: str) -> str:
    """A name in failed/ as a form can carry it: itself when it is UTF-8, else "/" and its bytes
    in hex (no name holds a "/", so the two cannot meet)."""
    return name if shown(name) == name else "/" + os.fsencode(name).hex()


def name_of(key: str) -> str:
    """The name a retry form's `key_of` stands for."""
    if key.startswith("/"):
        try:
            return os.fsdecode(bytes.fromhex(key[1:]))
        except ValueError:
            raise FileNotFoundError(key) from None
    return key


def retry(config: Config, journal: Journal, key: str) -> Path:
    """Put a quarantined photo back into the inbox to be stylised again; its new path.

    The journal is told first: once the photo is back, the watcher may queue it at any moment,
    and a job still quarantined would send it straight back. FileNotFoundError when `key` is
    not a photo in failed/.
    """
    name = name_of(key)
    outbox = open_outbox(config)
    photo = outbox.quarantined(name)
    journal.reopen(sha256_file(photo))
    return outbox.restore(name, config.inbox)
