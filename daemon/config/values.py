"""Checks of single values, and the annotated types the sections are built from.

A ValueError's text is the message the user sees, after `file:line: field:`. Every check here is
pure: it may resolve a path and look it up (`is_file`: the path is the value being checked), but
opens no file, adds no handler and starts no service; what needs the machine is in `checks`.
"""

import difflib
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationInfo

STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


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


def suggestion(word: Any, candidates: Any) -> str:
    """'; did you mean X?' when a candidate is close to `word`, else ''."""
    matches = difflib.get_close_matches(str(word).casefold(), list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def from_context(info: ValidationInfo | None, key: str, default: Any) -> Any:
    """A value the loader passed in; none when a model is built in code."""
    context = info.context if info is not None else None
    return (context or {}).get(key, default)


def resolved_path(value: Any, info: ValidationInfo | None) -> Path:
    """A path, `~` expanded, relative to the config file's folder, resolved."""
    if isinstance(value, Path):  # built in code, not read from a file
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a path, got {describe(value)}")
    try:
        return (from_context(info, "base_dir", Path.cwd()) / Path(value).expanduser()).resolve()
    except (OSError, RuntimeError) as error:  # no home folder for `~`; a symlink loop
        raise ValueError(f"cannot resolve {value!r}: {error}") from error


def existing_file(value: Any, info: ValidationInfo | None) -> Path:
    """A path that names an existing file (looked up, not opened: a missing painting is
    reported with the file's other problems, in one pass)."""
    found = resolved_path(value, info)
    if not found.is_file():
        raise ValueError(f"{found}: {'not a file' if found.exists() else 'no such file'}")
    return found


def at_least_one(what: str) -> AfterValidator:
    """Refuse an empty collection (checked after its items, so a bad item is reported alone)."""

    def check(items: Any) -> Any:
        if not items:
            raise ValueError(what)
        return items

    return AfterValidator(check)


def one_or_list(value: Any) -> Any:
    """One item may stand for a list of one."""
    return [value] if isinstance(value, str) else value


def not_blank(text: str) -> str:
    """Text with something in it: a blank value would only fail later, where it is used."""
    if not text.strip():
        raise ValueError(f"expected text, got {describe(text)}")
    return text


# A section whose keys are all commented out is YAML's null: its defaults, as if it were empty.
Section = BeforeValidator(lambda value: {} if value is None else value)
Folder = Annotated[Path, BeforeValidator(resolved_path)]
ExistingFile = Annotated[Path, BeforeValidator(existing_file)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seconds = Positive
Text = Annotated[str, AfterValidator(not_blank)]
