"""Small JPEGs of results, originals and paintings, made once into state_dir/thumbnails and
served from there: a gallery page of 24 photos must not decode 48 full-size files per visit.

A thumbnail's name carries its source's size and mtime, so a file replaced under the same name
gets a new one. One is made at a time, so a first look at a gallery takes one core from the
worker at most. The folder is a cache: deleting it costs only the time to make them again.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

from daemon.errors import InputError
from daemon.media import decode, encode
from daemon.service.outbox import atomic_write

SIDE = 240  # px, the long side: sharp at the gallery's size on a phone's screen
QUALITY = 80
FOLDER = "thumbnails"


class Thumbnails:
    """The cache in `state_dir`/thumbnails."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / FOLDER
        self._making = threading.Lock()

    def of(self, key: str, source: Path, folders: tuple[Path, ...], max_pixels: int) -> Path | None:
        """The thumbnail of `source`, made if not yet cached; None unless `source` is a regular
        file whose real path lies in one of `folders` and an image we can read."""
        try:
            real = source.resolve(strict=True)
            info = os.lstat(real)
        except (OSError, RuntimeError):
            return None
        inside = any(real.is_relative_to(folder.resolve()) for folder in folders)
        if not inside or not stat.S_ISREG(info.st_mode):
            return None
        version = hashlib.sha256(f"{real}:{info.st_size}:{info.st_mtime_ns}".encode())
        path = self.folder / f"{key}-{version.hexdigest()[:16]}.jpg"
        if path.is_file():
            return path
        with self._making:
            if path.is_file():  # made by the request that held the lock
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
        return path
