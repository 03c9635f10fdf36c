"""SQL scripts as `runq runs ... --sql` prints them, read back for `runq sql`.

A script is one statement and comment lines; a comment line
`-- :NAME = VALUE` gives the parameter `:NAME`, VALUE written as `--sql`
writes it: NULL, a number (Python's repr of an int or float; 1e999 and
-1e999 for the infinities, and Python's `inf` and `nan` are read too), or a
string as quoted SQL text, pieces joined by `||` with `char(N)` for
characters that are not printable.
"""

import re

from .errors import QueryError
from .values import stored_number

PARAMETER_LINE = re.compile(r"^[ \t]*--[ \t]*:(\w+)[ \t]*=[ \t]*(.*?)[ \t]*$", re.M)
INTEGER = re.compile(r"[-+]?\d+")
DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
STRING_PIECE = re.compile(r"[ \t]*(?:'((?:[^']|'')*)'|char\((\d+)\))[ \t]*(\|\||$)", re.I)


def script_params(text):
    """The parameters a script's `-- :NAME = VALUE` lines give, ready to bind."""
    return {name: bindable(sql_value(literal, name)) for name, literal in PARAMETER_LINE.findall(text)}


def sql_value(literal, name="?"):
    """The value of a literal as `--sql` prints one (its exact inverse)."""
    if literal.upper() == "NULL":
        return None
    if INTEGER.fullmatch(literal):
        return int(literal)
    number = _python_float(literal)
    if number is not None:
        return number
    text = _string_value(literal)
    if text is None:
        raise QueryError(
            f"cannot read the value of :{name}: {literal}",
            hint="write NULL, a number, or 'text' (pieces may be joined with || and char(N))",
        )
    return text


def _python_float(literal):
    try:
        return float(literal)
    except ValueError:
        return None


def _string_value(literal):
    pieces, position, joiner = [], 0, "||"
    while joiner:
        match = STRING_PIECE.match(literal, position)
        if not match:
            return None
        quoted, code, joiner = match.groups()
        pieces.append(chr(int(code)) if code is not None else quoted.replace("''", "'"))
        position = match.end()
    return "".join(pieces) if position == len(literal) else None


def option_params(assignments):
    """`NAME=VALUE` options (-p): an integer, else a decimal number, else
    the text as it is; a value starting with a quote is read as a script's
    value is (`-p "p1='100'"` is the text 100)."""
    params = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        name = name.strip().lstrip(":")
        if not equals or not re.fullmatch(r"\w+", name):
            raise QueryError(f"bad parameter: {assignment}", hint="write -p NAME=VALUE, e.g. -p p1=0.5")
        params[name] = bindable(_option_value(value))
    return params


def _option_value(text):
    if text.startswith("'"):
        return sql_value(text)
    if INTEGER.fullmatch(text):
        return int(text)
    if DECIMAL.fullmatch(text):
        return float(text)
    return text


def bindable(value):
    """As the selection binds it: NaN as NULL, integers beyond SQLite's as floats."""
    return stored_number(value) if isinstance(value, (int, float)) else value
