"""Runs compiled selections against the index, and ad-hoc SQL (runq sql)
read-only, within a time limit, stoppable.

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
import time
from itertools import groupby
from typing import NamedTuple, Optional

from .errors import HomeError, QueryError, QueryInterrupted, SelectionError

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
    # The columns compiler.RUN_COLUMNS selects, in its order (a test checks
    # it: importing the compiler here would load sqlglot into every command).
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

    @property
    def flags(self):
        """The run's flags, read from its directory."""
        return self.get("flags", {})

    def get(self, name, default=None):
        """An attribute read from the run's directory, as Guild's `run.get`."""
        from .details import attr

        return attr(self.dir, name, default)


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


def select_runs(conn, compiled, home_dir=None, limit=None):
    """The runs a CompiledQuery selects, in Guild's order; raises SelectionError.

    `conn` is an SQLite connection, or a psycopg one whose search_path shows
    one home (pgschema) for a query compiled with dialect="postgres".
    Raw attributes it names must have been decoded (Index.decode_lazy).
    The index holds run directories relative to the home: given the home's
    path, the runs carry whole paths. With `limit`, only the first `limit`
    runs are read (a selection without RUN arguments): SQLite stops there."""
    if limit is not None and compiled.has_run_args:
        raise ValueError("RUN arguments are resolved over every selected run: no limit")
    select = _select_in_sqlite if isinstance(conn, sqlite3.Connection) else _select_in_postgres
    return select(conn, compiled, _run_maker(home_dir), limit)


def count_runs(conn, compiled):
    """How many runs a selection has, by its query compiled with count=True."""
    select = _select_in_sqlite if isinstance(conn, sqlite3.Connection) else _select_in_postgres
    return select(conn, compiled, lambda row: row[0], None)[0]


def _run_maker(home_dir):
    """A row -> SelectedRun function; with `home_dir`, whole run directories."""
    if home_dir is None:
        return _selected_run
    return lambda row: _selected_run((row[0], row[1], f"{home_dir}/{row[2]}", *row[3:]))


def _rows_to_runs(compiled, rows, make, limit):
    if compiled.has_run_args:
        return resolve_run_args(rows, make)
    if limit is not None:
        rows = rows.fetchmany(limit)
    return [make(row) for row in rows]


def _select_in_sqlite(conn, compiled, make, limit):
    _query_state.error = None
    try:
        cursor = conn.execute(compiled.sql(), compiled.bound_params())
        return _rows_to_runs(compiled, cursor, make, limit)
    except sqlite3.OperationalError as e:  # e.g. an expression deeper than SQLite allows
        raise _query_state.error or SelectionError(f"the index cannot run this selection: {e}") from None
    except sqlite3.DatabaseError as e:  # a corrupt index used as it is (--no-refresh)
        raise HomeError(f"the index is corrupt: {e}", hint="'runq index --rebuild' builds it again") from None


# PostgreSQL: the same selections, compiled for it (engine/pgdialect.py)

# SQLite joins at most 64 tables; PostgreSQL plans that many LEFT JOINs in
# under a second, but takes minutes and gigabytes for a few hundred. Both
# refuse the same selections (a filter naming over 21 values).
MAX_JOINED_TABLES = 64

PATTERN_TESTS = {
    "regexp": lambda pattern, text: regexp(pattern, text),
    "fnmatch": lambda pattern, text: shell_match(text, pattern),
}


def _select_in_postgres(conn, compiled, make, limit):
    import psycopg

    if getattr(compiled, "dialect", "sqlite") != "postgres":  # a selection from the SQLite index's cache has none
        raise ValueError("a selection run in PostgreSQL is compiled with dialect='postgres'")
    _check_joined_tables(compiled.expression)
    try:
        params = _python_matches(conn, compiled.bound_params())
        set_local_time_zone(conn)
        if limit is None:
            return _rows_to_runs(compiled, conn.execute(compiled.sql(), params), make, limit)
        # A server-side cursor: only the rows read cross the wire, not the whole selection.
        with conn.transaction(), conn.cursor(name="runq_selection") as cursor:
            cursor.execute(compiled.sql(), params)
            return _rows_to_runs(compiled, cursor, make, limit)
    except psycopg.Error as e:
        raise SelectionError(f"the index cannot run this selection: {e}".strip()) from None


