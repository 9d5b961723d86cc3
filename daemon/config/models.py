"""The config's types: pydantic checks every value, the defaults live here and nowhere else.

Sections are frozen, strict pydantic models (no "12" for 12, no true for 1, no unknown keys). The
top level is a frozen dataclass that pydantic validates, because the service copies a config with
`dataclasses.replace`; two of them: `Config` for the daemon (its folders are plain `Path`s) and
`PresetsConfig` for a presets-only load (`stylebox stylize --preset`). A preset is checked as the
file spells it (`PresetModel`) and becomes a `Preset`, whose `StyleSettings` the engine takes.

Validators read the file's folder and its preset names from the validation context, so a rule
that needs them is checked even while other values are wrong: every problem is found at once.
Kept free of torch (and of `daemon.engine.vgg`, which imports it): `stylebox check` stays light.
"""

import dataclasses
import difflib
import fnmatch
import hashlib
import importlib.util
import ipaddress
import json
import re
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

from loguru import logger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from daemon.config.outputs import (
    FAILED_DIR,
    LOGS_DIR,
    ORIGINALS_DIR,
    RESERVED_FOLDERS,
    check_name_pattern,
)
from daemon.engine.settings import (
    ColourMode,
    Finish,
    InitMode,
    OptimizerName,
    Pooling,
    StyleSettings,
)
from daemon.media.files import DEFAULT_MAX_PIXELS, sha256_file

JOURNAL_NAME = "journal.sqlite3"
STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
ENGINE = StyleSettings()  # the engine's defaults, which a preset starts from
WeightSource = Literal["caffe", "torchvision"]
WEIGHT_SOURCES: tuple[str, ...] = get_args(WeightSource)
LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]
BitDepth = Literal[8, 16]
_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DEVICE = re.compile(r"auto|cpu|cuda|cuda:[0-9]+")
_FILE_MODE = re.compile(r"0?[0-7]{3}")
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "tiff": "tif"}
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]")


def _vgg19_layer_names() -> tuple[str, ...]:
    """VGG-19's layers in the paper's names: blocks 1-2 have two convolutions, blocks 3-5 four."""
    names: list[str] = []
    for block, convolutions in enumerate((2, 2, 4, 4, 4), start=1):
        for index in range(1, convolutions + 1):
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG19_LAYERS = _vgg19_layer_names()  # daemon.engine.vgg.LAYER_NAMES, without importing torch


# --- value checks (a ValueError's text is the message the user sees) -----------------------------


def describe(value: Any) -> str:
    """A value as the user wrote it, for "got ..." in messages."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def suggestion(word: Any, candidates: Any) -> str:
    """'; did you mean X?' when a candidate is close to `word`, else ''."""
    matches = difflib.get_close_matches(str(word).casefold(), list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def _context(info: ValidationInfo, key: str, default: Any) -> Any:
    """A value the loader passed in; none when a model is built in code."""
    return (info.context or {}).get(key, default)


def _path(value: Any, info: ValidationInfo) -> Path:
    """A path, `~` expanded, relative to the config file's folder, resolved."""
    if isinstance(value, Path):  # built in code, not read from a file
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a path, got {describe(value)}")
    try:
        return (_context(info, "base_dir", Path.cwd()) / Path(value).expanduser()).resolve()
    except (OSError, RuntimeError) as error:  # no home folder for `~`; a symlink loop
        raise ValueError(f"cannot resolve {value!r}: {error}") from error


def _existing_file(value: Any, info: ValidationInfo) -> Path:
    """A path that names an existing file."""
    found = _path(value, info)
    if not found.is_file():
        raise ValueError(f"{found}: {'not a file' if found.exists() else 'no such file'}")
    return found


def _weights(value: Any, info: ValidationInfo) -> str:
    """A weight source, or the path of an existing weights file."""
    if value in WEIGHT_SOURCES:
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected caffe, torchvision or a file path, got {describe(value)}")
    try:
        return str(_existing_file(value, info))
    except ValueError as error:
        raise ValueError(f"expected caffe, torchvision or a file; {error}") from None


