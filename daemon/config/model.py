"""The config file: YAML -> frozen dataclasses, validated once, every problem reported at once.

Defaults live in the dataclasses below (and the engine's in `StyleSettings`); the YAML only maps
onto them. Each problem is reported as `file:line: dotted.field: what is wrong`, all of them in one
`ConfigErrors`, so a user fixes a config in one pass instead of one error per restart. Unknown keys
are errors: a misspelt key silently falling back to a default is the worst kind of config bug.

Kept free of torch (and of `daemon.engine.vgg`, which imports it): `stylebox check` stays light.
"""

import dataclasses
import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, Literal

import yaml

from daemon.config import yamlmarks as ym
from daemon.config.outputs import (
    FAILED_DIR,
    LOGS_DIR,
    ORIGINALS_DIR,
    RESERVED_FOLDERS,
    check_name_pattern,
)
from daemon.engine.settings import COLOUR_MODES, INIT_MODES, OPTIMIZERS, POOLINGS, StyleSettings
from daemon.errors import ConfigError
from daemon.media.decode import DEFAULT_MAX_PIXELS, sha256_file

JOURNAL_NAME = "journal.sqlite3"
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
WEIGHT_SOURCES = ("caffe", "torchvision")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_DEVICE = re.compile(r"auto|cpu|cuda|cuda:[0-9]+")
_FILE_MODE = re.compile(r"0?[0-7]{3}")
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "tiff": "tif"}


def _vgg19_layer_names() -> tuple[str, ...]:
    """VGG-19's layers in the paper's names: blocks 1-2 have two convolutions, blocks 3-5 four."""
    names: list[str] = []
    for block, convolutions in enumerate((2, 2, 4, 4, 4), start=1):
        for index in range(1, convolutions + 1):
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG19_LAYERS = (
    _vgg19_layer_names()
)  # the same as daemon.engine.vgg.LAYER_NAMES, without importing torch


class ConfigErrors(ConfigError):
    """Every problem found in one config, one per line of the message, sorted by line."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


def _raise_problems(source: ym.Source) -> None:
    """Raise every problem found in `source` as one ConfigErrors."""
    if source.problems:
        raise ConfigErrors(source.messages())


@dataclass(frozen=True)
class StyleImage:
    """One painting of a preset and its share of the blended style (shares sum to 1)."""

    path: Path
    weight: float = 1.0


@dataclass(frozen=True)
class Preset:
    """A named recipe: the style images and the engine parameters."""

    name: str
    styles: tuple[StyleImage, ...]
    settings: StyleSettings

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of everything the output pixels depend on, computed on first use.

        Files count by their bytes, not their paths: moving the config redoes no photo, repainting a
        style image does. The name is left out, since renaming a preset changes no pixel. Raises
        OSError when a style (or weights) file has gone since the config was loaded.
        """
        settings = dataclasses.asdict(self.settings)
        if settings["weights"] not in WEIGHT_SOURCES:
            settings["weights"] = {"sha256": sha256_file(Path(settings["weights"]))}
        styles = [{"sha256": sha256_file(s.path), "weight": s.weight} for s in self.styles]
        document = {"version": 1, "settings": settings, "styles": styles}
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RoutingRule:
    """A case-insensitive fnmatch glob on the inbox-relative POSIX path (`*` crosses folders)."""

    pattern: str
    preset: str

    def matches(self, relative: PurePath) -> bool:
        """Whether the photo at `relative` (to the inbox) falls under this rule."""
        return fnmatch.fnmatchcase(relative.as_posix().casefold(), self.pattern.casefold())


@dataclass(frozen=True)
class Routing:
    """Which preset a photo gets: its inbox subfolder, else the first matching rule, else policy."""

    default_preset: str | None = None
    rules: tuple[RoutingRule, ...] = ()
    unmatched: Literal["default", "ignore", "quarantine"] = "default"

    def preset_for(self, relative: PurePath, presets: Mapping[str, Preset]) -> str | None:
        """The preset name for a photo, or None: then `unmatched` says whether to ignore it."""
        if len(relative.parts) > 1:
            # casefold: on a case-insensitive share a user may well create "Swirl/" for "swirl".
            by_folder = {name.casefold(): name for name in presets}
            folder_preset = by_folder.get(relative.parts[0].casefold())
            if folder_preset is not None:
                return folder_preset
        for rule in self.rules:
            if rule.matches(relative):
                return rule.preset
        return self.default_preset if self.unmatched == "default" else None


