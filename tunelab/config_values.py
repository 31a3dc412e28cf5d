"""Dotted config keys and their values: nested dicts flattened to dotted keys, `--set
KEY=VALUE` parsed, and a value checked against a config field's type hint. No config classes
here: `tunelab.config` applies these to its fields."""

from __future__ import annotations

import ast
import difflib
import types
import typing
from typing import Any, Literal, get_args, get_origin


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"depth": 4}}` -> `{"model.depth": 4}`; already-dotted keys pass through."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["model.dropout=0.2", "train.loss=dice"]` -> dotted-key dict with Python literals."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. model.dropout=0.2")
        try:
            overrides[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key.strip()] = text  # a bare word such as dice is a string
    return overrides


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check a value against a field's type hint; ints are accepted where floats are expected."""
    origin = get_origin(hint)
    if origin in (types.UnionType, typing.Union):  # `float | None`: None means "the default"
        if value is None:
            return None
        inner = next(arg for arg in get_args(hint) if arg is not type(None))
        return coerce(key, value, inner)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_text = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{key} = {value!r} is invalid{hint_text}: choose one of "
                + ", ".join(repr(c) for c in choices)
            )
        return value
    if origin is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} = {value!r} is invalid: expected a list of numbers")
        item_type = get_args(hint)[0]
        return tuple(coerce(key, item, item_type) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} = {value!r} is invalid: expected True or False")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{key} = {value!r} is invalid: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} = {value!r} is invalid: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} = {value!r} is invalid: expected a string")
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {key}")  # a bug, not user input
