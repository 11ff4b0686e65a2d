"""TOML tables to frozen dataclasses and back, every mistake a one-line UserError naming the key.

One validator for every TOML file fastjoint reads: the run config (`config.py`) and the
scene kit's recipes (`scenes/recipe.py`). A dataclass is the schema: its fields' types say
what each key holds, and the validator reads

- scalars: bool, int, float (finite), str, `Literal[...]`, unions of them;
- `tuple[X, Y, ...]` (a list of that many values) and `tuple[X, ...]` (a list of any length);
- `Annotated[X, Range(low, high)]`: a number, or each number of a tuple, within bounds;
- a dataclass (a table), `dict[str, X]` (a table of named entries), `tuple[Dataclass, ...]`
  (an array of tables, `[[key]]`), and `X | None` of these (None when the key is absent).

Unknown keys are refused with the closest known one suggested; a dataclass may refuse some
keys with its own message (`__refused__`, e.g. keys that were renamed or retired). A
dataclass's `__post_init__` checks its values: `Invalid(field, problem)` there is reported
under the field's full key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tomllib

from fastjoint.errors import UserError

REFUSED = "__refused__"
"""Name of the optional class attribute, dict[str, str], mapping keys a dataclass refuses to the
message that says why (`'key': message`); consulted before a key is called unknown."""


@dataclass(frozen=True)
class Range:
    """Bounds (inclusive) of a number, for `Annotated[int, Range(8)]` or `Annotated[float, Range(0, 1)]`;
    on a tuple of numbers, the bounds of each."""

    low: float | None = None
    high: float | None = None

    def holds(self, value: Any) -> bool:
        if isinstance(value, tuple):
            return all(self.holds(v) for v in value)
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"of at least {self.low:g}"
        return f"of at most {self.high:g}"


class Invalid(UserError):
    """A dataclass's own check of one of its fields, raised in `__post_init__`; `from_dict`
    reports it under the field's full key (`'scenes.target[2].radius' must be ...`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"'{field}' {problem}")
        self.field = field
        self.problem = problem


def from_dict(cls: type, table: dict[str, Any], prefix: str = "") -> Any:
    """Builds dataclass `cls` from a nested dict, checking every key and type.

    `prefix` is the dotted key of the table itself ("model."), for messages.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    refused: dict[str, str] = getattr(cls, REFUSED, {})
    values = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key in refused:
            raise UserError(f"'{dotted}': {refused[key]}")
        if key not in fields:
            raise UserError(f"unknown key '{dotted}'{_suggest(key, fields, prefix)}")
        values[key] = read(hints[key], value, dotted)
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            what = f"[{prefix}{name}] table" if dataclasses.is_dataclass(hints[name]) else "key"
            raise UserError(f"missing {what} '{prefix}{name}'")
    try:
        return cls(**values)
    except Invalid as error:
        raise UserError(f"'{prefix}{error.field}' {error.problem}") from None


def read(hint: Any, value: Any, key: str) -> Any:
    """A TOML value read as type `hint`: tables become dataclasses, the rest goes through `coerce`."""
    hint = _structured(hint)
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, _table(value, key), prefix=f"{key}.")
    if origin is dict:
        item = typing.get_args(hint)[1]
        return {name: read(item, entry, f"{key}.{name}") for name, entry in _table(value, key).items()}
    if _is_array_of_tables(hint):
        if not isinstance(value, list):
            raise UserError(f"'{key}' must be a list of tables ([[{key}]])")
        item = typing.get_args(hint)[0]
        return tuple(read(item, entry, f"{key}[{i}]") for i, entry in enumerate(value))
    return coerce(hint, value, key)


def _structured(hint: Any) -> Any:
    """`X` for `X | None` when X is read as a table (TOML has no None: an absent key is None)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if len(options) == 1 and (
            dataclasses.is_dataclass(options[0]) or typing.get_origin(options[0]) is dict or _is_array_of_tables(options[0])
        ):
            return options[0]
    return hint


def _is_array_of_tables(hint: Any) -> bool:
    args = typing.get_args(hint)
    return typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0])


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"'{key}' must be a table ([{key}])")
    return value


def coerce(hint: Any, value: Any, key: str) -> Any:
    """Checks a TOML value against a field's type; returns it in the field's type."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        if value in typing.get_args(hint):
            return value
    elif origin is Annotated:
        base, *extras = typing.get_args(hint)
        try:
            result = coerce(base, value, key)
        except UserError:
            result = None
        else:
            if all(extra.holds(result) for extra in extras if isinstance(extra, Range)):
                return result
    elif origin is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis and isinstance(value, (list, tuple)):
            return tuple(coerce(items[0], v, key) for v in value)
        if isinstance(value, (list, tuple)) and len(value) == len(items):
            return tuple(coerce(item, v, key) for item, v in zip(items, value))
    elif origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return coerce(option, value, key)
            except UserError:
                continue
    raise UserError(f"'{key}' must be {describe(hint)}, got {value!r}")


def describe(hint: Any) -> str:
    """A type as a user reads it: 'an integer', 'one of "a", "b"', ..."""
    origin = typing.get_origin(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(f'"{v}"' for v in typing.get_args(hint))
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        return " ".join([describe(base)] + [extra.describe() for extra in extras if isinstance(extra, Range)])
    if origin is tuple:
        items = typing.get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return f"a list of values ({describe(items[0])} each)"
        if items[0] is float:
            return f"{len(items)} numbers"
        if len(set(items)) == 1:
            return f"{len(items)} values ({describe(items[0])} each)"
        return f"{len(items)} values"
    if origin in (Union, types.UnionType):  # TOML has no None (an absent key is): not named
        return " or ".join(describe(o) for o in typing.get_args(hint) if o is not type(None))
    return str(hint)


def _suggest(key: str, fields: dict, prefix: str) -> str:
    close = difflib.get_close_matches(key, list(fields), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


# --- writing -------------------------------------------------------------------------


def to_dict(instance: Any) -> dict[str, Any]:
    """A dataclass (or a dict of them) as nested plain dicts (tuples become lists), as TOML holds it."""
    if isinstance(instance, dict):
        return {key: to_dict(value) for key, value in instance.items()}
    out = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value) or isinstance(value, dict):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def to_toml(instance: Any) -> str:
    """A dataclass written as TOML that `from_dict` reads back equal (tables of scalars, lists
    and tables; no arrays of tables)."""
    return "\n".join(_toml_lines(to_dict(instance), "")) + "\n"


def _toml_lines(table: dict[str, Any], prefix: str) -> list[str]:
    lines = [f"{key} = {toml_value(value)}" for key, value in table.items() if not isinstance(value, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            if not value or not all(isinstance(v, dict) for v in value.values()):
                lines.append(f"\n[{prefix}{key}]")  # a table of tables needs no header of its own
            lines.extend(_toml_lines(value, f"{prefix}{key}."))
    return lines


def toml_value(value: Any) -> str:
    """One value as TOML writes it (booleans, numbers, strings, lists and tuples of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """A TOML file's table; UserError naming the file (`what` it should be: "config file", ...)
    when it is missing, a folder, not text or not valid TOML."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a {what}")
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file") from None