@dataclass(frozen=True)
class WatchSettings:
    """How the inbox is watched: native events, polling (NAS shares), or native with a fallback."""

    mode: Literal["auto", "native", "poll"] = "auto"
    poll_interval_seconds: float = 5.0
    settle_seconds: float = 2.0  # a file must stay unchanged this long before it is taken
    rescan_interval_seconds: float = 300.0  # a full scan catches events the watcher missed


@dataclass(frozen=True)
class OutputSettings:
    """How results are written: format, quality, name and permissions."""

    format: Literal["jpeg", "png", "tiff"] = "jpeg"
    quality: int = 92  # JPEG only
    bit_depth: int = 8  # 16 only with tiff
    name_pattern: str = "{stem}"  # fields: {stem} {preset} {hash8}
    file_mode: int = 0o644

    @property
    def ext(self) -> str:
        """The file extension for the format, without the dot."""
        return _EXTENSIONS[self.format]


@dataclass(frozen=True)
class OriginalsSettings:
    """What happens to a photo once its result is durable; move_to None: <outbox>/originals."""

    policy: Literal["keep", "move", "delete"] = "move"
    move_to: Path | None = None


@dataclass(frozen=True)
class RetrySettings:
    """Retries of transient failures: the n-th retry waits backoff_seconds * 2**(n-1)."""

    max_attempts: int = 3
    backoff_seconds: float = 30.0


@dataclass(frozen=True)
class LogSettings:
    """Logging; file logs go to <outbox>/logs/ with loguru's rotation and retention."""

    level: str = "INFO"
    file: bool = True
    rotation: str = "10 MB"
    retention: int = 5  # log files kept


@dataclass(frozen=True)
class Config:
    """The whole validated config; paths are absolute and resolved."""

    path: Path
    presets: Mapping[str, Preset]  # read-only, in file order
    inbox: Path | None = None
    outbox: Path | None = None
    state_dir: Path | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_input_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 1  # photos of one preset and output size stylised together, at most
    routing: Routing = Routing()
    watch: WatchSettings = WatchSettings()
    output: OutputSettings = OutputSettings()
    originals: OriginalsSettings = OriginalsSettings()
    retries: RetrySettings = RetrySettings()
    logging: LogSettings = LogSettings()

    def require_outbox(self) -> Path:
        """The outbox, or a ConfigError for a presets-only config (loaded with daemon=False)."""
        if self.outbox is None:
            raise ConfigError(f"{self.path}: no outbox configured")
        return self.outbox

    @property
    def quarantine_dir(self) -> Path:
        """Where photos that cannot be stylised go, with an error sidecar."""
        return self.require_outbox() / FAILED_DIR

    @property
    def log_dir(self) -> Path:
        """Where file logs go."""
        return self.require_outbox() / LOGS_DIR

    @property
    def originals_dir(self) -> Path:
        """Where originals are moved under the "move" policy."""
        return self.originals.move_to or self.require_outbox() / ORIGINALS_DIR

    @property
    def journal_path(self) -> Path:
        """The SQLite journal in state_dir (local disk: SQLite locking is unsafe on shares)."""
        if self.state_dir is None:
            raise ConfigError(f"{self.path}: no state_dir configured")
        return self.state_dir / JOURNAL_NAME


# --- parsing -------------------------------------------------------------------------------------


def _layer(node: ym.Node) -> str:
    """A VGG-19 layer name."""
    if not isinstance(node.value, str) or node.value not in VGG19_LAYERS:
        hint = ym.suggestion(node.value, VGG19_LAYERS)
        raise ym.Invalid(
            f"not a VGG-19 layer: {ym.describe(node.value)}{hint or ' (e.g. relu4_2)'}"
        )
    return node.value


def _layer_list(node: ym.Node) -> tuple[str, ...]:
    """A non-empty list of distinct layer names (or one name)."""
    if isinstance(node.value, str):
        return (_layer(node),)
    if not isinstance(node.value, list) or not node.value:
        raise ym.Invalid(f"expected a list of VGG-19 layer names, got {ym.describe(node.value)}")
    layers = ym.items_of(node, _layer)
    if len(set(layers)) < len(layers):
        raise ym.Invalid("a layer is listed twice")
    return tuple(layers)


