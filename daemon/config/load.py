"""Loading a config file: YAML -> the models, every problem at once as `file:line: field: message`.

pydantic finds the problems and names them by location; this module only turns a location into
the file's line (yaml_lines.locate) and adds what pydantic cannot know: the value as the user
wrote it ("got ..."), what a required key is for, and where an unknown key belongs.

Containers configure by environment: every scalar setting may be given as STYLEBOX_<KEY> (a
top-level one) or STYLEBOX_<SECTION>_<KEY>, overriding the file, checked like it, and a problem
in one is named by its variable.
"""

import difflib
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError
from yaml.nodes import Node

from daemon.config import yaml_lines
from daemon.config.checks import machine_problems
from daemon.config.models import LOADERS_FIELDS, Config, PresetsConfig
from daemon.config.paintings import with_paintings
from daemon.config.presets import Preset, PresetModel
from daemon.config.values import describe, suggestion
from daemon.errors import ConfigError

C = TypeVar("C", Config, PresetsConfig)
ENV_PREFIX = "STYLEBOX_"
_SCALARS = {"string", "integer", "number", "boolean"}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_EXTRA = {"extra_forbidden", "unexpected_keyword_argument"}
_MISSING = {"missing", "missing_keyword_only_argument"}
_MAPPING = {"model_type", "dataclass_type", "dict_type"}  # pydantic's words name our classes
_ANY_KEY, _ANY_ITEM = "<name>", "[n]"


