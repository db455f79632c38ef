"""An emulation of how Go's ``encoding/json`` fills a struct, for the Ollama imitation.

Ollama reads request bodies with gin's ``ShouldBindJSON``: ``json.NewDecoder(body).Decode(&req)``
into a struct. Where the gateway's security depends on it, this module decodes the same way:

* only the first JSON value is read: data after it is ignored (``Decoder.Decode``);
* a key fills the field whose JSON name it equals exactly, else the field it equals under Go's
  folding (ASCII case-insensitive plus Unicode simple folding: ``Model``, ``MODEL``, ``mOdEl``,
  the Kelvin sign for ``k``, the long s for ``s``); keys matching no field are ignored;
* when several keys land on one field, the last one wins;
* ``null`` leaves a field at its zero value; a value of the wrong type is an error
  (``json: cannot unmarshal number into Go struct field ChatRequest.model of type string``);
* a byte-order mark, ``NaN``/``Infinity`` and malformed JSON are errors; invalid UTF-8 and lone
  surrogates in strings become U+FFFD instead of failing;
* an empty body is ``io.EOF`` (Ollama answers "missing request body").

``tests/security/test_go_json.py`` checks this emulation against a real Go program decoding with
Ollama's struct tags, on a corpus of hostile bodies. It does not emulate what the gateway never
relies on (numbers into int fields, embedded structs beyond their field names, ``,string`` tags).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from homellm.serve.body import go_fold

_SURROGATE = re.compile("[\ud800-\udfff]")


class Pairs(list[tuple[str, Any]]):
    """A JSON object's key/value pairs in order, duplicates kept (``object_pairs_hook``)."""


class GoJSONError(ValueError):
    """What ``Decode`` returns as an error; ``str()`` is Go's message (close to it)."""


class MissingBody(GoJSONError):
    """``io.EOF``: no JSON value at all."""


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Pairs | dict):
        return "object"
    return "array"


def first_value(raw: bytes) -> Any:
    """The first JSON value in ``raw``, read like ``json.Decoder.Decode`` (trailing data ignored)."""
    text = raw.decode("utf-8", errors="replace")
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise MissingBody("EOF")
    if stripped.startswith("\ufeff"):
        raise GoJSONError("invalid character 'ï' looking for beginning of value")

    def no_constants(name: str) -> Any:
        raise GoJSONError(f"invalid character '{name[0]}' looking for beginning of value")

    decoder = json.JSONDecoder(object_pairs_hook=Pairs, parse_constant=no_constants)
    try:
        value, _end = decoder.raw_decode(stripped)
    except json.JSONDecodeError as exc:
        raise GoJSONError(f"invalid character at offset {exc.pos}: {exc.msg}") from None
    return _clean(value)


def _clean(value: Any) -> Any:
    """Lone surrogates become U+FFFD, as Go's decoder replaces invalid UTF-16."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, Pairs):
        return Pairs((_clean(k), _clean(v)) for k, v in value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def decode_struct(
    raw: bytes, type_name: str, string_fields: Iterable[str], other_fields: Iterable[str] = ()
) -> dict[str, Any]:
    """The struct Go would fill: ``{json name: value}`` for the fields present; keys as Go matched them.

    ``string_fields`` are ``string`` in Go (a non-string, non-null value is an error); ``other_fields``
    are kept as they come (their own decoding is not emulated).
    """
    value = first_value(raw)
    if value is None:
        return {}
    if not isinstance(value, Pairs):
        raise GoJSONError(f"json: cannot unmarshal {_go_type(value)} into Go value of type {type_name}")
    strings = list(string_fields)
    fields = strings + list(other_fields)
    folded = {go_fold(f): f for f in fields}
    out: dict[str, Any] = {}
    for key, item in value:
        target = key if key in fields else folded.get(go_fold(key))
        if target is None:
            continue
        item = _plain(item)
        if item is None:
            continue
        if target in strings and not isinstance(item, str):
            raise GoJSONError(
                f"json: cannot unmarshal {_go_type(item)} into Go struct field {type_name}.{target} of type string"
            )
        out[target] = item
    return out


def _plain(value: Any) -> Any:
    """Pairs back into dicts, last key winning, for values we keep."""
    if isinstance(value, Pairs):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
