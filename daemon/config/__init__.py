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
    "load_config",
    "load_presets",
    "parse_preset",
]
