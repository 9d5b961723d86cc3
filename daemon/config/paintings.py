"""The paintings folder: an image dropped there is a preset named after its file.

With `paintings:` set, each image file at the top of that folder gives a preset: its name the
file's stem made a safe folder name (`preset_name_for`), the paper's parameters (StyleSettings'
defaults), and what a sidecar `<stem>.yaml` beside it overrides (the keys a preset takes in the
config file, but `style`: the painting is the style). They are read as part of loading the config
(`with_paintings`, called by load.py), after the config file's own presets, which win a name they
share. A painting is checked as a photo is: whole (a copy under way is "incomplete", not taken),
decoded within max_input_pixels; one that fails, or whose sidecar does, is left out and said in
`Config.paintings_seen` (for `stylebox status` and the page), never refusing the config.

The running daemon reloads when the folder's listing has changed and stayed the same for
settle_seconds (`PaintingsWatch`, polled by service.loop): the same reload SIGHUP asks for.
A painting replaced is a new preset fingerprint (its bytes count, service.intake queues new
photos under it; results already made stay as they are). With a paintings folder, a photo in an
inbox subfolder that names no preset, and that no routing rule takes, waits for a painting of
that name (`waiting_for`) instead of going to the default preset: the painting may still be on
its way, or have been removed.

`add_painting` and `remove_painting` are for the web API: the one way a painting is written or
removed from code. Pillow is imported only where a painting is decoded, so a config without a
paintings folder loads without it.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from daemon.config import yaml_lines
from daemon.config.presets import Preset, check_preset_name
from daemon.config.values import describe
from daemon.errors import ConfigError, InputError

if TYPE_CHECKING:
    from daemon.config.models import Config, PresetsConfig

    C = TypeVar("C", Config, PresetsConfig)

SIDECAR_SUFFIXES = (".yaml", ".yml")
# Names a painting is never read from: the watcher's (service.watcher.IGNORED_SUFFIXES, names),
# written out since the config may not import the service; and every dotfile (add_painting's
# temporary files among them).
_UNFINISHED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download")
_SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_CHECK_SIDE = 64  # px a side a painting is decoded at to check it, as checks.STYLE_CHECK_SIDE
_NAME_LENGTH = 64
_SUFFIX_OF_TYPE = {"image/jpeg": ".jpg", "image/tiff": ".tif", "image/heif": ".heic"}

State = Literal["preset", "shadowed", "incomplete", "refused"]
Refusal = Literal["no_folder", "name", "taken", "image", "overrides", "missing"]


@dataclass(frozen=True)
class Painting:
    """A file in the paintings folder and what became of it: a preset; shadowed by the config
    file's preset of the same name; incomplete (a copy under way, taken once whole); or
    refused, with the reason."""

    file: Path
    name: str  # the preset name its stem gives ("" when it gives none)
    state: State
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """As `stylebox status --json` and /api/status show it."""
        return {
            "file": self.file.name,
            "preset": self.name or None,
            "state": self.state,
            "reason": self.reason,
        }


class PaintingRefused(InputError):
    """add_painting or remove_painting will not do it; `what` says which kind of refusal (for
    the API's status code), the message why, in a line per problem."""

    def __init__(self, what: Refusal, problems: Sequence[str]) -> None:
        self.what = what
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def preset_name_for(stem: str) -> str:
    """The preset name a file stem gives: accents dropped, each run of characters other than
    letters, digits, '_', '.' and '-' one '_', at most 64 characters, without punctuation at
    either end ("Starry Night (1889)" -> "Starry_Night_1889"); "" when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_text).strip("_.-")
    return name[:_NAME_LENGTH].rstrip("_.-")


def is_painting_name(name: str) -> bool:
    """Whether a file of this name in the paintings folder may be a painting (not a sidecar, a
    dotfile, a download still under way or a file a desktop leaves behind)."""
    folded = name.casefold()
    return not (
        name.startswith(".")
        or folded.endswith(SIDECAR_SUFFIXES)
        or folded.endswith(_UNFINISHED_SUFFIXES)
        or folded in _SYSTEM_NAMES
    )


def with_paintings(config: C) -> C:
    """The config with its paintings folder's presets after its own, and `paintings_seen`
    saying what became of each file there; the config as it is without a folder."""
    folder = config.paintings
    if folder is None:
        return config
    seen, found = scan(folder, config.presets, config.max_input_pixels, config.path.name)
    return dataclasses.replace(
        config,
        presets=MappingProxyType({**config.presets, **found}),
        paintings_seen=tuple(seen),
    )


def scan(
    folder: Path, own: Mapping[str, Preset], max_pixels: int, config_name: str = "config.yaml"
) -> tuple[list[Painting], dict[str, Preset]]:
    """Each painting file in `folder` judged (in name order), and the presets of those taken.
    A folder that cannot be listed gives none (`stylebox check` and a reload refuse it)."""
    try:
        files = sorted(
            Path(entry.path)
            for entry in os.scandir(folder)
            if is_painting_name(entry.name) and not entry.is_dir(follow_symlinks=False)
        )
    except OSError:
        return [], {}
    own_names = {name.casefold(): name for name in own}
    seen: list[Painting] = []
    found: dict[str, Preset] = {}
    for file in files:
        painting, preset = _judged(file, own_names, found, max_pixels, config_name)
        seen.append(painting)
        if preset is not None:
            found[preset.name] = preset
    return seen, found


def _judged(
    file: Path,
    own_names: Mapping[str, str],
    found: Mapping[str, Preset],
    max_pixels: int,
    config_name: str,
) -> tuple[Painting, Preset | None]:
    """One file: its Painting, and its preset when it gives one."""
    name = preset_name_for(file.stem)
    try:
        check_preset_name(name)
    except ValueError as error:
        why = "no letter or digit in its name" if not name else str(error)
        return Painting(file, "", "refused", f"{file.name}: {why}; rename the file"), None
    folded = name.casefold()
    if folded in own_names:
        why = f"{config_name}'s preset {own_names[folded]!r} has this name and wins"
        return Painting(file, name, "shadowed", why), None
    other = next((taken for taken in found if taken.casefold() == folded), None)
    if other is not None:
        painted = found[other].styles[0].path.name
        why = f"{painted} already gives preset {other!r}; rename one of them"
        return Painting(file, name, "refused", why), None
    problem = image_problem(file, max_pixels)
    if problem is not None:
        return Painting(file, name, *problem), None
    try:
        preset = _preset_of(file, name, _sidecar_of(file))
    except ConfigError as error:  # ConfigErrors: one line per problem
        return Painting(file, name, "refused", "; ".join(str(error).splitlines())), None
    return Painting(file, name, "preset"), preset


def image_problem(file: Path, max_pixels: int) -> tuple[State, str] | None:
    """Why `file` is no painting yet ("incomplete") or at all ("refused"), or None: a regular
    file (a link is not followed), whole, and decoded within the pixel limit as a style image is
    decoded at the daemon's start (checks._style_images)."""
    from daemon.media import decode  # Pillow: only for a config with paintings

    try:
        status = os.stat(file, follow_symlinks=False)
    except OSError as error:
        return "refused", f"{file.name}: cannot read it ({error.strerror})"
    if stat.S_ISLNK(status.st_mode):
        return "refused", f"{file.name}: a symlink, never followed; copy the painting in"
    if not stat.S_ISREG(status.st_mode):
        return "refused", f"{file.name}: not a regular file"
    if status.st_size > 0 and not decode.is_complete(file):
        return "incomplete", f"{file.name}: not whole yet (still being copied?)"
    try:
        decode.load_image(file, max_pixels=max_pixels, long_side=_CHECK_SIDE, follow_symlinks=False)
    except InputError as error:  # its message starts with the file's name
        return "refused", str(error)
    return None


def _sidecar_of(painting: Path) -> Path | None:
    """The painting's sidecar (`<stem>.yaml`, else `<stem>.yml`), if there is one."""
    for suffix in SIDECAR_SUFFIXES:
        sidecar = painting.with_suffix(suffix)
        if sidecar.is_file():
            return sidecar
    return None


def _preset_of(painting: Path, name: str, sidecar: Path | None) -> Preset:
    """The painting's preset, with its sidecar's keys over the defaults; ConfigErrors with
    each of the sidecar's problems at its line, as the config file's are given."""
    from daemon.config import load  # it imports this module

    if sidecar is None:
        return load.parse_preset(name, {"style": str(painting)}, painting.parent)
    shown = str(sidecar)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise load.ConfigErrors([f"{shown}: cannot read it: {error}"]) from None
    try:
        raw, root = yaml_lines.load(text)
    except yaml.YAMLError as error:
        raise load.ConfigErrors([yaml_lines.yaml_error_message(shown, error)]) from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        message = (
            f"expected a mapping of preset keys (size: 768, beta: 1e4, ...), got {describe(raw)}"
        )
        raise load.ConfigErrors([f"{shown}:1: {message}"])
    if "style" in raw:
        line, _ = yaml_lines.locate(root, ("style",))
        message = "style: the painting beside this file is the style; remove the key"
        raise load.ConfigErrors([f"{shown}:{line}: {message}"])
    document = {"style": str(painting), **raw}
    return load.parse_preset(name, document, painting.parent, file=sidecar, root=root)


# --- waiting for a painting -----------------------------------------------------------------------


def waiting_for(config: Config, relative: PurePath) -> str | None:
    """The painting a photo at `relative` (to the inbox) waits for, or None: with a paintings
    folder, a photo in a subfolder that names no preset and that no routing rule takes waits
    for a painting of that name, rather than take the default preset."""
    if config.paintings is None or len(relative.parts) < 2:
        return None
    folder = relative.parts[0]
    if folder.casefold() in {name.casefold() for name in config.presets}:
        return None
    if any(rule.matches(relative) for rule in config.routing.rules):
        return None
    return folder


def waiting_reason(config: Config, painting: str) -> str:
    """Why photos in inbox/<painting>/ wait, in a line: that painting's problem, or its absence."""
    for seen in config.paintings_seen:
        if seen.name.casefold() == painting.casefold() and seen.reason:
            return f"waiting for painting {painting}: {seen.reason}"
    return f"waiting for painting {painting}: no painting of that name in {config.paintings}"


def changes(old: Sequence[Painting], new: Sequence[Painting]) -> list[tuple[bool, str]]:
    """(is_a_problem, line) for each painting whose fate is new since `old`, for the log."""
    before = {(p.file, p.state, p.reason) for p in old}
    files = {p.file for p in new}
    lines = [
        (False, f"painting {p.file.name} gone: preset {p.name} with it")
        for p in old
        if p.file not in files and p.state == "preset"
    ]
    for painting in new:
        if (painting.file, painting.state, painting.reason) in before:
            continue
        if painting.state == "preset":
            lines.append((False, f"painting {painting.file.name}: preset {painting.name}"))
        else:
            lines.append(
                (True, f"painting {painting.file.name} {painting.state}: {painting.reason}")
            )
    return lines


# --- the daemon's look at the folder --------------------------------------------------------------


Listing = frozenset[tuple[str, int, int, int]] | None  # (name, size, mtime_ns, inode); None: gone


def listing_of(folder: Path | None) -> Listing:
    """What the folder holds, as far as a reload cares (dotfiles left out: temporary files)."""
    if folder is None:
        return None
    try:
        with os.scandir(folder) as entries:
            found = set()
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                status = entry.stat(follow_symlinks=False)
                found.add((entry.name, status.st_size, status.st_mtime_ns, status.st_ino))
            return frozenset(found)
    except OSError:
        return None


class PaintingsWatch:
    """When the daemon should reload for its paintings folder: its listing differs from the one
    the running config was loaded from, and has stayed the same for settle_seconds (a painting
    still being copied, or a sidecar still being written, is waited for). Looked at no more
    often than every poll_seconds; the clock is the caller's."""

    def __init__(self, folder: Path | None, now: float) -> None:
        """`folder` as the config being loaded names it, looked at before it is loaded."""
        self._loaded = self._seen = listing_of(folder)
        self._seen_since = self._looked_at = now

    def due(
        self, folder: Path | None, now: float, *, poll_seconds: float, settle_seconds: float
    ) -> bool:
        """True once per settled change: the caller reloads."""
        if now - self._looked_at < poll_seconds:
            return False
        self._looked_at = now
        listing = listing_of(folder)
        if listing != self._seen:
            self._seen, self._seen_since = listing, now
            return False
        if listing == self._loaded or now - self._seen_since < settle_seconds:
            return False
        self._loaded = listing
        return True


# --- written from code: the web API ---------------------------------------------------------------


def add_painting(
    config: Config, name: str, data: bytes, overrides: Mapping[str, Any] | None = None
) -> Path:
    """Write a painting into the config's paintings folder as the preset `name`; its path.

    The contract, for the web API (`POST /api/v1/presets`):
    - `name` is made a preset name by `preset_name_for` (a file name's stem or a typed name
      alike); the returned path's stem is what the preset is called.
    - Refused, with nothing left in the folder, as a PaintingRefused whose `what` says which:
      no paintings folder configured ("no_folder"); no name left once sanitised ("name"); a
      name the config file's presets take, in any case ("taken": they win, and are never
      replaced from here); `data` that is not a whole image within max_input_pixels, as
      decoded here ("image"); `overrides` that a preset does not take ("overrides", each
      problem a line; `style` is the painting itself).
    - `data` is written to a dotfile (which the daemon's scan skips), fsynced, decoded; then
      the sidecar (`<name>.yaml`, with `overrides`; an old one removed when there are none)
      and the painting are renamed into place, the painting last, and the folder fsynced. Its
      suffix is the image's own format. A painting of the same name (any suffix or case) is
      replaced: the preset's fingerprint changes, photos done before stay done.
    - The running daemon takes it at its next look (settle_seconds after the change).
    OSError (a full disk, a read-only share) is raised as it is.
    """
    from daemon.config import load  # it imports this module
    from daemon.media import decode  # Pillow: only here

    folder = _folder_of(config)
    preset = _name_to_write(config, name)
    overrides = dict(overrides or {})
    temporary = folder / f".{preset}.{secrets.token_hex(4)}.part"
    written: list[Path] = []
    try:
        _write_synced(temporary, data)
        written.append(temporary)
        problem = image_problem(temporary, config.max_input_pixels)
        with temporary.open("rb") as file:
            kind = decode.image_type(file)
        suffix = _suffix_for(kind)
        if problem is not None or suffix is None:
            why = problem[1] if problem is not None else "not an image format a painting keeps"
            raise PaintingRefused("image", [why.replace(temporary.name, preset)])
        if "style" in overrides:
            raise PaintingRefused("overrides", ["style: the painting is the style; leave it out"])
        try:
            load.parse_preset(preset, {**overrides, "style": str(temporary)}, folder)
        except load.ConfigErrors as error:
            lines = [line.removeprefix(f"presets.{preset}.") for line in error.errors]
            raise PaintingRefused("overrides", lines) from None
        painting = folder / f"{preset}{suffix}"
        sidecar = painting.with_suffix(SIDECAR_SUFFIXES[0])
        # What gave this name before goes first (on a share that ignores case, "Wave.yaml" is
        # "wave.yaml"), then the new sidecar, then the painting, which makes it a preset.
        for old in _files_of(folder, preset):
            for path in _with_sidecars(old):
                if path.name != painting.name:
                    path.unlink(missing_ok=True)
        if overrides:
            text = yaml.safe_dump(overrides, sort_keys=False, allow_unicode=True)
            sidecar_temporary = folder / f".{preset}.{secrets.token_hex(4)}.yaml.part"
            _write_synced(sidecar_temporary, text.encode("utf-8"))
            written.append(sidecar_temporary)
            os.replace(sidecar_temporary, sidecar)
        os.replace(temporary, painting)
        written.clear()
        _fsync_folder(folder)
        return painting
    finally:
        for left in written:
            left.unlink(missing_ok=True)


def remove_painting(config: Config, name: str) -> list[Path]:
    """Remove the painting that gives preset `name`, with its sidecar; the paths removed.

    For the web API (`DELETE /api/v1/presets/{name}`): `name` must be a preset name as it is
    ("name" else), matched in any case; only files at the top of the paintings folder are looked
    at, by their names as listed (a name from a client never becomes a path). A name the config
    file's presets take is refused ("taken"), as is one no painting gives ("missing") and a
    config without a paintings folder ("no_folder"). Photos in the preset's inbox folder then
    wait (`waiting_for`); the running daemon drops the preset at its next look.
    """
    folder = _folder_of(config)
    try:
        check_preset_name(name)  # a preset's name as it is: nothing is made of other text here
    except ValueError as error:
        raise PaintingRefused("name", [str(error)]) from None
    preset = _name_to_write(config, name)
    removed = []
    for file in _files_of(folder, preset):
        for path in _with_sidecars(file):
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    if not removed:
        raise PaintingRefused("missing", [f"no painting gives preset {preset!r}"])
    _fsync_folder(folder)
    return removed


def _folder_of(config: Config) -> Path:
    """The paintings folder, which must be set and be a folder."""
    folder = config.paintings
    if folder is None or not folder.is_dir():
        why = "no paintings folder is configured (paintings: in the config)"
        if folder is not None:
            why = f"the paintings folder {folder} is not there"
        raise PaintingRefused("no_folder", [why])
    return folder


def _name_to_write(config: Config, name: str) -> str:
    """`name` made a preset name, refused where it cannot be one or the config file has it."""
    preset = preset_name_for(name)
    try:
        check_preset_name(preset)
    except ValueError as error:
        why = str(error) if preset else f"{name!r}: no letter or digit to name a preset by"
        raise PaintingRefused("name", [why]) from None
    painted = {p.name for p in config.paintings_seen if p.state == "preset"}
    own = [n for n in config.presets if n not in painted and n.casefold() == preset.casefold()]
    if own:
        why = f"{preset!r} is a preset of {config.path.name}, which wins; choose another name"
        raise PaintingRefused("taken", [why])
    return preset


def _files_of(folder: Path, preset: str) -> list[Path]:
    """The painting files at the top of `folder` that give `preset` (in any case)."""
    return [
        Path(entry.path)
        for entry in os.scandir(folder)
        if is_painting_name(entry.name)
        and not entry.is_dir(follow_symlinks=False)
        and preset_name_for(Path(entry.name).stem).casefold() == preset.casefold()
    ]


def _with_sidecars(painting: Path) -> list[Path]:
    """A painting's path and those its sidecar may have."""
    return [painting, *(painting.with_suffix(suffix) for suffix in SIDECAR_SUFFIXES)]


def _suffix_for(mime: str | None) -> str | None:
    """The file suffix for an image's MIME type."""
    if mime is None:
        return None
    return _SUFFIX_OF_TYPE.get(mime) or mimetypes.guess_extension(mime)


def _write_synced(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (refusing to follow or replace anything at `path`)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable (a share that cannot fsync a folder is let be)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
