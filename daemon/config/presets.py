"""Presets: a preset as the file spells it (`PresetModel`) and the `Preset` the engine runs.

`PresetModel`'s settings are `StyleSettings`' own fields, read from the dataclass: their names,
order, types and defaults are written once, in the engine. What a file may give beyond a field's
type (bounds, a list of layers for weighted pairs) is added here, in `_AS_THE_FILE_GIVES_IT`;
a setting added to the engine is a preset key at once, checked by its type.
Kept free of torch (and of `daemon.engine.vgg`, which imports it): `stylebox check` stays light.
"""

import dataclasses
import hashlib
import json
import re
import typing
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
)

from daemon.config.outputs import RESERVED_FOLDERS
from daemon.config.values import (
    STRICT,
    ExistingFile,
    NonNegative,
    Positive,
    at_least_one,
    describe,
    existing_file,
    from_context,
    one_or_list,
    suggestion,
)
from daemon.engine.settings import FULL_SIZE, StyleSettings
from daemon.media.files import sha256_file

ENGINE = StyleSettings()  # the engine's defaults, which a preset starts from
WeightSource = Literal["caffe", "torchvision"]
WEIGHT_SOURCES: tuple[str, ...] = get_args(WeightSource)
_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _vgg19_layer_names() -> tuple[str, ...]:
    """VGG-19's layers in the paper's names: blocks 1-2 have two convolutions, blocks 3-5 four."""
    names: list[str] = []
    for block, convolutions in enumerate((2, 2, 4, 4, 4), start=1):
        for index in range(1, convolutions + 1):
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG19_LAYERS = _vgg19_layer_names()  # daemon.engine.vgg.LAYER_NAMES, without importing torch


def check_weights(alpha: float | None, beta: float) -> None:
    """alpha and beta both 0 leave nothing to optimise (for a preset and the CLI's overrides)."""
    if alpha == 0 and beta == 0:
        raise ValueError("alpha and beta cannot both be 0: nothing would be optimised")


def _layer(name: str) -> str:
    """A VGG-19 layer name."""
    if name not in VGG19_LAYERS:
        hint = suggestion(name, VGG19_LAYERS) or " (e.g. relu4_2)"
        raise ValueError(f"not a VGG-19 layer: {name!r}{hint}")
    return name


