"""What the config and the service need of a photo file without decoding it: its identity (the
sha256 of its bytes), a cheap sample of its content, and the default pixel limit. Free of Pillow,
so `stylebox check` and the config load stay light."""

import hashlib
import os
import stat
from pathlib import Path

DEFAULT_MAX_PIXELS: int = 50_000_000  # a guard against decompression bombs

SAMPLE_EDGE_BYTES = 64 * 1024  # read at the head and at the tail
SAMPLE_BLOCK_BYTES = 4096  # read at each point between
SAMPLE_POINTS = 14  # evenly spaced between head and tail


def check_pixel_limit(name: str, size: tuple[int, int], max_pixels: int) -> None:
    """InputError when a photo's declared (width, height) is over the configured limit: asked
    of every format before its pixels are decoded, and said in the configured terms."""
    from daemon.errors import InputError

    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (max_input_pixels)"
        )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, streamed: a photo's or a weights file's identity."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def sampled_digest(path: Path) -> bytes | None:
    """A digest of a file's head, tail and blocks between (with its size); None when it cannot
    be read as a regular file. Symlinks are not followed and a FIFO is never waited on.

    The watcher compares two of these a settle period apart: on a share, size and mtime may lag
    behind the bytes, and a preallocated file's size never moves while its zeros are filled in.
    Reading a few blocks instead of the whole file keeps a look cheap over the network.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            return None
        size = status.st_size
        digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
        points = [0, max(0, size - SAMPLE_EDGE_BYTES)]
        points[1:1] = [size * n // (SAMPLE_POINTS + 1) for n in range(1, SAMPLE_POINTS + 1)]
        for index, offset in enumerate(points):
            length = SAMPLE_EDGE_BYTES if index in (0, len(points) - 1) else SAMPLE_BLOCK_BYTES
            digest.update(os.pread(descriptor, length, offset))
        return digest.digest()
    except OSError:
        return None
    finally:
        os.close(descriptor)
