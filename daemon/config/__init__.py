"""The config: YAML -> validated, frozen models, every problem reported as `file:line: field`."""

from daemon.config.model import (
    JOURNAL_NAME,
    VGG19_LAYERS,
    Config,
    ConfigErrors,
    Preset,
    Routing,
    RoutingRule,
    StyleImage,
    load_config,
    parse_preset,
)

__all__ = [
    "JOURNAL_NAME",
    "VGG19_LAYERS",
    "Config",
    "ConfigErrors",
    "Preset",
    "Routing",
    "RoutingRule",
    "StyleImage",
    "load_config",
    "parse_preset",
]
