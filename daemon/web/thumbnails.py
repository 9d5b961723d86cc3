"""Small JPEGs of results, originals and paintings, made once into state_dir/thumbnails and
served from there: a gallery page of 24 photos must not decode 48 full-size files per visit.

A thumbnail's name carries its source's size and mtime, so a file replaced under the same name
gets a new one. The folder is a cache: deleting it costs only the time to make them again.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from daemon.errors import InputError
from daemon.media import decode, encode
from daemon.service.outbox import atomic_write

SIDE = 240  # px, the long side: sharp at the gallery's size on a phone's screen
QUALITY = 80
FOLDER = "thumbnails"


class Thumbnails:
    """The cache in `state_dir`/thumbnails."""

    def __init__(self, state_dir: Path, max_pixels: int) -> None:
        self.folder = state_dir / FOLDER
        self.max_pixels = max_pixels

    def of(self, key: str, source: Path) -> Path | None:
        """The thumbnail of `source` (a regular file, never a link), made if not yet cached;
        None when there is no such file or it is not an image."""
        try:
            info = os.lstat(source)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        version = hashlib.sha256(f"{source}:{info.st_size}:{info.st_mtime_ns}".encode())
        path = self.folder / f"{key}-{version.hexdigest()[:16]}.jpg"
        if path.is_file():
            return path
        try:
            loaded = decode.load_image(
                source, max_pixels=self.max_pixels, long_side=SIDE, follow_symlinks=False
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
