"""Files the page serves, opened so that what was checked is what is sent.

A file is opened without following a link at its end, and only then is its real path (that of
the open file, from /proc) checked to lie inside the allowed folder: a link swapped in after a
check cannot send anything else. Its type comes from its content, never its name, and only the
image types a browser shows are sent inline; a photo named `x.html` or `x.js` that is also an
image is sent as an image, which nosniff keeps from running, and anything else as a download.
Every file response also carries `Content-Security-Policy: sandbox; default-src 'none'`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from starlette.responses import StreamingResponse

from daemon.media.decode import image_type
from daemon.paths import really_within

INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
CHUNK_BYTES = 256 * 1024


def open_inside(path: Path, folders: tuple[Path, ...]) -> BinaryIO | None:
    """`path` opened for reading if it is a regular file whose real path lies in one of
    `folders`; None otherwise (gone, a link at its end, outside, not a file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    file = os.fdopen(fd, "rb")
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if stat.S_ISREG(os.fstat(fd).st_mode) and really_within(real, folders):
            return file
    except OSError:
        pass
    file.close()
    return None


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def file_response(
    file: BinaryIO, *, name: str, cache: str, download: bool = False
) -> StreamingResponse:
    """Send an opened file (closed once sent): inline if it is an image browsers show, unless
    `download` asks for it to be saved."""
    media_type = image_type(file)
    headers = {
        "cache-control": cache,
        "content-length": str(os.fstat(file.fileno()).st_size),
        "content-security-policy": "sandbox; default-src 'none'",
    }
    if media_type not in INLINE_TYPES:
        media_type = "application/octet-stream"
    if media_type not in INLINE_TYPES or download:
        safe = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in name)
        headers["content-disposition"] = f'attachment; filename="{safe}"'
    return StreamingResponse(_chunks(file), media_type=media_type, headers=headers)
