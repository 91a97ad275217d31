"""One bounded JSON parser for everything a user sends: service bodies and form fields, batch
manifest lines, metadata sidecars.

`loads` refuses, with a `JsonLimitError` (an `InputError`) that names where in the document
the fault is and which limit it passed:

- nesting deeper than `max_depth` (the C decoder stops runaway nesting with a RecursionError,
  turned into the same error; the check of the parsed document is iterative),
- a document larger than `max_bytes`, an object with more than `max_keys` keys, an array with
  more than `max_items` items, a string (key or value) longer than `max_string` characters,
- numbers that are not finite (``NaN``, ``Infinity``, ``1e999``) or integers outside
  +-(2**`max_int_bits` - 1),
- strings holding lone surrogates (``"\\ud800"``), which no storage can encode,

and malformed JSON with the line and column. Defaults are in `detector.config` (``JSON_*``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from detector import config
from detector.errors import InputError

__all__ = ["JsonLimitError", "JsonLimits", "loads"]

_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonLimitError(InputError):
    """JSON a user sent is malformed or passes one of the parser's limits; `where` names the
    field (``body.meta.title``), `limit` the limit's name (None for malformed JSON)."""

    def __init__(self, message: str, where: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.where = where
        self.limit = limit


@dataclass(frozen=True)
class JsonLimits:
    """Bounds for `loads`; every field defaults to its `detector.config` value."""

    max_depth: int = config.JSON_MAX_DEPTH
    max_keys: int = config.JSON_MAX_KEYS
    max_items: int = config.JSON_MAX_ITEMS
    max_string: int = config.JSON_MAX_STRING
    max_bytes: int = config.JSON_MAX_BYTES
    max_int_bits: int = config.JSON_MAX_INT_BITS

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_keys", "max_items", "max_string", "max_bytes", "max_int_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"JsonLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = JsonLimits()


class _Big:
    """Placeholder for an integer literal too long to convert (found by the walk, with its path)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _Constant:
    """Placeholder for NaN / Infinity / -Infinity."""

    def __init__(self, name: str) -> None:
        self.name = name


_MAX_WHERE = 120


def _index(where: str, i: int) -> str:
    return where if where.endswith("…") else f"{where}…" if len(where) > _MAX_WHERE else f"{where}[{i}]"


def _key(where: str, key: str) -> str:
    if where.endswith("…"):
        return where
    if len(where) > _MAX_WHERE:
        return f"{where}…"
    return f"{where}.{key}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", key) else f"{where}[{key[:40]!r}]"


def _check_string(value: str, where: str, limits: JsonLimits, what: str) -> None:
    if len(value) > limits.max_string:
        raise JsonLimitError(f"{where}: {what} of {len(value)} characters exceeds the limit of {limits.max_string}",
                             where, "max_string")
    if _SURROGATE.search(value):
        raise JsonLimitError(f"{where}: {what} holds a lone surrogate (\\ud800-\\udfff), which is not a character; "
                             "send valid Unicode", where, "unicode")


def _walk(doc: Any, root: str, limits: JsonLimits) -> None:
    """Check every value of a parsed document; iterative, so depth is no concern here."""
    bound = 2 ** limits.max_int_bits
    stack: list[tuple[Any, str, int]] = [(doc, root, 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= limits.max_depth:
            raise JsonLimitError(f"{where}: JSON nested deeper than the limit of {limits.max_depth} levels",
                                 where, "max_depth")
        if isinstance(value, dict):
            if len(value) > limits.max_keys:
                raise JsonLimitError(f"{where}: object with {len(value)} keys exceeds the limit of {limits.max_keys}",
                                     where, "max_keys")
            for key, item in value.items():
                _check_string(key, where, limits, "a key")
                stack.append((item, _key(where, key), depth + 1))
        elif isinstance(value, list):
            if len(value) > limits.max_items:
                raise JsonLimitError(f"{where}: array of {len(value)} items exceeds the limit of {limits.max_items}",
                                     where, "max_items")
            stack.extend((item, _index(where, i), depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_string(value, where, limits, "a string")
        elif isinstance(value, _Constant):
            raise JsonLimitError(f"{where}: {value.name} is not a number JSON allows; send a finite number",
                                 where, "finite")
        elif isinstance(value, _Big) or (isinstance(value, int) and not isinstance(value, bool)
                                         and not -bound < value < bound):
            raise JsonLimitError(f"{where}: integer out of range (limit: within +-2**{limits.max_int_bits})",
                                 where, "max_int_bits")
        elif isinstance(value, float) and not math.isfinite(value):
            raise JsonLimitError(f"{where}: number too large to represent (it overflows to infinity); send a "
                                 "finite number", where, "finite")


def loads(data: str | bytes, where: str = "body", limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Parse *data* (a str, or UTF-8 bytes) within *limits*; *where* names the document in
    errors ("body", "field 'meta'", "line 3"). Raises `JsonLimitError`."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > limits.max_bytes:
            raise JsonLimitError(f"{where}: JSON of {len(raw)} bytes exceeds the limit of {limits.max_bytes} bytes",
                                 where, "max_bytes")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JsonLimitError(f"{where}: JSON is not UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8",
                                 where) from None
    elif isinstance(data, str):
        text = data
        if len(text) > limits.max_bytes:  # characters; each is at least one byte
            raise JsonLimitError(f"{where}: JSON of {len(text)} characters exceeds the limit of {limits.max_bytes} "
                                 "bytes", where, "max_bytes")
    else:
        raise TypeError(f"safejson.loads takes str or bytes, not {type(data).__name__}")
    digits = len(str(2 ** limits.max_int_bits))
    try:
        doc = json.loads(text, parse_constant=_Constant,
                         parse_int=lambda s: int(s) if len(s) <= digits + 1 else _Big(len(s)))
    except json.JSONDecodeError as exc:
        raise JsonLimitError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                             where) from None
    except RecursionError:  # the C decoder guards its recursion: nesting far past any limit
        raise JsonLimitError(f"{where}: JSON nested deeper than the limit of {limits.max_depth} levels", where,
                             "max_depth") from None
    _walk(doc, where, limits)
    return doc
