"""Strings as Go's `encoding/json` writes them (Go 1.16, as etcd 3.5.1 is built), for every place trietcd must
produce etcd's JSON bytes: the JSON gateway, the backend's member rows, the v2 store in snapshots.

`"` and `\\` get a backslash, `\\n \\r \\t` their short forms, every other control character `\\u00xx`
(lowercase hex; Go 1.16 has no `\\b`/`\\f` short forms), `<`, `>` and `&` become `\\u003c`, `\\u003e`,
`\\u0026` (HTML escaping is on), U+2028/U+2029 are escaped, and text that is not valid UTF-8 (in a Python
str: a lone surrogate) becomes `\\ufffd`. Everything else, non-ASCII included, is written as is.

A utility with no IO: any layer may import it.
"""

from __future__ import annotations

import re

__all__ = ["go_string", "go_string_list"]

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
            "\u2028": "\\u2028", "\u2029": "\\u2029"}
_NEEDS_ESCAPE = re.compile('["\\\\<>&\u2028\u2029\x00-\x1f\ud800-\udfff]')


def _escape_one(m: re.Match) -> str:
    c = m.group(0)
    short = _ESCAPES.get(c)
    if short is not None:
        return short
    if "\ud800" <= c <= "\udfff":
        return "\\ufffd"
    return f"\\u00{ord(c):02x}"


def go_string(s: str) -> str:
    """`s` as a JSON string literal, quotes included, exactly as Go writes it."""
    return '"' + _NEEDS_ESCAPE.sub(_escape_one, s) + '"'


def go_string_list(items) -> str:
    """A Go `[]string`: `null` when nil (None), else an array."""
    if items is None:
        return "null"
    return "[" + ",".join(go_string(s) for s in items) + "]"