def _style_layers(node: ym.Node) -> tuple[tuple[str, float], ...]:
    """A list of layers (equal weights 1/n, the paper's choice) or a map layer -> weight > 0."""
    if not isinstance(node.value, dict):
        layers = _layer_list(node)
        return tuple((name, 1 / len(layers)) for name in layers)
    if not node.value:
        raise ym.Invalid("expected at least one layer")
    weights = ym.fields(node, dict.fromkeys(VGG19_LAYERS, ym.number(0, low_open=True)))
    if len(weights) < len(node.value):
        raise ym.Invalid()
    return tuple(weights.items())


def _weights(node: ym.Node) -> str:
    """A weight source: 'caffe', 'torchvision', or the path of an existing weights file."""
    if node.value in WEIGHT_SOURCES:
        return node.value
    if not isinstance(node.value, str):
        raise ym.Invalid(
            f"expected caffe, torchvision or a file path, got {ym.describe(node.value)}"
        )
    try:
        return str(ym.existing_file(node))
    except ym.Invalid as invalid:
        raise ym.Invalid(f"expected caffe, torchvision or a file; {invalid.message}") from None


def _style_entry(node: ym.Node) -> tuple[Path, float]:
    """One style image: a path, or {image: path, weight: number > 0}."""
    if isinstance(node.value, str):
        return ym.existing_file(node), 1.0
    entry = ym.fields(node, {"image": ym.existing_file, "weight": ym.number(0, low_open=True)})
    ym.require(node, "image", "the style image's path")
    if "image" not in entry or len(entry) < len(node.value):
        raise ym.Invalid()
    return entry["image"], entry.get("weight", 1.0)


def _styles(node: ym.Node) -> tuple[StyleImage, ...]:
    """One path, or a list of them with weights normalised to sum to 1."""
    if isinstance(node.value, str):
        return (StyleImage(ym.existing_file(node)),)
    if not isinstance(node.value, list) or not node.value:
        raise ym.Invalid(
            "expected an image path or a list of {image: path, weight: number}, "
            f"got {ym.describe(node.value)}"
        )
    entries = ym.items_of(node, _style_entry)
    total = sum(weight for _, weight in entries)
    return tuple(StyleImage(path, weight / total) for path, weight in entries)


_SETTINGS_PARSERS: dict[str, ym.Parser] = {
    "alpha": ym.number(0),
    "beta": ym.number(0),
    "content_layers": _layer_list,
    "style_layers": _style_layers,
    "size": ym.integer(16, 8192),
    "style_scale": ym.number(0, 4, low_open=True),
    "colour": ym.choice(COLOUR_MODES),
    "tv_weight": ym.number(0),
    "optimizer": ym.choice(OPTIMIZERS),
    "steps": ym.optional(ym.integer(1)),
    "seed": ym.integer(0, 2**64 - 1),  # torch.manual_seed's range
    "init": ym.choice(INIT_MODES),
    "pooling": ym.choice(POOLINGS),
    "weights": _weights,
}


def _preset(node: ym.Node, name: str) -> Preset:
    """One preset: `style` plus any StyleSettings field."""
    kwargs = ym.fields(node, {"style": _styles, **_SETTINGS_PARSERS})
    ym.require(node, "style", "a style image path, or a list of {image: path, weight: number}")
    if kwargs.get("alpha") == 0 and kwargs.get("beta") == 0:
        node.child("beta").report("alpha and beta cannot both be 0: nothing would be optimised")
    styles = kwargs.pop("style", None)
    if styles is None:
        raise ym.Invalid()
    return Preset(name, styles, StyleSettings(**kwargs))


