"""How a decoded attribute or flag value is stored so SQL can compare it the
way Python does.

Each value becomes one row of columns:

    kind    null | bool | int | float | str | list | dict | other | raw
            (other: YAML dates and the like, which equal no filter literal;
            raw: an attribute not read yet, see attrs.is_lazy, its values NULL)
    num     the number for bool (0/1), int and float; NULL otherwise and for NaN
    str     the text for str values
    folded  str(value).lower() when the value is truthy and not a list: what
            `contains` searches (NULL means `contains` is false)
    json    lists and dicts, as JSON (NaN and infinities as Python's json writes them)

With numbers in one column and strings in another, `=`, `<` and friends in
SQL only ever compare like with like, which is Python's rule: a comparison
across kinds is false, and `not` of it is true.
"""

import json
import math
import re

INT64 = (-(2**63), 2**63 - 1)
KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
VALUE_COLUMNS = ("kind", "num", "str", "folded", "json")


def value_kind(value):
    if value is None:
        return "null"
    return KINDS.get(type(value), "other")


def stored_value(value):
    """The VALUE_COLUMNS tuple for a decoded value."""
    kind = value_kind(value)
    return (
        kind,
        stored_number(value) if kind in ("bool", "int", "float") else None,
        storable_text(value) if kind == "str" else None,
        folded_text(value) if kind != "list" else None,
        to_json(value) if kind in ("list", "dict") else None,
    )


def stored_number(value):
    """A number SQLite can bind: ints beyond 64 bits as the nearest float
    (infinite past the float range), which keeps how they compare."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return _nearest_float(value)
    return int(value) if isinstance(value, bool) else value


def _nearest_float(big):
    try:
        return float(big)
    except OverflowError:
        return math.inf if big > 0 else -math.inf


def folded_text(value):
    """What Guild's `contains` searches in a value, or None when it finds nothing."""
    if not value:
        return None
    return storable_text(str(value).lower())


_SURROGATES = re.compile("[\ud800-\udfff]")


def storable_text(text):
    """`text` as SQLite can store it (UTF-8): a lone surrogate, which is how
    Python spells a byte of a file name that is not UTF-8 (or what a YAML
    \\u escape may make), becomes a backslash escape: \\xff for that byte."""
    if text.isascii():
        return text
    return _SURROGATES.sub(_escaped_surrogate, text)


def _escaped_surrogate(match):
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def to_json(value):
    # Keys JSON has no form for (YAML dates, lists made hashable) are left out.
    return json.dumps(value, default=str, skipkeys=True)


def from_json(text):
    return json.loads(text)
