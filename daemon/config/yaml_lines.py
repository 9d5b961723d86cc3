"""Reading YAML safely, and the line a pydantic error location points at.

The file is composed into PyYAML's node tree (which keeps every line) and then constructed with
the safe tags only, so a file can never build arbitrary Python objects. Validation happens on the
plain values; `locate` walks an error's `loc` tuple back down the node tree to its line.
"""

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


class Loader(yaml.SafeLoader):
    """SafeLoader with two departures from PyYAML's YAML 1.1 reading.

    A key given twice in one mapping is an error (PyYAML keeps the last one silently), and `1e4`
    is a float (PyYAML reads it as a string, but `beta: 1e4` is how style weights are written).
    """

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """PyYAML's mapping (`<<: *base` merged first, so own keys win), refusing duplicates."""
        own = [key for key, _ in node.value if key.tag != _MERGE_TAG]
        mapping = super().construct_mapping(node, deep)  # flattens the merges into node.value
        first_lines: dict[Any, int] = {}
        for key_node in own:
            key = self.construct_object(key_node, deep=True)
            if key in first_lines:
                raise ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first_lines[key]})",
                    key_node.start_mark,
                )  # fmt: skip
            first_lines[key] = key_node.start_mark.line + 1
        return mapping


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(text: str) -> tuple[Any, Node | None]:
    """One YAML document as plain values and as nodes; raises `yaml.YAMLError` with its mark."""
    loader = Loader(text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
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


def locate(root: Node | None, loc: tuple[int | str, ...]) -> tuple[int, str]:
    """The 1-based line of the value at `loc`, and its dotted name as the file spells it.

    A key the file lacks ("required") is named at its parent's line. The walk stops at a scalar
    that a validator widened (`style: a.png` is checked as `style[0].image`): the user wrote the
    scalar, so that is where the problem is shown.
    """
    node: Node | None = root
    line = root.start_mark.line + 1 if root is not None else 1
    dotted = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad key: the key's line, already found
            break
        if isinstance(node, MappingNode):
            found = [
                (k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == str(part)
            ]
            node = found[-1][1] if found else None  # the last: after a merge, own keys win
            line = found[-1][0].start_mark.line + 1 if found else line
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
            dotted += f"[{part}]"
            continue
        elif node is not None:
            break
        dotted += f".{part}" if dotted else str(part)
    return line, dotted
