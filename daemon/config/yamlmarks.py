"""Reading YAML with line numbers: a safe loader that remembers lines, and checked field parsers.

Values are checked after loading, when PyYAML's marks are gone; keeping the line of every mapping
key and sequence item on the loaded containers lets every error name `file:line: dotted.field`.
Only the safe tags are constructed, so a file can never build arbitrary Python objects.

A parser takes a `Node` (value, dotted field name, line) and returns the checked value or raises
`Invalid`; `fields` runs one parser per key and records every problem in the `Source` instead of
stopping at the first, so that a user sees all of them at once.
"""

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


class MarkedDict(dict[Any, Any]):
    """A YAML mapping with the 1-based line where it starts and the line of each key."""

    line: int
    key_lines: dict[Any, int]


class MarkedList(list[Any]):
    """A YAML sequence with the 1-based line where it starts and the line of each item."""

    line: int
    item_lines: list[int]


class MarkedLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences are `MarkedDict` and `MarkedList`.

    Two departures from PyYAML's YAML 1.1 reading: a key given twice in one mapping is an error
    (PyYAML keeps the last one silently), and `1e4` is a float (PyYAML reads it as a string, but
    `beta: 1e4` is how style transfer weights are usually written).
    """

    def construct_marked_mapping(self, node: MappingNode) -> Any:
        """Build a MarkedDict; a generator like PyYAML's own, so anchors can refer to it."""
        data = MarkedDict()
        data.line = node.start_mark.line + 1
        data.key_lines = {}
        yield data
        own_keys = {id(key_node) for key_node, _ in node.value if key_node.tag != _MERGE_TAG}
        self.flatten_mapping(node)  # `<<: *base` merges come first, so the mapping's own keys win
        own_lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping",
                    key_node.start_mark,
                ) from None  # fmt: skip
            line = key_node.start_mark.line + 1
            if id(key_node) in own_keys:
                if key in own_lines:
                    raise ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {own_lines[key]})",
                        key_node.start_mark,
                    )  # fmt: skip
                own_lines[key] = line
            data[key] = self.construct_object(value_node, deep=False)
            data.key_lines[key] = line

    def construct_marked_sequence(self, node: SequenceNode) -> Any:
        """Build a MarkedList; a generator like PyYAML's own, so anchors can refer to it."""
        data = MarkedList()
        data.line = node.start_mark.line + 1
        data.item_lines = []
        yield data
        for child in node.value:
            data.append(self.construct_object(child, deep=False))
            data.item_lines.append(child.start_mark.line + 1)


MarkedLoader.add_constructor("tag:yaml.org,2002:map", MarkedLoader.construct_marked_mapping)
MarkedLoader.add_constructor("tag:yaml.org,2002:seq", MarkedLoader.construct_marked_sequence)
MarkedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_marked(text: str) -> Any:
    """Parse one YAML document; raises `yaml.YAMLError` (with a mark where PyYAML has one)."""
    loader = MarkedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_error_message(shown: str, error: yaml.YAMLError) -> str:
    """`file:line:column: problem` from PyYAML's error, with its context where it gives one."""
    mark = getattr(error, "problem_mark", None)
    if not isinstance(error, yaml.MarkedYAMLError) or mark is None:
        return f"{shown}: invalid YAML: {error}"
    message = f"{shown}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {error.problem}"
    if error.context and error.context_mark is not None:
        message += f" ({error.context} on line {error.context_mark.line + 1})"
    return message


# --- checked reading ------------------------------------------------------------------------

T = TypeVar("T")


class Invalid(Exception):
    """A value cannot be used; the message says why (None: the details were reported already)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.message = message


class Source:
    """The file being read, where its relative paths start, and the problems found so far."""

    def __init__(self, shown: str | None, base_dir: Path) -> None:
        self.shown = shown  # the file as the user named it; None: values not from a file
        self.base_dir = base_dir  # relative paths in the file are relative to this folder
        self.problems: list[tuple[int, str]] = []

    def report(self, line: int, dotted: str, message: str) -> None:
        """Record one problem as `file:line: field: message`."""
        where = f"{self.shown}:{line}: " if self.shown is not None else ""
        self.problems.append((line, f"{where}{dotted}: {message}" if dotted else where + message))

    def messages(self) -> list[str]:
        """All problems, sorted by line (in the order found within a line)."""
        return [text for _, text in sorted(self.problems, key=lambda problem: problem[0])]


@dataclass(frozen=True)
class Node:
    """A value from the YAML with its dotted field name and line, for error messages."""

    value: Any
    dotted: str
    line: int
    source: Source

    def child(self, key: Any) -> "Node":
        """The value under `key` (None when absent), at the key's line."""
        mapping = self.value if isinstance(self.value, dict) else {}
        line = getattr(mapping, "key_lines", {}).get(key, self.line)
        dotted = f"{self.dotted}.{key}" if self.dotted else str(key)
        return Node(mapping.get(key), dotted, line, self.source)

    def items(self) -> list["Node"]:
        """The items of a list, each at its own line."""
        lines = getattr(self.value, "item_lines", [self.line] * len(self.value))
        return [
            Node(item, f"{self.dotted}[{i}]", line, self.source)
            for i, (item, line) in enumerate(zip(self.value, lines, strict=True))
        ]

    def report(self, message: str) -> None:
        """Record a problem with this value."""
        self.source.report(self.line, self.dotted, message)