def _distinct(layers: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse a layer listed twice."""
    if len(set(layers)) < len(layers):
        raise ValueError("a layer is listed twice")
    return layers


Layer = Annotated[str, AfterValidator(_layer)]
Layers = Annotated[
    tuple[Layer, ...],
    Strict(False),  # a YAML list is a tuple here; the items stay strict
    at_least_one("expected at least one layer"),
    AfterValidator(_distinct),
    BeforeValidator(one_or_list),
]
_LAYERS = TypeAdapter(Layers, config=STRICT)
_LAYER_WEIGHTS = TypeAdapter(
    Annotated[dict[Layer, Positive], at_least_one("expected at least one layer")], config=STRICT
)


def _full_size(value: Any) -> Any:
    """`size: full`, the photo's own size, as the engine's FULL_SIZE; a number as it is, up to
    8192 px (a bigger output is `full` of a bigger photo)."""
    if value == "full":
        return FULL_SIZE
    if isinstance(value, int) and not isinstance(value, bool) and value > 8192:
        raise ValueError(f"expected at most 8192 px, or full (the photo's own size), got {value}")
    return value


def _layers(value: Any) -> Any:
    """Layer names (one may stand for a list of one), each a VGG-19 layer, each once."""
    return _LAYERS.validate_python(value)


def _weighted_layers(value: Any) -> Any:
    """A list of layers (equal weights 1/n, the paper's choice) or a map layer -> weight > 0."""
    if isinstance(value, dict):
        return tuple(_LAYER_WEIGHTS.validate_python(value).items())
    layers = _LAYERS.validate_python(value)
    return tuple((name, 1 / len(layers)) for name in layers)


def _weights(value: Any, info: ValidationInfo) -> str:
    """A weight source, or the path of an existing weights file."""
    if value in WEIGHT_SOURCES:
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected caffe, torchvision or a file path, got {describe(value)}")
    try:
        return str(existing_file(value, info))
    except ValueError as error:
        raise ValueError(f"expected caffe, torchvision or a file; {error}") from None


def _style_entries(value: Any) -> Any:
    """One path, or a list of paths and {image, weight} mappings, as a list of mappings."""
    entries = one_or_list(value)
    if not isinstance(entries, list):
        return entries
    return [{"image": entry} if isinstance(entry, str) else entry for entry in entries]


def check_preset_name(name: str) -> None:
    """Raise ValueError unless `name` can be a folder in the inbox and the outbox (for the
    config's presets and the paintings folder's)."""
    if not _PRESET_NAME.fullmatch(name):
        raise ValueError(
            "a preset name is a folder name: 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if name.casefold() in RESERVED_FOLDERS:
        raise ValueError(f"{name!r} is reserved for the outbox's own folders; choose another name")


def _folder_name(name: str, info: ValidationInfo) -> str:
    """A preset name is a folder name in the inbox and outbox: safe, and distinct in any case."""
    check_preset_name(name)
    # Two presets whose folders differ only in case collide on case-insensitive shares.
    for earlier in from_context(info, "preset_names", ()):
        if earlier == name:
            break
        if isinstance(earlier, str) and earlier.casefold() == name.casefold():
            raise ValueError(f"differs from preset {earlier!r} only in case")
    return name


def _known_preset(name: str, info: ValidationInfo) -> str:
    """A preset the file defines (any name, for a model built in code)."""
    names = from_context(info, "preset_names", None)
    if names is not None and name not in names:
        raise ValueError(f"no preset named {name!r}{suggestion(name, names)}")
    return name


PresetName = Annotated[str, AfterValidator(_folder_name)]
PresetRef = Annotated[str, AfterValidator(_known_preset)]


@dataclasses.dataclass(frozen=True)
class StyleImage:
    """One painting of a preset and its share of the blended style (shares sum to 1)."""

    path: Path
    weight: float = 1.0


class StyleEntry(BaseModel):
    """One painting as the file gives it: a path, or {image: path, weight: number > 0}."""

    model_config = STRICT
    image: ExistingFile = Field(description="the style image's path")
    weight: Positive = 1.0


# Settings added after the fingerprint's first version count only when set away from their
# default: an upgrade that brings a new setting must not redo every finished photo.
ADDED_SINCE_VERSION_1 = {"finish": ENGINE.finish, "single_scale": ENGINE.single_scale}


@dataclasses.dataclass(frozen=True)
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


_NON_NEGATIVE = get_args(NonNegative)[1:]  # its bounds, without its type
# What a file may give beyond each StyleSettings field's type, added to it as Annotated metadata.
_AS_THE_FILE_GIVES_IT: dict[str, tuple[Any, ...]] = {
    "alpha": _NON_NEGATIVE,
    "beta": _NON_NEGATIVE,
    "content_layers": (BeforeValidator(_layers),),
    "style_layers": (Strict(False), BeforeValidator(_weighted_layers)),
    "size": (BeforeValidator(_full_size), Field(ge=16, le=FULL_SIZE)),
    "style_scale": (Field(gt=0, le=4, allow_inf_nan=False),),
    "tv_weight": _NON_NEGATIVE,
    "steps": (Field(ge=1),),
    "seed": (Field(ge=0, le=2**64 - 1),),  # torch.manual_seed's range
    "weights": (BeforeValidator(_weights),),
}
_SETTINGS = tuple(field.name for field in dataclasses.fields(StyleSettings))


class _PresetKeys(BaseModel):
    """A preset's own key, `style`; the settings' keys are added from StyleSettings below."""

    model_config = STRICT
    style: Annotated[
        list[StyleEntry],
        at_least_one("expected an image path or a list of {image: path, weight: number}"),
        BeforeValidator(_style_entries),
    ] = Field(description="a style image path, or a list of {image: path, weight: number}")

    # The field is made by create_model, after this class: hence check_fields=False.
    @field_validator("beta", check_fields=False)
    @classmethod
    def _something_to_optimize(cls, beta: float, info: ValidationInfo) -> float:
        """alpha and beta both 0 leave nothing to optimise (alpha is checked first)."""
        check_weights(info.data.get("alpha"), beta)
        return beta

    def to_preset(self, name: str) -> Preset:
        """The preset the engine runs: style weights normalised to sum to 1."""
        total = sum(entry.weight for entry in self.style)
        styles = tuple(StyleImage(entry.image, entry.weight / total) for entry in self.style)
        settings = StyleSettings(**{key: getattr(self, key) for key in _SETTINGS})
        return Preset(name, styles, settings)


def _preset_model() -> type[_PresetKeys]:
    """`style` plus each StyleSettings field, in its order: its type with the file's rules
    added, its default the engine's. A rule for a field the engine no longer has is an error
    here, at import, rather than a key that silently stops being checked."""
    if unknown := set(_AS_THE_FILE_GIVES_IT) - set(_SETTINGS):
        raise TypeError(f"preset rules for no StyleSettings field: {sorted(unknown)}")
    hints = typing.get_type_hints(StyleSettings)
    fields: dict[str, Any] = {}
    for name in _SETTINGS:
        rules = _AS_THE_FILE_GIVES_IT.get(name, ())
        kind = Annotated[(hints[name], *rules)] if rules else hints[name]
        fields[name] = (kind, getattr(ENGINE, name))
    return create_model(
        "PresetModel",
        __base__=_PresetKeys,
        __doc__="A preset as the file spells it: `style` plus any StyleSettings field "
        "(its default else).",
        __module__=__name__,
        **fields,
    )


PresetModel = _preset_model()

_PRESETS = TypeAdapter(
    Annotated[dict[PresetName, PresetModel], at_least_one("at least one preset is needed")]
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
