"""Uploads: a photo (or a painting) sent over HTTP, read as it arrives into a private temp file
in `state_dir/uploads/`, bounded while it streams, checked as an image there, and only then
written where a dropped file would be.

Nothing from the client becomes a path but a safe base name (`outbox.safe_name`: no folder, no
`..`, no leading dot, no control character); the folder is the inbox or a preset's folder in
it, checked by `paths.py`. A photo goes into the inbox as the outbox writes results: a dotfile
temp that the watcher ignores, fsynced, then renamed without overwriting, so that a restart
mid-upload leaves at most a temp, which the page removes when it starts again. It is then
handed to the intake at once (it is whole: no settling) and the journal decides, as for any
dropped photo, whether it is a new job or one already known.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from daemon.config import Config
from daemon.errors import InputError
from daemon.media import decode
from daemon.outbox import (
    OutsideOutbox,
    atomic_write,
    folder_mode_for,
    make_folder,
    remove_stale_temps,
    safe_name,
)
from daemon.paths import named_within, really_within
from daemon.service.intake import Intake
from daemon.service.journal import Job, JobState, Journal
from daemon.service.watcher import is_ignored_name

UPLOADS_DIR = "uploads"  # in state_dir: what arrives, before it is checked
FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and text fields around the file
FIELD_LIMIT_BYTES = 1024  # a text field: a preset's name, a number
MAX_PARTS = 32
MAX_NAME_TRIES = 100  # "x.jpg", "x-2.jpg", ... before a name with the content hash
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/tiff": ".tif",
    "image/heic": ".heic",
    "image/heif": ".heif",
    "image/avif": ".avif",
}


@dataclass
class ReceivedFile:
    """A file part, whole in its temp file: the name the client gave, its size and sha256."""

    path: Path
    filename: str
    size: int
    sha256: str


@dataclass
class Received:
    """A multipart form read to its end: text fields and files by field name."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[ReceivedFile]] = field(default_factory=dict)

    def one_file(self, name: str) -> ReceivedFile | None:
        """The file sent in field `name`; 400 if several were."""
        sent = self.files.get(name, [])
        if len(sent) > 1:
            raise HTTPException(400, f"one file per request in the field {name!r}")
        return sent[0] if sent else None

    def discard(self) -> None:
        """Remove the temp files."""
        for sent in self.files.values():
            for received in sent:
                received.path.unlink(missing_ok=True)


class _Parts:
    """python-multipart's callbacks: each file part goes straight into a temp file in `folder`
    (never held in memory), at most `limit_bytes` of it; text fields are short."""

    def __init__(self, folder: Path, limit_bytes: int) -> None:
        self.folder = folder
        self.limit_bytes = limit_bytes
        self.received = Received()
        self.parts = 0
        self._header: tuple[bytearray, bytearray] = (bytearray(), bytearray())
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._text: bytearray | None = None
        self._file: BinaryIO | None = None
        self._file_info: tuple[Path, str] | None = None
        self._size = 0
        self._hash = hashlib.sha256()

    def callbacks(self) -> dict:
        """What MultipartParser calls."""
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._header[0].extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header[1].extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise HTTPException(400, f"more than {MAX_PARTS} parts in one form")
        self._headers = {}

    def _header_end(self) -> None:
        name, value = self._header
        self._headers[bytes(name).lower()] = bytes(value)
        self._header = (bytearray(), bytearray())

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            self._text = bytearray()
            return
        fd, temp = tempfile.mkstemp(prefix=".upload-", dir=self.folder)
        self._file = os.fdopen(fd, "wb")
        self._file_info = (Path(temp), filename.decode("utf-8", "replace"))
        self._size, self._hash = 0, hashlib.sha256()

    def _data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self._size += len(chunk)
            if self._size > self.limit_bytes:
                raise HTTPException(413, f"larger than web.max_upload_mb ({self._limit_shown()})")
            self._file.write(chunk)
            self._hash.update(chunk)
        elif self._text is not None:
            self._text.extend(chunk)
            if len(self._text) > FIELD_LIMIT_BYTES:
                raise HTTPException(413, f"field {self._name!r} is too long")

    def _end(self) -> None:
        if self._file is not None and self._file_info is not None:
            self._file.close()
            path, filename = self._file_info
            sent = ReceivedFile(path, filename, self._size, self._hash.hexdigest())
            self.received.files.setdefault(self._name, []).append(sent)
            self._file, self._file_info = None, None
        elif self._text is not None:
            self.received.fields.setdefault(self._name, self._text.decode("utf-8", "replace"))
            self._text = None

    def _limit_shown(self) -> str:
        return f"{self.limit_bytes // (1024 * 1024)} MB"

    def abandon(self) -> None:
        """A form that did not arrive whole: its temp files go."""
        if self._file is not None and self._file_info is not None:
            self._file.close()
            self._file_info[0].unlink(missing_ok=True)
        self.received.discard()