def _layer(name: str) -> str:
    """A VGG-19 layer name."""
    if name not in VGG19_LAYERS:
        hint = suggestion(name, VGG19_LAYERS) or " (e.g. relu4_2)"
        raise ValueError(f"not a VGG-19 layer: {name!r}{hint}")
    return name


def _at_least_one(what: str) -> AfterValidator:
    """Refuse an empty collection (checked after its items, so a bad item is reported alone)."""

    def check(items: Any) -> Any:
        if not items:
            raise ValueError(what)
        return items

    return AfterValidator(check)


def _distinct(layers: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse a layer listed twice."""
    if len(set(layers)) < len(layers):
        raise ValueError("a layer is listed twice")
    return layers


def _one_or_list(value: Any) -> Any:
    """One item may stand for a list of one."""
    return [value] if isinstance(value, str) else value


Layer = Annotated[str, AfterValidator(_layer)]
Layers = Annotated[
    tuple[Layer, ...],
    Strict(False),  # a YAML list is a tuple here; the items stay strict
    _at_least_one("expected at least one layer"),
    AfterValidator(_distinct),
    BeforeValidator(_one_or_list),
]
Weight = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_LAYERS = TypeAdapter(Layers, config=STRICT)
_LAYER_WEIGHTS = TypeAdapter(
    Annotated[dict[Layer, Weight], _at_least_one("expected at least one layer")], config=STRICT
)


def _weighted_layers(value: Any) -> Any:
    """A list of layers (equal weights 1/n, the paper's choice) or a map layer -> weight > 0."""
    if isinstance(value, dict):
        return tuple(_LAYER_WEIGHTS.validate_python(value).items())
    layers = _LAYERS.validate_python(value)
    return tuple((name, 1 / len(layers)) for name in layers)


def _style_entries(value: Any) -> Any:
    """One path, or a list of paths and {image, weight} mappings, as a list of mappings."""
    entries = _one_or_list(value)
    if not isinstance(entries, list):
        return entries
    return [{"image": entry} if isinstance(entry, str) else entry for entry in entries]


def _octal_mode(value: Any) -> Any:
    """Permission bits given as a quoted octal string such as "0644"."""
    if isinstance(value, int) and not isinstance(value, bool):
        # Unquoted, YAML reads 644 as decimal and 0644 as octal: neither is what a user can see.
        raise ValueError(f'got the number {value}; quote the octal mode, e.g. "0644"')
    if not isinstance(value, str) or not _FILE_MODE.fullmatch(value):
        raise ValueError(f'expected an octal mode such as "0644", got {describe(value)}')
    return int(value, 8)


def _name_pattern(pattern: str) -> str:
    """An output name pattern, checked by the outbox's own rules."""
    try:
        check_name_pattern(pattern)
    except ValueError as error:
        raise ValueError(str(error).removeprefix(f"name_pattern {pattern!r}: ")) from None
    return pattern


def _relative_pattern(pattern: str) -> str:
    """Refuse a pattern that could never match an inbox-relative path."""
    if pattern.startswith("/"):
        raise ValueError("patterns match the path relative to the inbox: drop the leading '/'")
    return pattern


def _known_preset(name: str, info: ValidationInfo) -> str:
    """A preset the file defines (any name, for a model built in code)."""
    names = _context(info, "preset_names", None)
    if names is not None and name not in names:
        raise ValueError(f"no preset named {name!r}{suggestion(name, names)}")
    return name


def _folder_name(name: str, info: ValidationInfo) -> str:
    """A preset name is a folder name in the inbox and outbox: safe, and distinct in any case."""
    if not _PRESET_NAME.fullmatch(name):
        raise ValueError(
            "a preset name is a folder name: 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if name.casefold() in RESERVED_FOLDERS:
        raise ValueError(f"{name!r} is reserved for the outbox's own folders; choose another name")
    # Two presets whose folders differ only in case collide on case-insensitive shares.
    for earlier in _context(info, "preset_names", ()):
        if earlier == name:
            break
        if isinstance(earlier, str) and earlier.casefold() == name.casefold():
            raise ValueError(f"differs from preset {earlier!r} only in case")
    return name


def _device(value: Any) -> Any:
    """auto, cpu, cuda or cuda:N."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {describe(value)}")
    return value


def check_weights(alpha: float | None, beta: float) -> None:
    """alpha and beta both 0 leave nothing to optimise (for a preset and the CLI's overrides)."""
    if alpha == 0 and beta == 0:
        raise ValueError("alpha and beta cannot both be 0: nothing would be optimised")


def _not_blank(text: str) -> str:
    """Text with something in it: a blank value would only fail later, where it is used."""
    if not text.strip():
        raise ValueError(f"expected text, got {describe(text)}")
    return text


def _rotation(rotation: str) -> str:
    """loguru's own rotation syntax, checked by loguru now: it would refuse it only at start,
    after `stylebox check` said the file was fine. A handler that never writes (delay, and a
    filter that takes no record) is added to parse it, and removed."""
    path = Path(tempfile.gettempdir()) / "stylebox-rotation-check.log"
    try:
        handler = logger.add(path, rotation=rotation, delay=True, filter=lambda _: False)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a rotation loguru reads ({error})") from None
    logger.remove(handler)
    return rotation


def _upper(value: Any) -> Any:
    """Log levels in any case, given back as loguru spells them."""
    known = isinstance(value, str) and value.upper() in get_args(LogLevel)
    return value.upper() if known else value


# A section whose keys are all commented out is YAML's null: its defaults, as if it were empty.
Section = BeforeValidator(lambda value: {} if value is None else value)
Folder = Annotated[Path, BeforeValidator(_path)]
ExistingFile = Annotated[Path, BeforeValidator(_existing_file)]
PresetName = Annotated[str, AfterValidator(_folder_name)]
PresetRef = Annotated[str, AfterValidator(_known_preset)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Text = Annotated[str, AfterValidator(_not_blank)]


# --- presets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleImage:
    """One painting of a preset and its share of the blended style (shares sum to 1)."""

    path: Path
    weight: float = 1.0


class StyleEntry(BaseModel):
    """One painting as the file gives it: a path, or {image: path, weight: number > 0}."""

    model_config = STRICT
    image: ExistingFile = Field(description="the style image's path")
    weight: Weight = 1.0


# Settings added after the fingerprint's first version count only when set away from their
# default: an upgrade that brings a new setting must not redo every finished photo.
ADDED_SINCE_VERSION_1 = {"finish": ENGINE.finish}


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
        for name, default in ADDED_SINCE_VERSION_1.items():
            if settings[name] == default:
                del settings[name]
        if settings["weights"] not in WEIGHT_SOURCES:
            settings["weights"] = {"sha256": sha256_file(Path(settings["weights"]))}
        styles = [{"sha256": sha256_file(s.path), "weight": s.weight} for s in self.styles]
        document = {"version": 1, "settings": settings, "styles": styles}
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class PresetModel(BaseModel):
    """A preset as the file spells it: `style` plus any StyleSettings field (its default else)."""

    model_config = STRICT
    style: Annotated[
        list[StyleEntry],
        _at_least_one("expected an image path or a list of {image: path, weight: number}"),
        BeforeValidator(_style_entries),
    ] = Field(description="a style image path, or a list of {image: path, weight: number}")
    alpha: NonNegative = ENGINE.alpha
    beta: NonNegative = ENGINE.beta
    content_layers: Layers = ENGINE.content_layers
    style_layers: Annotated[
        tuple[tuple[str, float], ...], Strict(False), BeforeValidator(_weighted_layers)
    ] = ENGINE.style_layers
    size: Annotated[int, Field(ge=16, le=8192)] = ENGINE.size
    style_scale: Annotated[float, Field(gt=0, le=4, allow_inf_nan=False)] = ENGINE.style_scale
    colour: ColourMode = ENGINE.colour
    tv_weight: NonNegative = ENGINE.tv_weight
    optimizer: OptimizerName = ENGINE.optimizer
    steps: Annotated[int, Field(ge=1)] | None = ENGINE.steps
    finish: Finish = ENGINE.finish
    seed: Annotated[int, Field(ge=0, le=2**64 - 1)] = ENGINE.seed  # torch.manual_seed's range
    init: InitMode = ENGINE.init
    pooling: Pooling = ENGINE.pooling
    weights: Annotated[str, BeforeValidator(_weights)] = ENGINE.weights

    @field_validator("beta")
    @classmethod
    def _something_to_optimise(cls, beta: float, info: ValidationInfo) -> float:
        """alpha and beta both 0 leave nothing to optimise (alpha is checked first)."""
        check_weights(info.data.get("alpha"), beta)
        return beta

    def to_preset(self, name: str) -> Preset:
        """The preset the engine runs: style weights normalised to sum to 1."""
        total = sum(entry.weight for entry in self.style)
        styles = tuple(StyleImage(entry.image, entry.weight / total) for entry in self.style)
        settings = StyleSettings(**{key: value for key, value in self if key != "style"})
        return Preset(name, styles, settings)


_PRESETS = TypeAdapter(
    Annotated[dict[PresetName, PresetModel], _at_least_one("at least one preset is needed")]
)


def _presets(value: Any, info: ValidationInfo) -> Mapping[str, Preset]:
    """The presets in file order, read-only."""
    models = _PRESETS.validate_python(value, context=info.context)
    return MappingProxyType({name: model.to_preset(name) for name, model in models.items()})


Presets = Annotated[
    Mapping[str, Preset],
    PlainValidator(_presets, json_schema_input_type=dict[str, PresetModel]),
    Field(description="at least one preset"),
]


# --- sections -------------------------------------------------------------------------------------


class RoutingRule(BaseModel):
    """A case-insensitive fnmatch glob on the inbox-relative POSIX path (`*` crosses folders)."""

    model_config = STRICT
    pattern: Annotated[str, AfterValidator(_relative_pattern)] = Field(
        description="a glob on the path relative to the inbox, e.g. '*.png'"
    )
    preset: PresetRef = Field(description="the preset for photos that match")

    def matches(self, relative: PurePath) -> bool:
        """Whether the photo at `relative` (to the inbox) falls under this rule."""
        return fnmatch.fnmatchcase(relative.as_posix().casefold(), self.pattern.casefold())


class Routing(BaseModel):
    """Which preset a photo gets: its inbox subfolder, else the first matching rule, else policy."""

    model_config = STRICT
    default_preset: PresetRef | None = None
    rules: Annotated[
        tuple[RoutingRule, ...], Strict(False), BeforeValidator(lambda v: () if v is None else v)
    ] = ()
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


class WatchSettings(BaseModel):
    """How the inbox is watched: native events, polling (NAS shares), or native with a fallback."""

    model_config = STRICT
    mode: Literal["auto", "native", "poll"] = "auto"
    poll_interval_seconds: Seconds = 5.0
    settle_seconds: Seconds = 2.0  # a file must stay unchanged this long before it is taken
    rescan_interval_seconds: Seconds = 300.0  # a full scan catches events the watcher missed


class OutputSettings(BaseModel):
    """How results are written: format, quality, name and permissions."""

    model_config = STRICT
    format: Literal["jpeg", "png", "tiff"] = "jpeg"
    quality: Annotated[int, Field(ge=1, le=100)] = 92  # JPEG only
    bit_depth: BitDepth = 8
    name_pattern: Annotated[str, AfterValidator(_name_pattern)] = (
        "{stem}"  # {stem} {preset} {hash8}
    )
    file_mode: Annotated[int, BeforeValidator(_octal_mode)] = 0o644

    @field_validator("bit_depth")
    @classmethod
    def _format_holds_it(cls, bit_depth: int, info: ValidationInfo) -> int:
        """16 bits per channel only where the format holds them (unchecked while format is bad)."""
        held = info.data.get("format")
        if bit_depth == 16 and held not in (None, "tiff"):
            raise ValueError(f"16 bits need format tiff; {held} holds 8")
        return bit_depth

    @property
    def ext(self) -> str:
        """The file extension for the format, without the dot."""
        return _EXTENSIONS[self.format]


class OriginalsSettings(BaseModel):
    """What happens to a photo once its result is durable; move_to None: <outbox>/originals."""

    model_config = STRICT
    policy: Literal["keep", "move", "delete"] = "move"
    move_to: Folder | None = None


class RetrySettings(BaseModel):
    """Retries of transient failures: the n-th retry waits backoff_seconds * 2**(n-1)."""

    model_config = STRICT
    max_attempts: Annotated[int, Field(ge=1)] = 3
    backoff_seconds: NonNegative = 30.0


class LogSettings(BaseModel):
    """Logging; file logs go to <outbox>/logs/ with loguru's rotation and retention."""

    model_config = STRICT
    level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    file: bool = True
    rotation: Annotated[Text, AfterValidator(_rotation)] = "10 MB"  # "10 MB", "1 week", ...
    retention: Annotated[int, Field(ge=1)] = 5  # log files kept


MIN_TOKEN_CHARACTERS = 16


def _listen(value: str) -> str:
    """host:port with an IP address or localhost for host ([...] for IPv6), port 0-65535."""
    host, separator, port = value.rpartition(":")
    if not separator or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port (such as 127.0.0.1:8750), got {value!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare != "localhost":
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            raise ValueError(
                f"{host!r}: expected an IP address ([...] for IPv6) or localhost"
            ) from None
        if address.version == 6 and bare == host:
            raise ValueError(f"an IPv6 address goes in brackets: [{host}]:{port}")
    return value


def _token_file(value: Any, info: ValidationInfo) -> Path:
    """A readable file holding the token, long enough not to be guessed."""
    path = _existing_file(value, info)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read it: {error}") from error
    if len(token) < MIN_TOKEN_CHARACTERS or any(c.isspace() for c in token):
        raise ValueError(
            f"{path}: the token must be one word of at least {MIN_TOKEN_CHARACTERS} characters "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return path


def _host_name(name: str) -> str:
    """A name the page may be reached by, as a browser sends it in Host (without the port)."""
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"{name!r}: expected a host name or address, such as nas.local")
    return name.lower()


class WebSettings(BaseModel):
    """The web page inside `stylebox run`; without a token file it is read-only. `hosts`: the
    names it answers to besides loopback ones and the listen address (a page elsewhere can
    reach it through a DNS name rebound to this machine otherwise); empty with a non-loopback
    listen: any name, with a warning."""

    model_config = STRICT
    enabled: bool = True
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:8750"
    token_file: Annotated[Path, BeforeValidator(_token_file)] | None = None
    hosts: Annotated[
        tuple[Annotated[str, Strict(), AfterValidator(_host_name)], ...], Strict(False)
    ] = ()

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].removeprefix("[").removesuffix("]")

    @property
    def port(self) -> int:
        """0 lets the system choose (the log names the port)."""
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        """Only this machine can reach it."""
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback


EventType = Literal[
    "photo.done",
    "photo.quarantined",
    "photo.failed",
    "photo.duplicate",
    "daemon.started",
    "daemon.stopped",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
EventTypes = Annotated[tuple[EventType, ...], Strict(False), _at_least_one("event type")]


def _webhook_url(url: str) -> str:
    """An http(s) URL with a host, as urllib sends it; no user or password in it (urllib would
    not send them, and they would reach the log): put a secret in the path or use secret_file."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as error:
        raise ValueError(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
    if "@" in parts.netloc:
        raise ValueError("no user or password in the URL: urllib does not send them")
    return url


def _secret_file(value: Any, info: ValidationInfo) -> Path:
    """A readable file holding a non-empty secret."""
    path = _existing_file(value, info)
    try:
        secret = path.read_bytes().strip()
    except OSError as error:
        raise ValueError(f"{path}: cannot read it: {error.strerror}") from error
    if not secret:
        raise ValueError(f"{path}: empty; put the shared secret in it")
    return path


def _apprise_urls(value: Any) -> Any:
    """`apprise:` may be just its list of URLs."""
    return {"urls": value} if isinstance(value, list) else value


def _apprise_urls_usable(urls: tuple[str, ...]) -> tuple[str, ...]:
    """Apprise installed, and each URL one it knows (not shown: they hold passwords)."""
    if not urls:
        return urls
    if importlib.util.find_spec("apprise") is None:
        raise ValueError("needs Apprise: pip install 'stylebox[notify]'")
    import apprise

    for index, url in enumerate(urls):
        if not apprise.Apprise().add(url):
            raise ValueError(f"URL {index + 1} is not one Apprise knows (see its wiki's list)")
    return urls


class WebhookSettings(BaseModel):
    """POST each event as JSON; signed with HMAC-SHA256 when `secret_file` is set."""

    model_config = STRICT
    url: Annotated[str, AfterValidator(_webhook_url)]
    events: EventTypes = EVENT_TYPES
    secret_file: Annotated[Path, BeforeValidator(_secret_file)] | None = None
    timeout_seconds: Seconds = 10.0


class AppriseSettings(BaseModel):
    """Apprise URLs (ntfy://, tgram://, mailto://, json://, ...); `digest_minutes` > 0 sends
    one message per batch of events, at most one per that many minutes."""

    model_config = STRICT
    urls: Annotated[
        tuple[Annotated[str, Strict(), AfterValidator(_not_blank)], ...],
        Strict(False),
        AfterValidator(_apprise_urls_usable),
    ] = ()
    events: EventTypes = ("photo.done", "photo.quarantined", "photo.failed")
    digest_minutes: NonNegative = 0.0


class NotifySettings(BaseModel):
    """Where events go; each is delivered at least once (receivers de-duplicate by its id),
    retried with a growing wait for up to `give_up_after_hours`."""

    model_config = STRICT
    events_log: bool = False  # <outbox>/events.jsonl
    events_log_max_mb: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0
    webhooks: Annotated[tuple[WebhookSettings, ...], Strict(False)] = ()
    apprise: Annotated[AppriseSettings, BeforeValidator(_apprise_urls), Section] = Field(
        default_factory=AppriseSettings
    )
    give_up_after_hours: Seconds = 24.0

    @field_validator("webhooks")
    @classmethod
    def _one_of_each(cls, webhooks: tuple[WebhookSettings, ...]) -> tuple[WebhookSettings, ...]:
        """A URL once: its deliveries are kept under it."""
        urls = [hook.url for hook in webhooks]
        if len(set(urls)) < len(urls):
            raise ValueError("a URL is listed twice; give it once, with all its events")
        return webhooks


def _queue_url(url: str) -> str:
    """redis://, rediss:// (TLS) or unix:// with a host (or socket path), as redis-py reads it.
    A password may be in it (redis://:secret@host:6379/0): it is never logged (`shown_url`)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as error:
        raise ValueError(f"not a URL: {error}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {parts.scheme!r}")
    if not (parts.hostname if parts.scheme != "unix" else parts.path):
        raise ValueError("expected a host, such as redis://nas.local:6379/0")
    if "password" in urllib.parse.parse_qs(parts.query):
        raise ValueError("give the password as redis://:password@host (it is then never shown)")
    return url


class QueueSettings(BaseModel):
    """Several hosts on one inbox (Dramatiq on Redis). Without `url`, one process does it all.

    With it, `stylebox run` is the coordinator (watcher, journal, outbox records, originals) and
    `stylebox worker` on each GPU host stylises; a worker's `inbox` and `outbox` are where that
    host mounts the coordinator's. `heartbeat_seconds` is how long a worker may go unheard
    before its job is given to another."""

    model_config = STRICT
    url: Annotated[str, AfterValidator(_queue_url)] | None = None
    local_worker: bool = True
    heartbeat_seconds: Annotated[float, Field(ge=2, le=3600, allow_inf_nan=False)] = 60.0

    @property
    def shown_url(self) -> str:
        """The URL without its password, for logs and pages."""
        if self.url is None:
            return "none"
        parts = urllib.parse.urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{netloc}"))


# --- the whole file -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Common:
    """What every load of a config file checks; `path` is the file itself, set by the loader."""

    # The sections are strict models; the few plain values here are made strict one by one.
    __pydantic_config__ = ConfigDict(extra="forbid")
    path: Path
    presets: Presets
    device: Annotated[str, BeforeValidator(_device)] = "auto"
    max_input_pixels: Annotated[int, Strict(), Field(ge=1)] = DEFAULT_MAX_PIXELS
    routing: Annotated[Routing, Section, Field(validate_default=True)] = field(
        default_factory=Routing
    )
    watch: Annotated[WatchSettings, Section] = field(default_factory=WatchSettings)
    output: Annotated[OutputSettings, Section] = field(default_factory=OutputSettings)
    originals: Annotated[OriginalsSettings, Section] = field(default_factory=OriginalsSettings)
    retries: Annotated[RetrySettings, Section] = field(default_factory=RetrySettings)
    # Photos of one preset and output size stylised together, at most.
    batch_size: Annotated[int, Strict(), Field(ge=1)] = 1
    logging: Annotated[LogSettings, Section] = field(default_factory=LogSettings)
    web: Annotated[WebSettings, Section] = field(default_factory=WebSettings)
    notify: Annotated[NotifySettings, Section] = field(default_factory=NotifySettings)
    queue: Annotated[QueueSettings, Section] = field(default_factory=QueueSettings)

    @field_validator("batch_size")
    @classmethod
    def _retries_allow_batches(cls, batch_size: int, info: ValidationInfo) -> int:
        """A crash during a batch costs each of its photos an attempt before each runs alone."""
        retries = info.data.get("retries")
        if batch_size > 1 and retries is not None and retries.max_attempts < 2:
            raise ValueError(
                f"{batch_size} needs retries.max_attempts of 2 or more: a crash during a batch "
                "costs each of its photos an attempt before each runs again alone"
            )
        return batch_size


@dataclass(frozen=True, kw_only=True)
class PresetsConfig(_Common):
    """A presets-only load (`stylebox stylize --preset`): the folders may be left out."""

    inbox: Folder | None = None
    outbox: Folder | None = None
    state_dir: Folder | None = None


_FOLDER = "a folder path, to run the daemon"


@dataclass(frozen=True, kw_only=True)
class Config(_Common):
    """The daemon's config; paths are absolute and resolved."""

    inbox: Annotated[Folder, Field(description=_FOLDER)]
    outbox: Annotated[Folder, Field(description=_FOLDER)]
    state_dir: Annotated[Folder, Field(description=_FOLDER)]

    @field_validator("routing")
    @classmethod
    def _photos_have_a_preset(cls, routing: Routing) -> Routing:
        """unmatched 'default' needs a default preset."""
        if routing.unmatched == "default" and routing.default_preset is None:
            message = (
                "required while routing.unmatched is 'default' (or set unmatched to ignore or "
                "quarantine)"
            )
            raise _errors_at([(("default_preset",), message)])
        return routing

    @model_validator(mode="wrap")
    @classmethod
    def _no_loops(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo):
        """Refuse folder layouts where the daemon would feed on its own files, along with the
        file's other problems (an after-validator would only run once all of those are fixed)."""
        try:
            config = handler(data)
        except ValidationError as error:
            problems = _raw_layout_problems(data, info)
            if not problems:
                raise
            raise _errors_at(problems, error) from None
        if problems := _config_layout_problems(config):
            raise _errors_at(problems)
        return config

    @property
    def quarantine_dir(self) -> Path:
        """Where photos that cannot be stylised go, with an error sidecar."""
        return self.outbox / FAILED_DIR

    @property
    def log_dir(self) -> Path:
        """Where file logs go."""
        return self.outbox / LOGS_DIR

    @property
    def originals_dir(self) -> Path:
        """Where originals are moved under the "move" policy."""
        return self.originals.move_to or self.outbox / ORIGINALS_DIR

    @property
    def journal_path(self) -> Path:
        """The SQLite journal in state_dir (local disk: SQLite locking is unsafe on shares)."""
        return self.state_dir / JOURNAL_NAME


Problems = list[tuple[tuple[str, ...], str]]


def _layout_problems(
    inbox: Path | None, outbox: Path | None, state_dir: Path | None, move_to: Path | None
) -> Problems:
    """Folders where the daemon would feed on its own files; a folder not known is not checked."""
    if inbox is None:
        return []
    again = "would be stylised again"
    problems: Problems = []
    if outbox is not None:
        if inbox == outbox:
            problems.append(
                (("outbox",), f"the same folder as inbox ({inbox}): results would loop")
            )
        elif outbox.is_relative_to(inbox):
            problems.append((("outbox",), f"inside inbox ({inbox}): results {again}"))
        elif inbox.is_relative_to(outbox):
            problems.append((("inbox",), f"inside outbox ({outbox}): results {again}"))
    if state_dir is not None and state_dir.is_relative_to(inbox):
        problems.append((("state_dir",), f"inside inbox ({inbox}): the journal would be a photo"))
    if move_to is not None and move_to.is_relative_to(inbox):
        problems.append(
            (("originals", "move_to"), f"inside inbox ({inbox}): moved originals {again}")
        )
    return problems


def _config_layout_problems(config: "Config") -> Problems:
    """`_layout_problems` of a built config's folders (originals.move_to only when moving)."""
    move_to = config.originals.move_to if config.originals.policy == "move" else None
    return _layout_problems(config.inbox, config.outbox, config.state_dir, move_to)


def layout_problems(config: "Config") -> list[str]:
    """`dotted.field: message` for each loop in a config built in code (a reload's merge of
    the new file with the old folders, which no validator sees)."""
    return [f"{'.'.join(loc)}: {message}" for loc, message in _config_layout_problems(config)]


def _raw_layout_problems(data: Any, info: ValidationInfo) -> Problems:
    """`_layout_problems` of the folders as the file gives them, for a file with other faults."""
    if not isinstance(data, dict):
        return []

    def folder(value: Any) -> Path | None:
        try:
            return _path(value, info) if value is not None else None
        except ValueError:
            return None  # reported as the folder's own problem

    originals = data.get("originals") if isinstance(data.get("originals"), dict) else {}
    moving = originals.get("policy", "move") == "move"
    return _layout_problems(
        folder(data.get("inbox")),
        folder(data.get("outbox")),
        folder(data.get("state_dir")),
        folder(originals.get("move_to")) if moving else None,
    )


def _errors_at(problems: Problems, other: ValidationError | None = None) -> ValidationError:
    """Problems found by one validator at other fields than its own, with those pydantic found
    (`other`), as one ValidationError."""
    details = [
        InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {}))
        for e in (other.errors() if other is not None else [])
    ]
    details += [
        InitErrorDetails(type="value_error", loc=loc, input=None, ctx={"error": message})
        for loc, message in problems
    ]
    return ValidationError.from_exception_data("Config", details)
