"""PostgreSQL's spelling of what runq's SQL asks of SQLite: the few
expressions whose SQLite form PostgreSQL reads differently or not at all.

Both the compiler (selections) and pgschema (the views of schema.sql) build
these, so a time shows as the same text in both. No `%` appears in the SQL
they make: psycopg reads `%` as the start of a parameter.
"""

import math
import os
import time
from decimal import Decimal
from typing import NamedTuple

from sqlglot import exp

TIME_FORMAT = "YYYY-MM-DD HH24:MI:SS"  # SQLite's '%Y-%m-%d %H:%M:%S'


class PythonMatch(NamedTuple):
    """A parameter Python fills in when the selection runs: the distinct
    values of a runs column that Python's re.search (test `regexp`) or
    fnmatch (`fnmatch`) accepts. PostgreSQL's regular expressions are not
    Python's, and a pattern that backtracks for ever must be stoppable."""

    test: str
    column: str
    pattern: str

    def __str__(self):
        how = "re.search" if self.test == "regexp" else "fnmatch"
        return f"the {self.column} values that Python's {how} matches with {self.pattern!r}"


def local_time_text(seconds):
    """SQLite's strftime('%Y-%m-%d %H:%M:%S', seconds, 'unixepoch', 'localtime'):
    PostgreSQL formats a timestamptz in the session's time zone, which the
    executor sets to the local one."""
    stamp = exp.Anonymous(this="to_timestamp", expressions=[seconds])
    return exp.Anonymous(this="to_char", expressions=[stamp, exp.Literal.string(TIME_FORMAT)])


def truthy(number):
    """An integer used as a condition, as SQLite reads it: non-zero (NULL stays NULL)."""
    return exp.NEQ(this=number, expression=exp.Literal.number(0))


def code_point_order(text):
    """Text compared as Python compares str: by code point, whatever the
    database's locale."""
    return exp.Collate(this=text, expression=exp.Identifier(this="C", quoted=True))


def exact_number(real):
    """A double precision column as numeric, exactly (its shortest text: the
    float8 -> numeric cast keeps only 15 digits), so that a COALESCE with the
    numeric `num` column stays numeric and keeps int64 values exact."""
    as_text = exp.Cast(this=real, to=exp.DataType.build("TEXT"))
    return exp.Cast(this=as_text, to=exp.DataType.build("NUMERIC"))


def as_text(expression):
    """CAST(x AS TEXT), except for NULL (which _coalesce leaves out)."""
    if isinstance(expression, exp.Null):
        return expression
    return exp.Cast(this=expression, to=exp.DataType.build("TEXT"))


def any_of(_test, column, param):
    """column = ANY(the values Python matched): see PythonMatch."""
    values = exp.Cast(this=param, to=exp.DataType.build("TEXT[]", dialect="postgres"))
    return exp.EQ(this=column, expression=exp.Any(this=exp.Paren(this=values)))


def clock_text(seconds):
    """printf('%d:%02d:%02d', hours, minutes, seconds): a function of schema
    runq (pgschema), which spells it without `%`."""
    return exp.Anonymous(this="runq_clock_text", expressions=[seconds])


def bindable(value):
    """A parameter for psycopg: a float as the exact decimal of its shortest
    text, so numeric columns compare with it as Python compares numbers
    (an int64 beside a float, exactly)."""
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value))
    if isinstance(value, float):
        return Decimal("Infinity") if value > 0 else Decimal("-Infinity")
    return value


def local_time_zone():
    """This machine's time zone as PostgreSQL names it: what C's localtime()
    (SQLite's 'localtime') uses: $TZ, else /etc/localtime's zone, else the
    current offset from UTC."""
    zone = os.environ.get("TZ", "").lstrip(":")
    if zone.startswith("/") and "/zoneinfo/" in zone:
        zone = zone.split("/zoneinfo/", 1)[1]
    if zone:
        return zone
    link = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in link:
        return link.split("/zoneinfo/", 1)[1]
    return fixed_offset_zone()


def fixed_offset_zone():
    """A POSIX zone of the current offset from UTC: <+0530>-05:30 (POSIX counts west)."""
    seconds_east = time.localtime().tm_gmtoff
    sign = "+" if seconds_east >= 0 else "-"
    hours, minutes = divmod(abs(seconds_east) // 60, 60)
    west = "-" if seconds_east >= 0 else "+"
    return f"<{sign}{hours:02}{minutes:02}>{west}{hours:02}:{minutes:02}"
