"""The config: YAML -> validated, frozen models, every problem reported as `file:line: field`."""

from daemon.config.load import ConfigErrors, load_config, load_presets, parse_preset
from daemon.config.models import JOURNAL_NAME, Config, PresetsConfig, layout_problems
from daemon.config.presets import VGG19_LAYERS, Preset, StyleImage
from daemon.config.sections import Routing, RoutingRule

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
