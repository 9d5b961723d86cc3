"""The config: YAML -> validated, frozen models, every problem reported as `file:line: field`."""

from daemon.config.load import ConfigErrors, load_config, load_presets, parse_preset
from daemon.config.models import (
    JOURNAL_NAME,
    VGG19_LAYERS,
    Config,
    Preset,
    PresetsConfig,
    Routing,
    RoutingRule,
    StyleImage,
    layout_problems,
)

__all__ = [
    "JOURNAL_NAME",
    "VGG19_LAYERS",
    "Config",
    "ConfigErrors",
    "Preset",
    "PresetsConfig",
    "Routing",
    "RoutingRule",
    "StyleImage",
    "layout_problems",
    "load_config",
    "load_presets",
    "parse_preset",
]