async def receive(
    headers: dict[str, str], stream: AsyncIterator[bytes], state_dir: Path, limit_bytes: int
) -> Received:
    """Read a multipart/form-data body as it arrives; 413 as soon as it is larger than
    `limit_bytes` (a Content-Length that says so: before a byte is read), 400 or 415 for a body
    that is not such a form. The caller discards the temp files (`Received.discard`)."""
    kind, options = parse_options_header(headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise HTTPException(415, "send multipart/form-data (curl -F)")
    body_limit = limit_bytes + FORM_OVERHEAD_BYTES
    with contextlib.suppress(ValueError):
        if int(headers.get("content-length", "0")) > body_limit:
            raise HTTPException(413, f"larger than web.max_upload_mb ({limit_bytes >> 20} MB)")
    folder = state_dir / UPLOADS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    parts = _Parts(folder, limit_bytes)
    parser = MultipartParser(boundary, parts.callbacks())
    read = 0
    try:
        async for chunk in stream:
            read += len(chunk)
            if read > body_limit:
                raise HTTPException(413, f"larger than web.max_upload_mb ({limit_bytes >> 20} MB)")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        parts.abandon()
        raise HTTPException(400, f"not a whole multipart form: {exc}") from None
    except BaseException:  # 413, a client gone mid-upload, a shutdown
        parts.abandon()
        raise
    return parts.received


def check_image(received: ReceivedFile, max_pixels: int) -> str | None:
    """Refuse a file that is not a whole image this install reads, with the reason: 415 when
    its first bytes name no image format it reads, 422 when they do and the rest is broken.
    Returns its MIME type (None for a camera RAW, which Pillow does not name). Read in
    state_dir, never in the inbox."""
    path = received.path
    with path.open("rb") as file:
        media_type = decode.image_type(file)
    if received.size > 0 and decode.is_whole(path, max_pixels=max_pixels):
        return media_type
    try:
        decode.load_image(path, max_pixels=max_pixels, long_side=64, follow_symlinks=False)
        reason = "cut short: it ends before its format does"
    except InputError as exc:
        reason = str(exc).partition(": ")[2] or str(exc)  # its temp name means nothing to them
    shown = safe_name(received.filename)
    raise HTTPException(415 if media_type is None else 422, f"{shown}: {reason}")


def upload_name(received: ReceivedFile, media_type: str | None) -> str:
    """The name the photo gets in the inbox: the client's base name made safe, or one made of
    its hash when that name is one the watcher passes over (a `.tmp`, `thumbs.db`, ...)."""
    name = safe_name(received.filename)
    if is_ignored_name(name):
        name = f"upload-{received.sha256[:12]}{_EXTENSIONS.get(media_type or '', '')}"
    return name


@dataclass(frozen=True)
class Delivered:
    """An upload's job, and whether this upload made it (False: the same bytes were sent
    before for the same preset, and that job is the answer)."""

    job: Job
    created: bool


def deliver(
    config: Config,
    journal: Journal,
    received: ReceivedFile,
    name: str,
    preset: str | None,
) -> Delivered:
    """Put a checked upload where a dropped photo goes (`<inbox>/<preset>/` with a preset, the
    inbox itself without) and hand it to the intake. Raises HTTPException with why it cannot."""
    folder = config.inbox if preset is None else config.inbox / preset
    relative = PurePosixPath(name) if preset is None else PurePosixPath(preset, name)
    routed = config.routing.preset_for(relative, config.presets)
    if routed is None:
        raise HTTPException(422, "no preset: the routing takes no photo without one; name one")
    if preset is not None and routed != preset:  # a preset folder always routes to its preset
        raise HTTPException(409, f"{relative} would be painted with {routed}, not {preset}")
    known = journal.find(received.sha256, config.presets[routed].fingerprint)
    if known is not None and known.state is not JobState.FAILED:
        return Delivered(known, created=False)  # exactly once: nothing is written
    _ensure_folder(config, folder)
    path = _write_no_overwrite(folder, name, received, config.output.file_mode)
    try:
        job = Intake(config, journal, on_queued=lambda: None).take(path)  # the worker polls
    except OutsideOutbox as exc:
        raise HTTPException(409, f"written to the inbox, not queued: {exc}") from None
    if job is None:
        job = journal.find(received.sha256, config.presets[routed].fingerprint)
    if job is None:  # e.g. taken for a video by the intake: the checks above make it rare
        raise HTTPException(409, f"{relative}: written to the inbox, but the intake left it")
    return Delivered(job, created=True)


def _ensure_folder(config: Config, folder: Path) -> None:
    """The inbox, or a preset's folder made in it: a real folder (no link) inside the inbox."""
    if named_within(folder, config.inbox) is None:
        raise HTTPException(422, "no such preset")
    if folder != config.inbox:
        make_folder(folder, folder_mode_for(config.output.file_mode))
    try:
        status = os.lstat(folder)
    except OSError as exc:
        raise HTTPException(503, f"the inbox cannot take it now: {exc.strerror}") from None
    if not stat.S_ISDIR(status.st_mode) or not really_within(folder.resolve(), [config.inbox]):
        raise HTTPException(409, f"{folder.name}/ in the inbox is not a folder inside it")


def _write_no_overwrite(folder: Path, name: str, received: ReceivedFile, mode: int) -> Path:
    """Copy the checked temp into `folder` as a dotfile temp, fsync it, rename it to `name`
    (or `name-2`, ...), never over a file already there."""
    stem, dot, extension = name.rpartition(".")
    if not stem:
        stem, dot, extension = name, "", ""
    candidates = [name] + [f"{stem}-{n}{dot}{extension}" for n in range(2, MAX_NAME_TRIES)]
    candidates.append(f"{stem}-{received.sha256[:16]}{dot}{extension}")

    def copy(file: BinaryIO) -> None:
        with received.path.open("rb") as source:
            shutil.copyfileobj(source, file, 1024 * 1024)

    for candidate in candidates:
        try:
            return atomic_write(folder / candidate, copy, mode=mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise HTTPException(503, f"the inbox cannot take it now: {exc.strerror}") from None
    raise HTTPException(409, f"{name}: too many files of that name in the inbox")


def remove_left_over(config: Config) -> int:
    """At the page's start: what an upload cut short by a stop or a crash left (its temp in
    state_dir/uploads, a half-copied temp in the inbox, never a photo); how many."""
    removed = 0
    folder = config.state_dir / UPLOADS_DIR
    if folder.is_dir():
        for left in folder.iterdir():
            with contextlib.suppress(OSError):
                left.unlink()
                removed += 1
    with contextlib.suppress(OSError):  # the inbox gone (a share away): the next start tries
        removed += remove_stale_temps(config.inbox)
    return removed
