"""Small JPEGs of results, originals and paintings, made once into state_dir/thumbnails and
served from there: a gallery page of 24 photos must not decode 48 full-size files per visit.

A thumbnail's name carries its source's size and mtime, so a file replaced under the same name
gets a new one. One is made at a time, so a first look at a gallery takes one core from the
worker at most. The folder is a cache: deleting it costs only the time to make them again, and
it keeps the MAX_FILES used last (a hit marks one used), so it never grows with the outbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

from daemon.errors import InputError
from daemon.media import decode, encode
from daemon.outbox import atomic_write, real_file_within

SIDE = 240  # px, the long side: sharp at the gallery's size on a phone's screen
QUALITY = 80
FOLDER = "thumbnails"
MAX_FILES = 5000  # about 100 gallery pages of before/after pairs


class Thumbnails:
    """The cache in `state_dir`/thumbnails."""

    def __init__(self, state_dir: Path, *, max_files: int = MAX_FILES) -> None:
        self.folder = state_dir / FOLDER
        self.max_files = max_files
        self._making = threading.Lock()
        self._made = 0

    def of(self, key: str, source: Path, folders: tuple[Path, ...], max_pixels: int) -> Path | None:
        """The thumbnail of `source`, made if not yet cached; None unless `source` is a regular
        file whose real path lies in one of `folders` and an image we can read."""
        real = real_file_within(source, folders)
        if real is None:
            return None
        try:
            info = os.stat(real)
        except OSError:  # gone since
            return None
        version = hashlib.sha256(f"{real}:{info.st_size}:{info.st_mtime_ns}".encode())
        path = self.folder / f"{key}-{version.hexdigest()[:16]}.jpg"
        if _used(path):
            return path
        with self._making:
            if _used(path):  # made by the request that held the lock
                return path
            try:
                loaded = decode.load_image(
                    real, max_pixels=max_pixels, long_side=SIDE, follow_symlinks=False
                )
            except (OSError, InputError):  # gone meanwhile, or not an image we can read
                return None
            self.folder.mkdir(exist_ok=True)
            atomic_write(
                path,
                lambda file: encode.save_image(loaded.pixels, file, format="jpeg", quality=QUALITY),
                replace=True,
            )
            if self._made % max(1, self.max_files // 10) == 0:  # a look now and then: cheap
                self._trim()
            self._made += 1
        return path

    def _trim(self) -> None:
        """Remove the thumbnails used least recently beyond `max_files`."""
        entries = []
        for entry in os.scandir(self.folder):
            with contextlib.suppress(OSError):
                entries.append((entry.stat().st_mtime_ns, entry.path))
        entries.sort(reverse=True)
        for _, stale in entries[self.max_files :]:
            with contextlib.suppress(OSError):
                os.unlink(stale)


def _used(path: Path) -> bool:
    """Whether `path` is cached; if so it is marked used now (its mtime), for the trim."""
    try:
        os.utime(path)
    except OSError:
        return False
    return True