def _presets(node: ym.Node) -> dict[str, Preset]:
    """The presets in file order; their names must make safe, distinct folder names."""
    if not ym.mapping(node):
        raise ym.Invalid("at least one preset is needed")
    presets: dict[str, Preset] = {}
    folders: dict[str, str] = {}
    for name in node.value:
        child = node.child(name)
        if not isinstance(name, str) or not PRESET_NAME.fullmatch(name):
            child.report(
                "a preset name is a folder name: 1-64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        elif name.casefold() in RESERVED_FOLDERS:
            child.report(f"{name!r} is reserved for the outbox's own folders; choose another name")
        elif name.casefold() in folders:
            # Two presets whose folders differ only in case collide on case-insensitive shares.
            child.report(f"differs from preset {folders[name.casefold()]!r} only in case")
        else:
            folders[name.casefold()] = name
            preset = ym.attempt(child, lambda n, name=name: _preset(n, name))
            if preset is not ym.BAD:
                presets[name] = preset
    return presets


def _routing(node: ym.Node, preset_names: tuple[str, ...]) -> Routing:
    """The routing section; every preset it names must exist."""

    def preset_name(child: ym.Node) -> str:
        if child.value not in preset_names:
            hint = ym.suggestion(child.value, preset_names)
            raise ym.Invalid(f"no preset named {ym.describe(child.value)}{hint}")
        return child.value

    def pattern(child: ym.Node) -> str:
        if ym.text(child).startswith("/"):
            raise ym.Invalid("patterns match the path relative to the inbox: drop the leading '/'")
        return child.value

    def rule(child: ym.Node) -> RoutingRule:
        kwargs = ym.fields(child, {"pattern": pattern, "preset": preset_name})
        ym.require(child, "pattern", "a glob on the path relative to the inbox, e.g. '*.png'")
        ym.require(child, "preset", "the preset for photos that match")
        if len(kwargs) < 2:
            raise ym.Invalid()
        return RoutingRule(**kwargs)

    def rules(child: ym.Node) -> tuple[RoutingRule, ...]:
        if child.value is None:
            return ()
        if not isinstance(child.value, list):
            raise ym.Invalid(
                f"expected a list of {{pattern, preset}}, got {ym.describe(child.value)}"
            )
        return tuple(ym.items_of(child, rule))

    return ym.section(
        Routing,
        {
            "default_preset": ym.optional(preset_name),
            "rules": rules,
            "unmatched": ym.choice(("default", "ignore", "quarantine")),
        },
    )(node)


def _file_mode(node: ym.Node) -> int:
    """Permission bits given as a quoted octal string such as "0644"."""
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool):
        # Unquoted, YAML reads 644 as decimal and 0644 as octal: neither is what a user can see.
        raise ym.Invalid(f'got the number {value}; quote the octal mode, e.g. "0644"')
    if not isinstance(value, str) or not _FILE_MODE.fullmatch(value):
        raise ym.Invalid(f'expected an octal mode such as "0644", got {ym.describe(value)}')
    return int(value, 8)


def _name_pattern(node: ym.Node) -> str:
    """An output name pattern, checked by the outbox's own rules."""
    pattern = ym.text(node)
    try:
        check_name_pattern(pattern)
    except ValueError as error:
        raise ym.Invalid(str(error).removeprefix(f"name_pattern {pattern!r}: ")) from None
    return pattern


def _bit_depth(node: ym.Node) -> int:
    """8 or 16 bits per channel."""
    if type(node.value) is not int or node.value not in (8, 16):
        raise ym.Invalid(f"expected 8 or 16, got {ym.describe(node.value)}")
    return node.value


def _output(node: ym.Node) -> OutputSettings:
    """The output section; 16 bits per channel only where the format holds them."""
    fields = ym.fields(
        node,
        {
            "format": ym.choice(("jpeg", "png", "tiff")),
            "quality": ym.integer(1, 100),
            "bit_depth": _bit_depth,
            "name_pattern": _name_pattern,
            "file_mode": _file_mode,
        },
    )
    output = OutputSettings(**fields)
    format_refused = "format" in ym.mapping(node) and "format" not in fields
    if output.bit_depth == 16 and output.format != "tiff" and not format_refused:
        node.child("bit_depth").report(f"16 bits need format tiff; {output.format} holds 8")
    return output


def _device(node: ym.Node) -> str:
    """auto, cpu, cuda or cuda:N."""
    if not isinstance(node.value, str) or not _DEVICE.fullmatch(node.value):
        raise ym.Invalid(f"expected auto, cpu, cuda or cuda:N, got {ym.describe(node.value)}")
    return node.value


