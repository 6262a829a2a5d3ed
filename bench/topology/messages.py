"""Plain wording for pydantic's validation errors: "expected ..., got ...".

Pydantic's own texts ("Input should be a valid tuple") name Python types and
never say what the topology file should have held. Each error type gets a
sentence here that says what was expected and what was seen, in YAML terms.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from ipaddress import IPv4Interface, IPv4Network
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from bench.topology.model import Topology

#: Human wording for the name patterns used in ``model.py``.
PATTERN_TEXT = {
    r"^[a-z][a-z0-9-]{0,14}$": "a name of lower-case letters, digits and '-', "
    "starting with a letter, at most 15 characters",
    r"^[a-z][a-z0-9]{0,5}$": "a lab name of 1-6 lower-case letters and digits, starting "
    "with a letter (it prefixes every namespace and interface the bench creates)",
    r"^[a-z][a-z0-9_.-]{0,14}$": "a Linux interface name (lower-case, at most 15 characters)",
    r"^[a-z][a-z0-9-]*$": "a model name of lower-case letters, digits and '-'",
}

#: What a value of each pydantic error type should have been.
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "a list (one '- ' line per item)",
    "list_type": "a list (one '- ' line per item)",
    "ip_v4_interface": "an IPv4 address with its prefix length, like 198.19.0.1/24",
    "ip_v4_network": "an IPv4 network, like 198.19.0.0/24",
    "ip_v4_address": "an IPv4 address, like 198.19.0.1",
}

#: Bounds: error type -> (context key, wording of the bound).
_BOUNDS = {
    "greater_than": ("gt", "a value greater than {}"),
    "greater_than_equal": ("ge", "a value of at least {}"),
    "less_than": ("lt", "a value less than {}"),
    "less_than_equal": ("le", "a value of at most {}"),
    "string_too_short": ("min_length", "a string of at least {} characters"),
    "string_too_long": ("max_length", "a string of at most {} characters"),
    "too_short": ("min_length", "at least {} items"),
    "too_long": ("max_length", "at most {} items"),
}


def describe(error: ErrorDetails) -> str:
    """One sentence for ``error`` saying what was expected and what was seen."""
    kind = error["type"]
    path = tuple(error["loc"])
    got = error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    special = _SPECIAL.get(kind)
    if special is not None:
        return special(path, got, ctx)
    if kind in _EXPECTED:
        reason = _ip_reason(kind, got) + _number_reason(kind, got)
        return f"expected {_EXPECTED[kind]}, got {show(got)}{reason}"
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        bound = ctx.get(key)
        if kind == "string_too_short" and bound == 1:
            return f"expected a non-empty string, got {show(got)}"
        if bound == 1:
            text = text.replace("items", "item")
        return f"expected {text.format(_number(bound))}, got {show(got)}"
    if kind == "value_error":  # raised by a validator of ours, already worded
        return error["msg"].removeprefix("Value error, ")
    message = re.sub(r"^Input should be ", "expected ", error["msg"])
    return f"{message}, got {show(got)}"


def show(value: Any) -> str:
    """How a YAML value reads in a message."""
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, float):
        return f"the number {_float(value)}"
    if isinstance(value, int):
        return f"the number {value}"
    return repr(value)


def _float(value: float) -> str:
    """A float as YAML writes it: ``2.0`` (not ``2``), ``.inf``, ``-.inf``, ``.nan``."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def _number(value: Any) -> Any:
    """``0.0`` -> ``0``: a bound or value as the file would write it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def allowed_keys(path: Sequence[str | int]) -> list[str]:
    """The keys the model accepts in the mapping at ``path`` (empty if not a mapping)."""
    model: Any = Topology
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None`` or ``tuple[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _did_you_mean(word: object, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _missing(path: tuple[str | int, ...], got: Any, ctx: dict[str, Any]) -> str:
    name = path[-1]
    if len(path) == 1:
        return f"missing required top-level section {name!r}"
    given = ", ".join(str(k) for k in got) if isinstance(got, dict) and got else "nothing"
    return f"missing required field {name!r} (given: {given})"


def _extra(path: tuple[str | int, ...], got: Any, ctx: dict[str, Any]) -> str:
    allowed = allowed_keys(path[:-1])
    if not allowed:
        return f"unknown key {path[-1]!r}"
    return (
        f"unknown key {path[-1]!r}; expected one of {', '.join(allowed)}"
        f"{_did_you_mean(path[-1], allowed)}"
    )


def _pattern(path: tuple[str | int, ...], got: Any, ctx: dict[str, Any]) -> str:
    pattern = str(ctx.get("pattern", ""))
    expected = PATTERN_TEXT.get(pattern, f"a string matching {pattern}")
    return f"expected {expected}, got {show(got)}"


def _literal(path: tuple[str | int, ...], got: Any, ctx: dict[str, Any]) -> str:
    expected = str(ctx.get("expected", ""))
    choices = re.findall(r"'([^']*)'", expected)
    one_of = "one of " if len(choices) > 2 else ""
    return f"expected {one_of}{expected}, got {show(got)}{_did_you_mean(got, choices)}"


def _mapping(path: tuple[str | int, ...], got: Any, ctx: dict[str, Any]) -> str:
    keys = allowed_keys(path)
    with_keys = f" with keys {', '.join(keys)}" if keys else ""
    return f"expected a mapping{with_keys}, got {show(got)}"


def _string(path: tuple[str | int, ...], got: Any, ctx: dict[str, Any]) -> str:
    message = f"expected a string, got {show(got)}"
    if isinstance(got, bool | int | float):
        kind = "a boolean" if isinstance(got, bool) else "a number"
        message += f" (YAML reads this unquoted value as {kind}; put it in quotes)"
    return message


_SPECIAL: dict[str, Callable[[tuple[str | int, ...], Any, dict[str, Any]], str]] = {
    "missing": _missing,
    "extra_forbidden": _extra,
    "string_pattern_mismatch": _pattern,
    "literal_error": _literal,
    "dict_type": _mapping,
    "model_type": _mapping,
    "model_attributes_type": _mapping,
    "string_type": _string,
}


def _number_reason(kind: str, got: Any) -> str:
    """Why a boolean or a string is not read as the number it may look like."""
    if kind not in ("int_type", "float_type"):
        return ""
    if isinstance(got, bool):
        return " (YAML reads yes/no, true/false and on/off as a boolean)"
    if isinstance(got, str) and _looks_numeric(got):
        return " (YAML reads this as a string; write a plain number without quotes, like 500)"
    if kind == "int_type" and isinstance(got, float) and got.is_integer():
        return f" (write it without the decimal point: {int(got)})"
    return ""


def _looks_numeric(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _ip_reason(kind: str, got: Any) -> str:
    """Why ``got`` is not a valid IPv4 network/interface, from ``ipaddress`` itself."""
    if kind not in ("ip_v4_network", "ip_v4_interface") or not isinstance(got, str):
        return ""
    try:
        if kind == "ip_v4_network":
            IPv4Network(got)
        else:
            IPv4Interface(got)
    except ValueError as err:
        if kind == "ip_v4_network" and "has host bits set" in str(err):
            return f" (host bits are set; did you mean {IPv4Network(got, strict=False)}?)"
        return f" ({err})"
    return ""