Parser = Callable[[Node], Any]
BAD = object()  # what `attempt` returns for a value it reported


def attempt(node: Node, parser: Parser) -> Any:
    """The parsed value, or `BAD` once the problem is reported."""
    try:
        return parser(node)
    except Invalid as invalid:
        if invalid.message is not None:
            node.report(invalid.message)
        return BAD


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


def suggestion(word: Any, candidates: Iterable[str]) -> str:
    """'; did you mean X?' when a candidate is close to `word`, else ''."""
    matches = difflib.get_close_matches(str(word).casefold(), list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def mapping(node: Node) -> dict[Any, Any]:
    """The node's mapping; an empty (null) section counts as empty."""
    if node.value is None:
        return {}
    if not isinstance(node.value, dict):
        raise Invalid(f"expected a mapping of keys, got {describe(node.value)}")
    return node.value


def fields(node: Node, parsers: Mapping[str, Parser]) -> dict[str, Any]:
    """Keyword arguments from the mapping's valid values; unknown keys and bad values reported."""
    kwargs: dict[str, Any] = {}
    for key in mapping(node):
        child = node.child(key)
        parser = parsers.get(key) if isinstance(key, str) else None
        if parser is None:
            child.report(f"unknown key{suggestion(key, parsers)}")
            continue
        value = attempt(child, parser)
        if value is not BAD:
            kwargs[key] = value
    return kwargs


def items_of(node: Node, parser: Parser) -> list[Any]:
    """Every item of a list parsed; `Invalid` (already reported) when any item is bad."""
    parsed = [attempt(item, parser) for item in node.items()]
    if BAD in parsed:
        raise Invalid()
    return parsed


def section(cls: Callable[..., T], parsers: Mapping[str, Parser]) -> Callable[[Node], T]:
    """A parser for a mapping that becomes `cls`, its defaults filling the keys left out."""
    return lambda node: cls(**fields(node, parsers))


def require(node: Node, key: str, what: str) -> None:
    """Report `key` missing from the node's mapping."""
    if not isinstance(node.value, dict) or key not in node.value:
        node.child(key).report(f"required: {what}")


def optional(parser: Parser) -> Parser:
    """`parser`, with null meaning "none"."""
    return lambda node: None if node.value is None else parser(node)


def _shown(number: float) -> str:
    """A bound as a person would write it."""
    return f"{number:g}" if isinstance(number, float) else str(number)


def _check_range(value: float, low: float | None, high: float | None, low_open: bool) -> None:
    """Refuse a number outside [low, high] (or (low, high] when low_open)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        bounds = [f"{'>' if low_open else '>='} {_shown(low)}"] if low is not None else []
        bounds += [f"<= {_shown(high)}"] if high is not None else []
        raise Invalid(f"must be {' and '.join(bounds)}, got {_shown(value)}")


def number(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> Parser:
    """A parser for a finite number, ints accepted; booleans are not numbers, whatever YAML says."""

    def parse(node: Node) -> float:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number, got {describe(value)}")
        if not math.isfinite(value):
            raise Invalid(f"expected a finite number, got {describe(value)}")
        _check_range(value, low, high, low_open)
        return float(value)

    return parse


def integer(low: int | None = None, high: int | None = None) -> Parser:
    """A parser for a whole number in [low, high]."""

    def parse(node: Node) -> int:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {describe(value)}")
        _check_range(value, low, high, low_open=False)
        return value

    return parse


def choice(options: Iterable[str], *, fold_case: bool = False) -> Parser:
    """A parser for one of `options`; with fold_case any spelling of case, given back as listed."""
    by_key = {(o.casefold() if fold_case else o): o for o in options}

    def parse(node: Node) -> str:
        value = node.value
        key = value.casefold() if fold_case and isinstance(value, str) else value
        if isinstance(key, str) and key in by_key:
            return by_key[key]
        hint = suggestion(value, by_key.values()) if isinstance(value, str) else ""
        listed = ", ".join(by_key.values())
        raise Invalid(f"expected one of {listed}, got {describe(value)}{hint}")

    return parse


def boolean(node: Node) -> bool:
    """true or false."""
    if not isinstance(node.value, bool):
        raise Invalid(f"expected true or false, got {describe(node.value)}")
    return node.value


def text(node: Node) -> str:
    """A non-empty string."""
    if not isinstance(node.value, str) or not node.value.strip():
        raise Invalid(f"expected text, got {describe(node.value)}")
    return node.value


def path(node: Node) -> Path:
    """A path, `~` expanded, relative to the file's folder, resolved."""
    given = text(node)
    try:
        return (node.source.base_dir / Path(given).expanduser()).resolve()
    except (OSError, RuntimeError) as error:  # no home folder for `~`; a symlink loop
        raise Invalid(f"cannot resolve {given!r}: {error}") from error


def existing_file(node: Node) -> Path:
    """A path that names an existing file."""
    found = path(node)
    if not found.is_file():
        raise Invalid(f"{found}: {'not a file' if found.exists() else 'no such file'}")
    return found
