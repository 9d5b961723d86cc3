"""Output names, atomic publication, the originals and the quarantine.

A reader on a NAS share may open any file the moment its name appears, so nothing is ever written
in place: content goes to a dotfile temp in the same folder, is fsynced, and only then gets its real
name; the folder is fsynced after, so a power cut cannot leave a name pointing at nothing.
"Never overwrite" uses link(2), which fails if the name is taken, where rename(2) would silently
replace it; some SMB/FAT mounts refuse hard links, and there we fall back to a check and a rename
(a race only with another writer, and the outbox has one: the worker thread).

Moves follow the same rule: the new name is durable before the old one goes, so a crash leaves at
worst two names for one photo, never none. Nothing here logs; callers decide what is worth a line.
"""

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from daemon.config.outputs import FAILED_DIR, check_name_pattern
from daemon.errors import StyleboxError
from daemon.paths import named_within, really_within

if TYPE_CHECKING:
    from daemon.config import Config

_DISPOSE_LOCK = threading.Lock()
TEMP_PREFIX = ".stylebox-tmp-"  # temp files are dotfiles so the watcher and users ignore them
ERROR_SUFFIX = ".error.json"

MAX_NAME_BYTES = 200  # leaves room under the usual 255-byte limit for "-N" and ".error.json"
_MAX_EXTENSION_BYTES = 16  # a longer "extension" is just part of a dotted name
_FALLBACK_NAME = "photo"
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,16}")
_CONTENT_HASH = re.compile(r"[0-9a-fA-F]{8,}")

# Some filesystems (CIFS, some FUSE) refuse fsync on a folder; that is not a failed write.
_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})
# link(2) errors that mean "this filesystem has no hard links" rather than "this link is wrong".
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV})


