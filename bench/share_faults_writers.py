"""The writers of bench/share_faults.py: photos written into the inbox the way shares write them.

A daemon's readiness check is only as good as the writers it has met. A local program writes a
file in one go and closes it; an SMB client (Windows Explorer, robocopy) first sets the file's final
size and then fills it, so size and mtime can hold still while half the bytes are zeros; a copy over
a slow or flaky link stops for a while and then goes on. Each writer here does one of those through
plain os calls on a bytes path, so that names which are not valid UTF-8 can be written too.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from tests.daemon_harness import photo_bytes

# Pillow's format names; TIFF without compression is what keeps a half-written one decodable
# (a compressed strip that is cut short fails to decode, which any readiness check notices).
FORMATS = ("BMP", "TIFF", "PNG", "JPEG")
EXTENSIONS = {"BMP": ".bmp", "TIFF": ".tif", "PNG": ".png", "JPEG": ".jpg"}
PHOTO_SIZE = (64, 48)  # width, height

PathLike = str | bytes | Path


def encode(variant: int, format: str) -> bytes:
    """A small photo, distinct for each `variant`, encoded as `format` (one of FORMATS)."""
    with Image.open(io.BytesIO(photo_bytes(variant, format="PNG", size=PHOTO_SIZE))) as source:
        image = source.convert("RGB")
    options: dict[str, object] = {
        "TIFF": {"compression": None},
        "JPEG": {"quality": 90},
    }.get(format, {})
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _open_for_writing(path: PathLike) -> int:
    """A new (or emptied) file at `path`, for writing; bytes paths keep any name the OS allows."""
    return os.open(os.fsencode(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


def write_whole(path: PathLike, data: bytes) -> None:
    """Write a file in one go and close it, as a local program saving into the inbox does."""
    fd = _open_for_writing(path)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_preallocated(path: PathLike, data: bytes, pause_seconds: float) -> None:
    """Write as an SMB client does: the final size first, then half the bytes, a pause, the rest.

    The fsync makes the half visible to any reader (a poller on another host reads what the
    server has), and the pause is longer than the daemon's settle time: during it size and mtime
    stand still although the second half is still zeros.
    """
    half = len(data) // 2
    fd = _open_for_writing(path)
    try:
        os.ftruncate(fd, len(data))
        os.pwrite(fd, data[:half], 0)
        os.fsync(fd)
        time.sleep(pause_seconds)  # the writer's own pause: what the case is about
        os.pwrite(fd, data[half:], half)
    finally:
        os.close(fd)


def write_stalled(path: PathLike, data: bytes, pause_seconds: float) -> None:
    """Write half a file, stall for `pause_seconds` with the file open, then write the rest."""
    half = len(data) // 2
    fd = _open_for_writing(path)
    try:
        os.write(fd, data[:half])
        os.fsync(fd)
        time.sleep(pause_seconds)  # the stalled link: what the case is about
        os.write(fd, data[half:])
    finally:
        os.close(fd)


def run_writers(
    writers: list[Callable[[], None]], timeout_seconds: float, *, in_turn: bool = False
) -> list[str]:
    """Run the writers side by side (a share copying several files at once) or, `in_turn`, one
    after the other (as Windows Explorer copies a selection), and wait for them.

    Returns what went wrong, one line per writer that raised or was still writing after
    `timeout_seconds`; a writer's failure is a finding of the run, not a reason to stop it.
    """
    problems: list[str] = []
    lock = threading.Lock()

    def run(indexed: list[tuple[int, Callable[[], None]]]) -> None:
        for index, writer in indexed:
            try:
                writer()
            except OSError as error:
                with lock:
                    problems.append(f"writer {index}: {error}")

    indexed = list(enumerate(writers))
    groups = [indexed] if in_turn else [[pair] for pair in indexed]
    threads = [threading.Thread(target=run, args=(group,), daemon=True) for group in groups]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        with lock:
            problems.append(f"writers still writing after {timeout_seconds:g} s")
    return problems