def _check_layout(top: ym.Node, config: Config) -> None:
    """Refuse folder layouts where the daemon would feed on its own files."""
    inbox, outbox = config.inbox, config.outbox
    if inbox is None or outbox is None:
        return
    if inbox == outbox:
        top.child("outbox").report(f"the same folder as inbox ({inbox}): results would loop")
    elif outbox.is_relative_to(inbox):
        top.child("outbox").report(f"inside inbox ({inbox}): results would be stylised again")
    elif inbox.is_relative_to(outbox):
        top.child("inbox").report(f"inside outbox ({outbox}): results would be stylised again")
    if config.state_dir is not None and config.state_dir.is_relative_to(inbox):
        top.child("state_dir").report(f"inside inbox ({inbox}): the journal would be a photo")
    move_to = config.originals.move_to
    if config.originals.policy == "move" and move_to is not None and move_to.is_relative_to(inbox):
        top.child("originals").child("move_to").report(
            f"inside inbox ({inbox}): moved originals would be stylised again"
        )


def _config(top: ym.Node, path: Path, daemon: bool) -> Config:
    """The whole file; with `daemon`, the folders are required and their layout checked."""
    raw = ym.mapping(top)
    presets_raw = raw.get("presets")
    preset_names = tuple(presets_raw) if isinstance(presets_raw, dict) else ()
    kwargs = ym.fields(
        top,
        {
            "presets": _presets,
            "inbox": ym.path,
            "outbox": ym.path,
            "state_dir": ym.path,
            "device": _device,
            "max_input_pixels": ym.integer(1),
            "batch_size": ym.integer(1),
            "routing": lambda node: _routing(node, preset_names),
            "watch": ym.section(
                WatchSettings,
                {
                    "mode": ym.choice(("auto", "native", "poll")),
                    "poll_interval_seconds": ym.number(0, low_open=True),
                    "settle_seconds": ym.number(0, low_open=True),
                    "rescan_interval_seconds": ym.number(0, low_open=True),
                },
            ),
            "output": _output,
            "originals": ym.section(
                OriginalsSettings,
                {"policy": ym.choice(("keep", "move", "delete")), "move_to": ym.optional(ym.path)},
            ),
            "retries": ym.section(
                RetrySettings, {"max_attempts": ym.integer(1), "backoff_seconds": ym.number(0)}
            ),
            "logging": ym.section(
                LogSettings,
                {
                    "level": ym.choice(LOG_LEVELS, fold_case=True),
                    "file": ym.boolean,
                    "rotation": ym.text,  # loguru's own syntax ("10 MB", "1 week"), checked by it
                    "retention": ym.integer(1),
                },
            ),
        },
    )
    ym.require(top, "presets", "at least one preset")
    config = Config(path=path, presets=MappingProxyType(kwargs.pop("presets", {})), **kwargs)
    if config.batch_size > 1 and config.retries.max_attempts < 2:
        top.child("batch_size").report(
            f"{config.batch_size} needs retries.max_attempts of 2 or more: a crash during a batch "
            "costs each of its photos an attempt before each runs again alone"
        )
    if daemon:
        for key in ("inbox", "outbox", "state_dir"):
            ym.require(top, key, "a folder path, to run the daemon")
        routing = top.child("routing")
        routing_raw = routing.value if routing.value is not None else {}
        if (
            isinstance(routing_raw, dict)
            and routing_raw.get("unmatched", "default") == "default"
            and routing_raw.get("default_preset") is None
        ):
            routing.child("default_preset").report(
                "required while routing.unmatched is 'default' (or set unmatched to ignore or "
                "quarantine)"
            )
        _check_layout(top, config)
    return config


def load_config(path: Path, *, daemon: bool = True) -> Config:
    """Read and check a config file; daemon=False (one-shot runs) needs only its presets."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigErrors([f"{shown}: no such config file"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigErrors([f"{shown}: cannot read the config: {error}"]) from error
    try:
        raw = ym.load_marked(text)
    except yaml.YAMLError as error:
        raise ConfigErrors([ym.yaml_error_message(shown, error)]) from None
    resolved = path.resolve()
    source = ym.Source(shown, resolved.parent)
    top = ym.Node(raw, "", getattr(raw, "line", 1), source)
    config = ym.attempt(top, lambda node: _config(node, resolved, daemon))
    _raise_problems(source)
    return config


def parse_preset(name: str, raw: Mapping[str, Any], base_dir: Path) -> Preset:
    """Build a preset by the config file's rules (for the CLI); paths are relative to base_dir."""
    source = ym.Source(None, base_dir.resolve())
    preset = ym.attempt(
        ym.Node(dict(raw), f"presets.{name}", 0, source), lambda n: _preset(n, name)
    )
    _raise_problems(source)
    return preset