class ConfigErrors(ConfigError):
    """Every problem found in one config, one per line of the message, sorted by line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


def load_config(
    path: Path, environ: Mapping[str, str] = os.environ, *, check_machine: bool = False
) -> Config:
    """Read and check the daemon's config file, with the environment's STYLEBOX_* settings
    over it: its folders are required. Reading it touches nothing else; with `check_machine`
    (`stylebox check`, the daemon's start and reload) what the config asks of the machine is
    checked too (`checks.machine_problems`), each problem cited like the file's own."""
    return _load(path, Config, environ, check_machine=check_machine)


def load_presets(path: Path) -> PresetsConfig:
    """Read and check a config file for its presets only (one-shot runs need no folders)."""
    return _load(path, PresetsConfig, {})


def parse_preset(
    name: str,
    raw: dict[str, Any],
    base_dir: Path,
    *,
    file: Path | None = None,
    root: Node | None = None,
) -> Preset:
    """A preset from a mapping, by the config file's rules, paths relative to base_dir. Its
    problems are cited as `file:line: key: message` when it was read from a file of its own (a
    painting's sidecar: `root` its nodes), else as `presets.<name>.key: message` (for code that
    has no file, such as the tests and the web API)."""
    context = {"base_dir": base_dir.resolve(), "preset_names": (name,)}
    try:
        return PresetModel.model_validate(raw, context=context).to_preset(name)
    except ValidationError as error:
        found = _problems(error, PresetsConfig, root, ("presets", name))
        if file is None:
            raise ConfigErrors([f"{dotted}: {message}" for _, dotted, message in found]) from None
        raise ConfigErrors(
            [f"{file}:{line}: {dotted + ': ' if dotted else ''}{m}" for line, dotted, m in found]
        ) from None


def _load(
    path: Path, kind: type[C], environ: Mapping[str, str], *, check_machine: bool = False
) -> C:
    """The file, with `environ`'s settings over it, checked as `kind` (then, with
    `check_machine`, against the machine), or ConfigErrors with all of its problems."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigErrors([f"{shown}: no such config file"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigErrors([f"{shown}: cannot read the config: {error}"]) from error
    try:
        raw, root = yaml_lines.load(text)
    except yaml.YAMLError as error:
        raise ConfigErrors([yaml_lines.yaml_error_message(shown, error)]) from None
    resolved = path.resolve()
    raw = {} if raw is None else raw  # an empty file: an empty mapping, missing its presets
    document, problems = raw, []
    given: dict[str, str] = {}  # dotted field -> the variable that set it
    unknown: list[str] = []  # STYLEBOX_ variables that name no setting
    if isinstance(raw, dict):
        for key in LOADERS_FIELDS & raw.keys():  # the file's own path (and so on): the loader's
            line, _ = yaml_lines.locate(root, (key,))
            problems.append((line, key, "unknown key"))
        overrides, given, unknown = _from_environment(environ, kind)
        document = {**_merged(raw, overrides), "path": resolved}
    presets = document.get("presets") if isinstance(document, dict) else None
    context = {
        "base_dir": resolved.parent,
        "preset_names": tuple(presets) if isinstance(presets, dict) else (),
    }
    try:
        config = TypeAdapter(kind).validate_python(document, context=context)
    except ValidationError as error:
        problems += _problems(error, kind, root, ())
    else:
        if check_machine and not (problems or unknown):  # a file's faults first: it may be wrong
            for loc, message in machine_problems(config):
                problems.append((*yaml_lines.locate(root, loc), message))
    if problems or unknown:
        problems.sort(key=lambda problem: (problem[1] not in given, problem[0]))
        where = [
            f"{name} (environment, over {shown}): no such setting{hint}" for name, hint in unknown
        ]
        where += [
            f"{given[dotted]} (environment, over {shown}): {dotted}: {m}"
            if dotted in given
            else f"{shown}:{line}: {dotted + ': ' if dotted else ''}{m}"
            for line, dotted, m in problems
        ]
        raise ConfigErrors(where)
    return with_paintings(config)  # after the file's own checks: a bad painting refuses nothing


def environment_names(kind: type = Config) -> dict[str, tuple[str, ...]]:
    """STYLEBOX_<KEY> or STYLEBOX_<SECTION>_<KEY> for every scalar setting, with its field."""
    names = {}
    for field, schema in _fields(kind).items():
        if len(field) <= 2 and field[0] != "presets" and _is_scalar(schema):
            names[ENV_PREFIX + "_".join(field).upper()] = field
    return names


def _is_scalar(schema: dict) -> bool:
    options = schema.get("anyOf", [schema])
    kinds = {option.get("type") for option in options} - {"null"}
    return bool(kinds) and kinds <= _SCALARS


def _from_environment(
    environ: Mapping[str, str], kind: type
) -> tuple[dict[tuple[str, ...], Any], dict[str, str], list[tuple[str, str]]]:
    """The settings the environment gives (an empty variable is not given), which variable
    gave each, and (name, hint) for each STYLEBOX_<SECTION>_... that names no setting (a
    STYLEBOX_ variable without a section's name is someone else's)."""
    names = environment_names(kind)
    sections = {field[0].upper() for field in names.values() if len(field) == 2}
    values, given, unknown = {}, {}, []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or value == "":
            continue
        field = names.get(name)
        if field is None:
            if name.removeprefix(ENV_PREFIX).split("_")[0] in sections:
                close = difflib.get_close_matches(name, list(names), n=1)
                unknown.append((name, f"; did you mean {close[0]!r}?" if close else ""))
            continue
        values[field] = _typed(value, _fields(kind)[field])
        given[".".join(field)] = name
    return values, given, unknown


def _typed(value: str, schema: dict) -> Any:
    """A variable's text as the setting's type, where it reads as one; else the text, for the
    setting's own check to refuse with the value shown."""
    kinds = {option.get("type") for option in schema.get("anyOf", [schema])}
    lowered = value.strip().lower()
    if "boolean" in kinds and lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    if "integer" in kinds and re.fullmatch(r"[+-]?(0|[1-9][0-9]*)", value.strip()):
        return int(value)  # "0644" stays text: a file mode, read as octal by its own check
    if "number" in kinds:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _merged(raw: dict[str, Any], values: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """The file's mapping with the environment's values over it (a section that is not a
    mapping in the file is left for its own error)."""
    document = dict(raw)
    for field, value in values.items():
        if len(field) == 1:
            document[field[0]] = value
            continue
        section = document.get(field[0])
        if section is None:
            section = {}
        if isinstance(section, dict):
            document[field[0]] = {**section, field[1]: value}
    return document


def _problems(
    error: ValidationError, kind: type, root: Node | None, prefix: tuple[str, ...]
) -> list[tuple[int, str, str]]:
    """(line, dotted field, message) of each of pydantic's errors. A key given in the wrong place
    is named once, where it was given, not again as missing where it belongs."""
    found, homes = [], set()
    for detail in error.errors(include_url=False):
        loc = prefix + detail["loc"]  # where in the schema
        # A file holds the whole config, or with a prefix only what lies below it (a sidecar).
        line, dotted = yaml_lines.locate(root, detail["loc"] if root is not None else loc)
        found.append((line, dotted, _message(detail, loc, _fields(kind))))
        if detail["type"] in _EXTRA and (home := _home(loc, _fields(kind))):
            homes.add(home)
    return [problem for problem in found if problem[1] not in homes]


def _message(detail: Any, loc: tuple[Any, ...], fields: dict[tuple[str, ...], dict]) -> str:
    """pydantic's message, with what the user wrote or where an unknown key belongs."""
    kind = detail["type"]
    if kind in _EXTRA:
        return "unknown key" + _belongs(loc, fields)
    if kind in _MISSING:
        what = fields.get(_pattern(loc, fields) or (), {}).get("description")
        return f"required: {what}" if what else "required"
    if kind in _MAPPING:
        return f"expected a mapping of keys, got {describe(detail['input'])}"
    if kind == "value_error":  # our own validators' messages, which say what they need
        return str(detail["ctx"]["error"])
    message = f"{detail['msg']}, got {describe(detail['input'])}"
    if kind == "literal_error":  # a near miss of one of the choices: say which
        message += suggestion(detail["input"], re.findall(r"'([^']*)'", detail["ctx"]["expected"]))
    return message


def _belongs(loc: tuple[Any, ...], fields: dict[tuple[str, ...], dict]) -> str:
    """'; did you mean X?': the key's home elsewhere in the file, else a close sibling."""
    home = _home(loc, fields)
    if home:
        return f"; did you mean {home!r}?"
    key, parent = loc[-1], _pattern(loc[:-1], fields)
    siblings = [field[-1] for field in fields if field[:-1] == parent]
    return suggestion(key, siblings)


def _home(loc: tuple[Any, ...], fields: dict[tuple[str, ...], dict]) -> str | None:
    """Where a key the file gives in the wrong place belongs (`routing.default_preset`)."""
    elsewhere = [
        ".".join(field).replace(f".{_ANY_ITEM}", _ANY_ITEM)
        for field in fields
        if field[-1] == loc[-1] and field != loc
    ]
    return elsewhere[0] if elsewhere else None


def _pattern(loc: tuple[Any, ...], fields: dict[tuple[str, ...], dict]) -> tuple[str, ...] | None:
    """The schema path a location falls under (preset names as <name>, list indexes as [n])."""
    pattern: tuple[str, ...] = ()
    for part in loc:
        for step in (part, _ANY_ITEM if isinstance(part, int) else _ANY_KEY):
            if any(field[: len(pattern) + 1] == (*pattern, step) for field in fields):
                pattern = (*pattern, step)
                break
        else:
            return None
    return pattern


@cache
def _fields(kind: type) -> dict[tuple[str, ...], dict]:
    """Every key the file may hold, by its schema path, with its JSON schema (for descriptions)."""
    schema = TypeAdapter(kind).json_schema()
    definitions = schema.get("$defs", {})
    found: dict[tuple[str, ...], dict] = {}

    def walk(node: dict, prefix: tuple[str, ...]) -> None:
        if "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[1]]
        for name, sub in node.get("properties", {}).items():
            found[(*prefix, name)] = sub
            walk(sub, (*prefix, name))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], (*prefix, _ANY_KEY))
        if isinstance(node.get("items"), dict):
            walk(node["items"], (*prefix, _ANY_ITEM))
        for sub in node.get("anyOf", []):
            walk(sub, prefix)

    walk(schema, ())
    for field in [field for field in found if field[0] in LOADERS_FIELDS]:
        del found[field]  # the loader's, not the file's
    return found