def _check_joined_tables(query):
    from sqlglot import exp  # PostgreSQL's path only: selecting from SQLite's cache needs no sqlglot

    joined = max(len(select.args.get("joins") or ()) + 1 for select in query.find_all(exp.Select))
    if joined > MAX_JOINED_TABLES:
        raise SelectionError(
            f"the index cannot run this selection: at most {MAX_JOINED_TABLES} tables in a join",
            hint="name fewer attributes, flags and scalars in one filter",
        )


def _python_matches(conn, params):
    """Parameters with each pattern's matches in place of the pattern: the
    distinct values of its column that Python's test accepts (a -Fo
    regular expression searched as Guild does, and stopped when too slow)."""
    from psycopg import sql

    from .pgdialect import PythonMatch

    filled = dict(params)
    for name, value in params.items():
        if isinstance(value, PythonMatch):
            column = sql.Identifier(value.column)
            query = sql.SQL("SELECT DISTINCT {0} FROM runs WHERE {0} IS NOT NULL").format(column)
            test = PATTERN_TESTS[value.test]
            filled[name] = [text for (text,) in conn.execute(query) if test(value.pattern, text)]
    return filled


def set_local_time_zone(conn):
    """Times show as local time text, as SQLite's 'localtime' shows them:
    PostgreSQL formats them in the session's time zone. A zone it does not
    know (a $TZ only the C library reads) gives way to the current offset."""
    import psycopg

    from .pgdialect import fixed_offset_zone, local_time_zone

    set_zone = "SELECT set_config('TimeZone', %s, false)"
    try:
        with conn.transaction():
            conn.execute(set_zone, (local_time_zone(),))
    except psycopg.errors.InvalidParameterValue:
        conn.execute(set_zone, (fixed_offset_zone(),))


_selected_run = SelectedRun._make


def resolve_run_args(rows, make=_selected_run):
    """Runs picked by RUN arguments (rows ordered by argument, then position)."""
    selected = {}
    for _arg, arg_rows in groupby(rows, key=lambda row: row[0]):
        arg_rows = list(arg_rows)
        text, by_index = arg_rows[0][1], arg_rows[0][2]
        runs = [make(row[3:]) for row in arg_rows if row[3] is not None]
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


# Ad-hoc SQL (runq sql): reads only, within a time budget, stoppable

ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
# Pragmas whose argument names what to describe; they never write.
DESCRIBING_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "function_list", "pragma_list", "collation_list", "module_list",
    "compile_options", "database_list", "foreign_key_check", "integrity_check", "quick_check",
})
# Settings that may be read but not set (a value would set them).
READABLE_SETTINGS = frozenset({
    "journal_mode", "user_version", "schema_version", "page_size", "page_count", "freelist_count",
    "encoding", "foreign_keys", "query_only", "application_id",
})
ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in (
        "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
        "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE",
        "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER",
        "DROP_VIEW", "INSERT", "PRAGMA", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE",
        "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "SAVEPOINT",
    )
}
SCHEMA_WRITES = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
PROGRESS_STEPS = 10000  # SQLite virtual machine steps between two checks of the clock and Ctrl-C


class ReadOnlyGuard:
    """An SQLite authorizer that allows reading and nothing else, and
    remembers the first statement part it refused (for the message)."""

    def __init__(self):
        self.refused = None

    def __call__(self, action, arg1, arg2, _db, _trigger):
        if action in ALLOWED_ACTIONS or self._allowed_pragma(action, arg1, arg2):
            return sqlite3.SQLITE_OK
        # SQLite asks this while it sets up a pragma's table-valued function
        # (pragma_table_info(...)); a real UPDATE of sqlite_master is refused
        # by SQLite itself unless writable_schema is set, a pragma write.
        if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
            return sqlite3.SQLITE_OK
        if self.refused is None:
            self.refused = _refused_text(action, arg1, arg2)
        return sqlite3.SQLITE_DENY

    @staticmethod
    def _allowed_pragma(action, name, value):
        if action != sqlite3.SQLITE_PRAGMA:
            return False
        name = (name or "").lower()
        return name in DESCRIBING_PRAGMAS or (name in READABLE_SETTINGS and value is None)


def _refused_text(action, arg1, arg2):
    name = ACTION_NAMES.get(action, f"action {action}")
    if str(arg1).startswith("sqlite_") and action in SCHEMA_WRITES:  # CREATE and DROP ask for these first
        return "changing the schema"
    if action == sqlite3.SQLITE_PRAGMA:
        return f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
    return f"{name} ({arg1})" if arg1 else name