def fsync_dir(path: Path) -> None:
    """Make the folder's entries durable; best effort where the filesystem cannot fsync a folder."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        if error.errno not in _FSYNC_UNSUPPORTED:
            raise


def _rename_no_overwrite(source: Path, target: Path) -> None:
    """Give `source` the name `target` unless taken (FileExistsError); target's folder is fsynced.

    Raises OSError(EXDEV) when the two lie on different filesystems.
    """
    try:
        os.link(source, target, follow_symlinks=False)  # a symlink is linked itself, not followed
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from error
        os.rename(source, target)
        fsync_dir(target.parent)
    else:
        # Durable new name before the old one goes: a crash in between leaves two names, not none.
        fsync_dir(target.parent)
        os.unlink(source)


def atomic_write(
    path: Path,
    write: Callable[[BinaryIO], None],
    *,
    replace: bool = False,
    mode: int = 0o644,
) -> Path:
    """Publish what `write` produces at `path` all at once, or not at all.

    With replace=False an existing `path` is never touched (FileExistsError). The mode is set with
    fchmod, so the umask does not apply and the temp is private (0o600) until then.
    """
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temp, path)
            fsync_dir(path.parent)
        else:
            _rename_no_overwrite(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def _open_no_follow(path: str, flags: int) -> int:
    """open() opener that refuses symlinks, so a link swapped in after our check is never read."""
    return os.open(path, flags | os.O_NOFOLLOW)


def _copy_no_overwrite(source: Path, target: Path) -> None:
    """First half of a move across filesystems: a durable copy at `target`, never overwriting."""
    if source.is_symlink():
        # The link itself travels; its target may lie anywhere and is never opened.
        temp = target.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        os.symlink(os.readlink(source), temp)
        try:
            _rename_no_overwrite(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return
    with open(source, "rb", opener=_open_no_follow) as original:
        status = os.fstat(original.fileno())

        def copy(file: BinaryIO) -> None:
            shutil.copyfileobj(original, file)
            file.flush()
            # After the last write, which would reset it: the photo keeps its own time.
            os.utime(file.fileno(), ns=(status.st_atime_ns, status.st_mtime_ns))

        atomic_write(target, copy, mode=stat.S_IMODE(status.st_mode))


def move_no_overwrite(source: Path, target: Path) -> bool:
    """Move `source` (a symlink as itself) to `target`, never overwriting, across filesystems too.

    Returns False when `source` is already gone: a retried move after a crash must not fail.
    Both folders are fsynced; across filesystems the source goes only once the copy is durable.
    """
    try:
        try:
            _rename_no_overwrite(source, target)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            _copy_no_overwrite(source, target)
            source.unlink(missing_ok=True)
    except FileNotFoundError:
        if os.path.lexists(source):
            raise
        return False
    fsync_dir(source.parent)
    return True


def real_file_within(path: Path, folders: Collection[Path]) -> Path | None:
    """`path` resolved, if it is a regular file whose real path lies in one of `folders`; None
    if not (gone, a link loop, outside, not a file). For reading: what the daemon writes is
    checked by `Outbox._inside`."""
    try:
        real = path.resolve(strict=True)
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except (OSError, RuntimeError):
        return None
    return real if really_within(real, folders) else None


class OutsideOutbox(StyleboxError):
    """A folder of the outbox resolves outside it: a symlink someone with write access put there.
    Neither the photo's fault nor a passing one: the photo stays where it is, and no retry comes
    until the operator has replaced the link and the photo is offered again."""


def folder_mode_for(file_mode: int) -> int:
    """The mode for folders of files with `file_mode`: the same bits, searchable where readable."""
    return file_mode | (file_mode & 0o444) >> 2


def make_folder(path: Path, mode: int) -> None:
    """Create `path` and its missing parents with exactly `mode`, whatever the process umask.

    Folders that exist already are left as they are: the operator's (or the share's) choice.
    """
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # made meanwhile, by whoever: not ours to chmod
            continue
        os.chmod(folder, mode)  # mkdir's mode is cut by the umask; chmod's is not


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder, hide, or break a byte-limited filesystem."""
    base = name.replace("\\", "/").rstrip("/").rpartition("/")[2]
    # Cc: NUL and other controls; Cs: lone surrogates that undecodable bytes become in os.listdir.
    base = "".join("_" if unicodedata.category(c) in ("Cc", "Cs") else c for c in base)
    base = base.lstrip(".")  # no hidden files, no "." or ".."
    if len(base.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, extension = base.rpartition(".")
        suffix = dot + extension
        if not stem or len(suffix.encode("utf-8")) > _MAX_EXTENSION_BYTES:
            stem, suffix = base, ""
        budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
        # A cut inside a multi-byte character leaves a partial sequence that "ignore" drops.
        base = stem.encode("utf-8")[:budget].decode("utf-8", "ignore") + suffix
    return base or _FALLBACK_NAME


def remove_stale_temps(folder: Path, older_than_seconds: float = 0.0) -> int:
    """Delete the temps a crash left under `folder` (never published); returns how many. With
    `older_than_seconds`, only those untouched that long (worker hosts may be writing others)."""
    removed = 0
    cutoff = time.time() - older_than_seconds
    for dirpath, dirnames, filenames in os.walk(folder):
        # A temp symlink (from moving a symlink across filesystems) to a folder shows in dirnames.
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            if not name.startswith(TEMP_PREFIX) or (path.is_dir() and not path.is_symlink()):
                continue
            with contextlib.suppress(FileNotFoundError):
                if older_than_seconds and path.lstat().st_mtime > cutoff:
                    continue
                path.unlink()
                removed += 1
    return removed


def _free_stem(
    folder: Path, stem: str, suffixes: tuple[str, ...], reserved: Collection[str] = ()
) -> str:
    """First of stem, stem-1, stem-2, ... such that no stem+suffix exists in `folder` and no
    `reserved` path (an image planned for an unfinished job) has that stem.

    Reserved names are compared casefolded and by stem: on a case-insensitive share IMG_1.jpg is
    img_1.jpg, and an image planned as .png before a reload still owns its .json sidecar.
    """
    taken = {_folded(Path(path).with_suffix("")) for path in reserved}
    counter = 0
    while True:
        candidate = f"{stem}-{counter}" if counter else stem
        exists = any(os.path.lexists(folder / (candidate + suffix)) for suffix in suffixes)
        if not exists and _folded(folder / candidate) not in taken:
            return candidate
        counter += 1


def _folded(path: Path) -> str:
    return unicodedata.normalize("NFC", str(path)).casefold()


def _same_file_among(folder: Path, name: str, source: Path) -> Path | None:
    """The taken name (name, name-1, ...) in `folder` that is a hard link to `source`, if any.

    The source itself is not one: were it already in `folder`, unlinking it as "the second name"
    would delete the only copy."""
    path = Path(name)
    counter = 0
    while True:
        stem = f"{path.stem}-{counter}" if counter else path.stem
        candidate = folder / (stem + path.suffix)
        if not os.path.lexists(candidate):
            return None
        try:
            if candidate.absolute() != source.absolute() and os.path.samefile(candidate, source):
                return candidate
        except OSError:  # the source vanished meanwhile: nothing to finish
            return None
        counter += 1


def _free_target(folder: Path, name: str, companions: tuple[str, ...] = ()) -> Path:
    """`folder`/name, or name-1.ext, ...: free, and so is name + each companion suffix."""
    path = Path(name)
    stem, extension = path.stem, path.suffix
    suffixes = (extension, *(extension + companion for companion in companions))
    return folder / (_free_stem(folder, stem, suffixes) + extension)


def _json_bytes(document: dict[str, Any]) -> bytes:
    """Stable, human-readable JSON; NaN refused, since other readers would choke on it. A name
    that is not UTF-8 (lone surrogates in Python) is written \\u-escaped, which reads back to
    the same name (a quarantined photo's way back needs its folder exactly)."""
    options: dict[str, Any] = {"indent": 2, "sort_keys": True, "allow_nan": False}
    text = json.dumps(document, ensure_ascii=False, **options)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(document, ensure_ascii=True, **options) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Delivery:
    """Where one result landed: the image (or quarantined photo) and its JSON companion."""

    image: Path
    sidecar: Path


def published(image: Path, content_hash: str) -> dict[str, Any] | None:
    """The sidecar of a result made from these bytes at `image`, if both are there: a job whose
    result is published is done, whoever published it (a worker host redelivered the job)."""
    try:
        sidecar = json.loads(image.with_suffix(".json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(sidecar, dict) or sidecar.get("input_sha256") != content_hash:
        return None
    return sidecar if image.is_file() else None


class Outbox:
    """The output tree: outbox/<preset>/<name>.<ext> + <name>.json, and outbox/failed/."""

    def __init__(self, root: Path, *, name_pattern: str = "{stem}", file_mode: int = 0o644) -> None:
        """Check the pattern and mode now, so a bad config fails at start-up, not on a photo."""
        check_name_pattern(name_pattern)
        if file_mode & ~0o777:
            raise ValueError(f"file_mode {file_mode:#o}: only permission bits (0o777) are allowed")
        self.root = root
        self.name_pattern = name_pattern
        self.file_mode = file_mode
        self.folder_mode = folder_mode_for(file_mode)

    def _inside(self, path: Path) -> Path:
        """`path` resolved; OutsideOutbox when it (through a symlinked folder) lies outside root.
        The one containment check: every folder the outbox writes in passes through it."""
        resolved = path.resolve()
        if not really_within(resolved, [self.root]):
            raise OutsideOutbox(
                f"{path} resolves to {resolved}, outside the outbox {self.root}, so nothing is "
                "written there; make it a real folder, then touch the photos held back (or "
                "restart stylebox) to have them done"
            )
        return resolved

    def _folder(self, path: Path) -> Path:
        """Make `path`, a folder of ours inside the outbox, and check it with `_inside`."""
        make_folder(path, self.folder_mode)
        self._inside(path)
        return path

    def plan(
        self,
        preset: str,
        source_name: str,
        content_hash: str,
        ext: str,
        reserved: Collection[str] = (),
    ) -> Path:
        """Choose the output path: neither it nor its sidecar exists yet, and it is none of the
        `reserved` paths (those planned for unfinished jobs); creates the preset folder.

        The choice is recorded in the journal before `deliver`, which is what makes retries exact.
        """
        if preset != safe_name(preset) or preset.casefold() == FAILED_DIR:
            # casefold: on a case-insensitive share "Failed" is the quarantine folder.
            raise ValueError(f"preset {preset!r} cannot be a folder name in the outbox")
        extension = ext.removeprefix(".")
        if not _EXTENSION.fullmatch(extension) or extension.casefold() == "json":
            raise ValueError(f"extension {ext!r}: expected 1-16 letters or digits, not json")
        if not _CONTENT_HASH.fullmatch(content_hash):
            raise ValueError(f"content hash {content_hash!r}: expected at least 8 hex digits")
        make_folder(self.root / preset, self.folder_mode)
        folder = self._inside(self.root / preset)
        stem = Path(safe_name(source_name)).stem
        name = safe_name(
            self.name_pattern.format(stem=stem, preset=preset, hash8=content_hash[:8].lower())
        )
        free = _free_stem(folder, name, (f".{extension}", ".json"), reserved)
        return folder / f"{free}.{extension}"

    def deliver(
        self, planned: Path, write_image: Callable[[BinaryIO], None], sidecar: dict[str, Any]
    ) -> Delivery:
        """Publish the image, then its sidecar; files already at `planned` are a crashed try's.

        The sidecar is serialised first, so a bad one fails before anything is published.
        """
        folder = self._inside(planned.parent)
        image = folder / planned.name
        sidecar_path = image.with_suffix(".json")
        document = _json_bytes(sidecar)
        atomic_write(image, write_image, replace=True, mode=self.file_mode)
        try:
            atomic_write(
                sidecar_path, lambda file: file.write(document), replace=True, mode=self.file_mode
            )
        except BaseException:
            # An image without its sidecar is not a result (a full disk can do this): take it back
            # so that readers see both or neither; the retry publishes both.
            image.unlink(missing_ok=True)
            fsync_dir(folder)
            raise
        return Delivery(image=image, sidecar=sidecar_path)

    def quarantine(self, source: Path, reason: dict[str, Any]) -> Delivery:
        """Move the photo (a symlink as itself) into failed/, then write <name>.error.json.

        A source already gone still gets its error file, with "source_missing": true; `image`
        is then where the photo would have gone. "source" and "source_missing" override `reason`.
        """
        _json_bytes(reason)  # a reason that cannot be written fails before the photo moves
        failed = self._folder(self.root / FAILED_DIR)
        image = _free_target(failed, safe_name(source.name), (ERROR_SUFFIX,))
        moved = move_no_overwrite(source, image)
        error_path = image.with_name(image.name + ERROR_SUFFIX)
        document = _json_bytes({**reason, "source": str(source), "source_missing": not moved})
        atomic_write(error_path, lambda file: file.write(document), mode=self.file_mode)
        return Delivery(image=image, sidecar=error_path)

    def quarantined(self, name: str) -> Path:
        """The photo called `name` in failed/, a regular file; FileNotFoundError for anything
        else (a path, a dotfile, an error file, a link): a name from a web form reaches no other
        file."""
        failed = self.root / FAILED_DIR
        if name != Path(name).name or name.startswith(".") or name.endswith(ERROR_SUFFIX):
            raise FileNotFoundError(errno.ENOENT, "not a quarantined photo", name)
        path = self._inside(failed) / name
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", str(path))
        return path

    def restore(self, name: str, inbox: Path) -> Path:
        """Move a quarantined photo back into the inbox, into the folder it came from when its
        error file says so and that folder is still there (a preset's), else to the inbox's top;
        then drop its error file.
        Never overwrites: a photo with its name waiting there makes this one `-1`."""
        photo = self.quarantined(name)
        error_file = photo.with_name(photo.name + ERROR_SUFFIX)
        folder = inbox
        try:
            source = Path(json.loads(error_file.read_bytes()).get("source", ""))
        except (OSError, ValueError, AttributeError):
            source = Path()
        came_from = named_within(source.parent, inbox)
        if (
            source.is_absolute()
            and came_from is not None
            and Path(came_from).is_dir()  # never made here: a folder of its own, not a link out
            and really_within(Path(came_from).resolve(), [inbox])
        ):
            folder = Path(came_from)
        target = _free_target(folder, name)
        if not move_no_overwrite(photo, target):
            raise FileNotFoundError(errno.ENOENT, "gone before it could be moved", str(photo))
        error_file.unlink(missing_ok=True)
        fsync_dir(photo.parent)
        return target

    def dispose_original(
        self,
        source: Path,
        policy: Literal["keep", "move", "delete"],
        move_to: Path | None,
    ) -> Path | None:
        """Apply the originals policy once the output and journal are durable; the new path on move.

        A source already gone is fine (None): after a crash this may run a second time.
        """
        if policy == "keep":
            return None
        if policy == "delete":
            try:
                source.unlink()
            except FileNotFoundError:
                return None
            fsync_dir(source.parent)
            return None
        if policy != "move":
            raise ValueError(f"originals policy {policy!r}: expected keep, move or delete")
        if move_to is None:
            raise ValueError("originals policy 'move' needs a folder to move to")
        # The worker and intake may both dispose of one original (a restart's scan meets a job
        # just done): one at a time, or the second would move it under a new name.
        with _DISPOSE_LOCK:
            if Path(os.path.normpath(move_to)).is_relative_to(os.path.normpath(self.root)):
                self._folder(move_to)  # as named, inside the outbox: it must stay there
            else:
                make_folder(move_to, self.folder_mode)  # configured elsewhere on purpose
            name = safe_name(source.name)
            halfway = _same_file_among(move_to, name, source)
            if halfway is not None:  # a crash between the move's link and its unlink: finish it
                source.unlink(missing_ok=True)
                fsync_dir(source.parent)
                return halfway
            target = _free_target(move_to, name)
            return target if move_no_overwrite(source, target) else None


def open_outbox(config: "Config") -> Outbox:
    """The outbox with the config's naming and file mode (worker and intake share it)."""
    return Outbox(
        config.outbox,
        name_pattern=config.output.name_pattern,
        file_mode=config.output.file_mode,
    )
