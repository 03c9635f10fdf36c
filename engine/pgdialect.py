"""PostgreSQL's spelling of what runq's SQL asks of SQLite: the few
expressions whose SQLite form PostgreSQL reads differently or not at all.

Both the compiler (selections) and pgschema (the views of schema.sql) build
these, so a time shows as the same text in both.
"""

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres

TIME_FORMAT = "YYYY-MM-DD HH24:MI:SS"  # SQLite's '%Y-%m-%d %H:%M:%S'


class RunqPostgres(Postgres):
    """PostgreSQL as runq runs it: parameters bound by psycopg (%(name)s)."""


def local_time_text(seconds):
    """SQLite's strftime('%Y-%m-%d %H:%M:%S', seconds, 'unixepoch', 'localtime'):
    PostgreSQL formats a timestamptz in the session's time zone, which the
    executor sets to the local one."""
    stamp = exp.Anonymous(this="to_timestamp", expressions=[seconds])
    return exp.Anonymous(this="to_char", expressions=[stamp, exp.Literal.string(TIME_FORMAT)])


def truthy(number):
    """An integer used as a condition, as SQLite reads it: non-zero (NULL stays NULL)."""
    return exp.NEQ(this=number, expression=exp.Literal.number(0))


def zero_padded(number):
    """printf's %02d: at least two characters, zeros on the left of a
    non-negative number ('-5' stays '-5', as in C)."""
    spaced = exp.Anonymous(this="format", expressions=[exp.Literal.string("%2s"), number])
    return exp.Anonymous(this="replace", expressions=[spaced, exp.Literal.string(" "), exp.Literal.string("0")])


def code_point_order(text):
    """Text compared as Python compares str: by code point, whatever the
    database's locale."""
    return exp.Collate(this=text, expression=exp.Identifier(this="C", quoted=True))
