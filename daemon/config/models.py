"""The whole config file: `Config` for the daemon, `PresetsConfig` for a presets-only load.

Sections are frozen, strict pydantic models (no "12" for 12, no true for 1, no unknown keys), one
module each kind: `presets`, `notify`, `sections`. The top level is a frozen dataclass that
pydantic validates, because the service copies a config with `dataclasses.replace`.

Validators read the file's folder and its preset names from the validation context, so a rule
that needs them is checked even while other values are wrong: every problem is found at once.
Validation is pure; what needs the machine (loguru, Apprise, the secrets' contents) is asked
by `checks.machine_problems`, apart, when the caller loads with `check_machine=True`. Kept free
of torch: `stylebox check` stays light.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from daemon.config.notify import EVENT_TYPES, AppriseSettings, NotifySettings, WebhookSettings
from daemon.config.outputs import FAILED_DIR, LOGS_DIR, ORIGINALS_DIR
from daemon.config.paintings import Painting
from daemon.config.presets import (
    VGG19_LAYERS,
    Preset,
    PresetModel,
    Presets,
    StyleImage,
    check_weights,
)
from daemon.config.sections import (
    BitDepth,
    LogSettings,
    OriginalsSettings,
    OutputSettings,
    QueueSettings,
    RetrySettings,
    Routing,
    RoutingRule,
    WatchSettings,
    WebSettings,
)
from daemon.config.values import Folder, Section, describe, from_context, resolved_path
from daemon.media.files import DEFAULT_MAX_PIXELS

# What the daemon's modules import from here; each is defined in the module named above.
__all__ = [
    "EVENT_TYPES",
    "JOURNAL_NAME",
    "VGG19_LAYERS",
    "AppriseSettings",
    "BitDepth",
    "Config",
    "OutputSettings",
    "Preset",
    "PresetModel",
    "PresetsConfig",
    "QueueSettings",
    "Routing",
    "RoutingRule",
    "StyleImage",
    "WebhookSettings",
    "check_weights",
    "layout_problems",
]

JOURNAL_NAME = "journal.sqlite3"
LOADERS_FIELDS = frozenset({"path", "paintings_seen"})  # set by the loader, never by the file
_DEVICE = re.compile(r"auto|cpu|cuda|cuda:[0-9]+")
_FOLDER = "a folder path, to run the daemon"
Problems = list[tuple[tuple[str, ...], str]]


def _device(value: Any) -> Any:
    """auto, cpu, cuda or cuda:N."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {describe(value)}")
    return value


@dataclass(frozen=True, kw_only=True)
class _Common:
    """What every load of a config file checks; `path` is the file itself, set by the loader,
    as is `paintings_seen`: what became of each file in the paintings folder (paintings.py),
    whose presets follow the file's own in `presets`."""

    # The sections are strict models; the few plain values here are made strict one by one.
    __pydantic_config__ = ConfigDict(extra="forbid")
    path: Path
    presets: Presets
    # A folder whose images are presets too (paintings.py); none: only the file's presets.
    paintings: Folder | None = None
    paintings_seen: tuple[Painting, ...] = ()
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


@dataclass(frozen=True, kw_only=True)
class Config(_Common):
    """The daemon's config; paths are absolute and resolved."""

    inbox: Annotated[Folder, Field(description=_FOLDER)]
    outbox: Annotated[Folder, Field(description=_FOLDER)]
    state_dir: Annotated[Folder, Field(description=_FOLDER)]

    @field_validator("routing")
    @classmethod
    def _photos_have_a_preset(cls, routing: Routing, info: ValidationInfo) -> Routing:
        """unmatched 'default' needs a default preset: the only preset, when there is one,
        since there is no choice to make (`stylebox check` says where photos go)."""
        if routing.unmatched != "default" or routing.default_preset is not None:
            return routing
        names = from_context(info, "preset_names", None)
        if names is None:  # a config built in code: its presets, if they were valid
            names = tuple(info.data.get("presets") or ())
        if len(names) == 1 and isinstance(names[0], str):
            return routing.model_copy(update={"default_preset": names[0]})
        message = (
            "required while routing.unmatched is 'default', unless there is only one preset "
            "(or set unmatched to ignore or quarantine)"
        )
        raise _errors_at([(("default_preset",), message)])

    @model_validator(mode="wrap")
    @classmethod
    def _no_loops(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo):
        """Refuse folder layouts where the daemon would feed on its own files, along with the
        file's other problems: checked on the values as the file gives them, so it runs
        whether the rest is valid or not."""
        loops = _folder_loops(data, info) if isinstance(data, Mapping) else []
        try:
            config = handler(data)
        except ValidationError as error:
            if not loops:
                raise
            raise _errors_at(loops, error) from None
        if loops:
            raise _errors_at(loops)
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


def layout_problems(config: Config) -> list[str]:
    """`dotted.field: message` for each loop in a config built by `dataclasses.replace` (a
    reload's merge of the new file with the old folders, which no validator sees)."""
    return [f"{'.'.join(loc)}: {message}" for loc, message in _folder_loops(vars(config), None)]


def _folder_loops(values: Mapping[str, Any], info: ValidationInfo | None) -> Problems:
    """Folders where the daemon would feed on its own files, from the top-level values as a
    file gives them or as a config holds them; a folder not given, or not a path (reported as
    its own problem), is not checked."""

    def folder(value: Any) -> Path | None:
        try:
            return resolved_path(value, info) if value is not None else None
        except ValueError:
            return None

    originals = values.get("originals")
    if isinstance(originals, OriginalsSettings):
        originals = dict(originals)
    originals = originals if isinstance(originals, Mapping) else {}
    moving = originals.get("policy", "move") == "move"
    inbox, outbox = folder(values.get("inbox")), folder(values.get("outbox"))
    paintings = folder(values.get("paintings"))
    state_dir = folder(values.get("state_dir"))
    move_to = folder(originals.get("move_to")) if moving else None
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
    if paintings is not None and paintings.is_relative_to(inbox):
        problems.append(
            (("paintings",), f"inside inbox ({inbox}): paintings would be stylised as photos")
        )
    if state_dir is not None and state_dir.is_relative_to(inbox):
        problems.append((("state_dir",), f"inside inbox ({inbox}): the journal would be a photo"))
    if move_to is not None and move_to.is_relative_to(inbox):
        problems.append(
            (("originals", "move_to"), f"inside inbox ({inbox}): moved originals {again}")
        )
    return problems


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
