"""What the outbox holds besides results, and how result names are made: shared by the config
(which refuses preset names that would collide and patterns that cannot make a name) and the
outbox (which makes the names)."""

import string

FAILED_DIR = "failed"
LOGS_DIR = "logs"
ORIGINALS_DIR = "originals"
# Preset names become folders in the inbox and outbox, next to these.
RESERVED_FOLDERS = frozenset({FAILED_DIR, LOGS_DIR, ORIGINALS_DIR})
PATTERN_FIELDS = ("stem", "preset", "hash8")


def check_name_pattern(pattern: str) -> None:
    """Refuse a pattern that cannot make a name, naming the culprit."""
    try:
        fields = [
            field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None
        ]
    except ValueError as error:
        raise ValueError(f"name_pattern {pattern!r}: {error}") from error
    allowed = ", ".join(f"{{{field}}}" for field in PATTERN_FIELDS)
    for field in fields:
        if field not in PATTERN_FIELDS:
            raise ValueError(f"name_pattern {pattern!r}: unknown field {{{field}}}; use {allowed}")
    if "/" in pattern or "\\" in pattern:
        raise ValueError(f"name_pattern {pattern!r}: a name, not a path (no '/' or '\\')")
    try:  # format specs are only checked when used: "{stem:d}" passes the parse above
        pattern.format(stem="photo", preset="preset", hash8="0123abcd")
    except (ValueError, KeyError, IndexError) as error:
        raise ValueError(f"name_pattern {pattern!r}: {error}") from error
