"""What the config and the service need of a photo file without decoding it: its identity (the
sha256 of its bytes) and the default pixel limit. Free of Pillow, so `stylebox check` and the
config load stay light."""

import hashlib
from pathlib import Path

DEFAULT_MAX_PIXELS: int = 50_000_000  # a guard against decompression bombs


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, streamed: a photo's or a weights file's identity."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