class ReadOnlyQuery:
    """Ad-hoc SQL run so that it can only read, stops after `seconds` of
    SQLite's time (None: never), and stops on `interrupt()`.

        with ReadOnlyQuery(conn, sql, params, seconds) as query:
            query.columns; for row in query: ...

    Only the time spent inside SQLite counts, not the time the caller takes
    to write rows out (a pager or a slow pipe must not time a query out).
    The connection is given back as it was: no authorizer, no progress
    handler, query_only off.
    """

    def __init__(self, conn, sql, params=None, seconds=None):
        self.conn, self.sql, self.params, self.seconds = conn, sql, params or {}, seconds
        self.guard = ReadOnlyGuard()
        self.columns = []
        self.cursor = None
        self.interrupted = self.timed_out = False
        self._spent = 0.0
        self._running_since = None

    def __enter__(self):
        self.conn.execute("PRAGMA query_only = ON")  # belt and braces
        self.conn.set_authorizer(self.guard)
        self.conn.set_progress_handler(self._progress, PROGRESS_STEPS)
        try:
            self.cursor = self._in_sqlite(self.conn.execute, self.sql, self.params)
        except BaseException:
            self._restore()
            raise
        self.columns = [d[0] for d in self.cursor.description or ()]
        return self

    def __exit__(self, *_exc):
        self._restore()

    def __iter__(self):
        """Rows one at a time, each as soon as SQLite has it."""
        fetch = self.cursor.fetchone
        while True:
            row = self._in_sqlite(fetch)
            if self.interrupted:  # Ctrl-C just as SQLite returned
                raise QueryInterrupted("interrupted")
            if row is None:
                return
            yield row

    def interrupt(self):
        """Stops the query; for a SIGINT handler. Outside SQLite it raises
        QueryInterrupted at once; inside, the progress handler stops SQLite
        (an exception raised there would be swallowed)."""
        self.interrupted = True
        if self._running_since is None:
            raise QueryInterrupted("interrupted")

    def _progress(self):
        if self.interrupted:
            return 1
        if self.seconds and self._spent + time.monotonic() - self._running_since > self.seconds:
            self.timed_out = True
            return 1
        return 0

    def _in_sqlite(self, call, *args):
        self._running_since = time.monotonic()
        try:
            return call(*args)
        except sqlite3.Error as e:
            raise self._error(e) from None
        finally:
            self._spent += time.monotonic() - self._running_since
            self._running_since = None

    def _error(self, error):
        if self.interrupted:
            return QueryInterrupted("interrupted")
        if self.timed_out:
            return QueryError(
                f"query timed out after {self.seconds:g} s", hint="--timeout SECONDS allows more, 0 no limit"
            )
        if self.guard.refused:
            return QueryError(
                f"SQL error: {self.guard.refused} is not allowed", hint="runq sql only reads the index"
            )
        return QueryError(f"SQL error: {error}")

    def _restore(self):
        self.conn.set_progress_handler(None, 0)
        self.conn.set_authorizer(None)
        if self.cursor is not None:
            self.cursor.close()
        self.conn.execute("PRAGMA query_only = OFF")


def query_plan(schema, sql, params):
    """SQLite's EXPLAIN QUERY PLAN rows (id, parent id, detail) for `sql`, on
    an empty in-memory database of `schema`. runq keeps no statistics
    (ANALYZE), so SQLite plans from the schema alone: the plan is the one
    the index gets, and no index is opened."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(schema)
        register_functions(conn)
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    finally:
        conn.close()
    return [(row[0], row[1], row[3]) for row in rows]


def stored_attrs(conn, run_ids, names):
    """{run id: {name: (kind, num, str, json)}}: the index's rows of these attributes."""
    found = {}
    name_marks = ", ".join("?" * len(names))
    for start in range(0, len(run_ids), 10000):
        chunk = list(run_ids[start : start + 10000])
        rows = conn.execute(
            f"SELECT r.id, a.name, a.kind, a.num, a.str, a.json FROM runs AS r JOIN attrs AS a ON a.run_key = r.key"
            f" WHERE r.id IN ({', '.join('?' * len(chunk))}) AND a.name IN ({name_marks})",
            [*chunk, *names],
        )
        for run_id, name, *stored in rows:
            found.setdefault(run_id, {})[name] = tuple(stored)
    return found
