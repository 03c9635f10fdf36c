"""Runs compiled selections against the index.

The SQL functions a selection may call are registered here, on every
connection runq opens: `regexp` (Python's re.search, for -Fo patterns),
`runq_fnmatch` (shell wildcards), and `runq_list_compare` /
`runq_list_contains` (Python's list comparison and membership).
"""

import fnmatch
import functools
import json
import operator
import re
import sqlite3
import threading
from itertools import groupby
from typing import NamedTuple, Optional

from .compiler import RUN_COLUMNS
from .errors import SelectionError

# A -Fo pattern may backtrack for ever (`^(a|aa)+$` on a long name); each
# (pattern, operation) is searched once, and gives up after this long.
PATTERN_SECONDS = 1.0

LIST_OPS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class SelectedRun(NamedTuple):
    id: str
    deleted: int
    dir: str
    operation: Optional[str]
    op_dir: Optional[str]
    started: Optional[int]
    stopped: Optional[int]
    status: str
    remote: Optional[str]
    exit_status: Optional[int]
    pid: Optional[int]
    label: Optional[str]
    marked: int
    position: int  # 1-based index in the filtered list

    @property
    def short_id(self):
        return self.id[:8]


def register_functions(conn):
    conn.create_function("regexp", 2, regexp, deterministic=True)
    conn.create_function("runq_fnmatch", 2, shell_match, deterministic=True)
    conn.create_function("runq_list_compare", 3, list_compare, deterministic=True)
    conn.create_function("runq_list_contains", 2, list_contains, deterministic=True)


class PatternTooSlow(SelectionError):
    """A -Fo regular expression that did not finish in time."""


class _QueryState(threading.local):
    error = None  # what a function raised: SQLite only says that one did


_query_state = _QueryState()


@functools.lru_cache(maxsize=256)
def _pattern(pattern):
    """The compiled pattern: checked with Python's `re`, the syntax Guild
    uses, and run by `regex`, which can be stopped; None when it is bad."""
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    import regex  # only -Fo patterns need it

    try:
        return regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError):  # a pattern only `re` reads: no time limit then
        return re.compile(pattern)


@functools.lru_cache(maxsize=4096)
def _search(pattern, text):
    compiled = _pattern(pattern)
    if compiled is None:
        return False
    if compiled.__class__ is re.Pattern:
        return bool(compiled.search(text))
    try:
        return bool(compiled.search(text, timeout=PATTERN_SECONDS))
    except TimeoutError:
        raise PatternTooSlow(
            f"the pattern '{pattern}' took over {PATTERN_SECONDS:g} s to search '{text}'",
            hint="simplify it: nested repetitions such as (a+)+ can take for ever",
        ) from None


def regexp(pattern, text):
    """`text REGEXP pattern`: Guild's re.search; a bad pattern matches nothing."""
    if not isinstance(pattern, str) or not isinstance(text, str):
        return 0
    try:
        return int(_search(pattern, text))
    except PatternTooSlow as e:
        _query_state.error = e  # SQLite turns it into "user-defined function raised exception"
        raise


def shell_match(text, pattern):
    if not isinstance(pattern, str) or not isinstance(text, str):
        return 0
    return int(bool(text) and fnmatch.fnmatch(text, pattern))


def list_compare(value_json, op, target_json):
    """Python's comparison of two lists; False where Python raises TypeError."""
    if value_json is None:
        return 0
    try:
        return int(bool(LIST_OPS[op](json.loads(value_json), json.loads(target_json))))
    except TypeError:
        return 0


def list_contains(value_json, target_json):
    """Guild's `contains` on a list value: membership; a list target needs every item."""
    if value_json is None:
        return 0
    value = json.loads(value_json)
    if not value:
        return 0
    target = json.loads(target_json)
    if isinstance(target, list):
        return int(all(item in value for item in target))
    return int(target in value)


def select_runs(conn, compiled):
    """The runs a CompiledQuery selects, in Guild's order; raises SelectionError.

    Large attributes it names must have been decoded (Index.decode_lazy)."""
    _query_state.error = None
    try:
        rows = conn.execute(compiled.sql(), compiled.bound_params()).fetchall()
    except sqlite3.OperationalError as e:  # e.g. an expression deeper than SQLite allows
        raise _query_state.error or SelectionError(f"the index cannot run this selection: {e}") from None
    if not compiled.has_run_args:
        return [_selected_run(row) for row in rows]
    return resolve_run_args(rows)


_selected_run = SelectedRun._make


def resolve_run_args(rows):
    """Runs picked by RUN arguments (rows ordered by argument, then position)."""
    selected = {}
    for _arg, arg_rows in groupby(rows, key=lambda row: row[0]):
        arg_rows = list(arg_rows)
        text, by_index = arg_rows[0][1], arg_rows[0][2]
        runs = [_selected_run(row[3:]) for row in arg_rows if row[3] is not None]
        if not by_index:
            _check_one_match(text, runs)
        for run in runs:
            selected.setdefault(run.id, run)
    return list(selected.values())


def _check_one_match(text, runs):
    if not runs:
        raise SelectionError(
            f"could not find a run matching '{text}'",
            hint="try 'runq runs list' for a list",
        )
    if len(runs) > 1:
        ids = ", ".join(run.short_id for run in runs[:10])
        more = " ..." if len(runs) > 10 else ""
        raise SelectionError(
            f"'{text}' matches multiple runs ({ids}{more})",
            hint="use a longer run id prefix",
        )


def execute_readonly(conn, sql):
    """Runs ad-hoc SQL with writes refused; returns (column names, rows)."""
    conn.execute("PRAGMA query_only = ON")
    try:
        cursor = conn.execute(sql)
        columns = [d[0] for d in cursor.description or ()]
        return columns, cursor.fetchall()
    except sqlite3.Error as e:
        raise SelectionError(f"SQL error: {e}") from None
    finally:
        conn.execute("PRAGMA query_only = OFF")


assert RUN_COLUMNS == SelectedRun._fields[: len(RUN_COLUMNS)]
