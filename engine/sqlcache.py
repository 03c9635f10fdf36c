"""Compiled selections kept in the index, so that a selection made again runs
its SQL without compiling it, and without importing sqlglot (most of what a
short `runq runs list` would spend starting).

An entry holds one selection's SQL text and parameters, and says which
parameters hold values taken from `now`: those are recomputed on every use,
never reused as they were (`--started 'last 1 hours'` moves with the clock,
and so does a filter on `time`). Its key is a hash of everything that
decides the SQL: the selection as parsed, which of the `--started` bounds
exist, runq's version, the source of the modules that compile selections,
sqlglot's version and the index schema. Anything the key cannot describe
exactly is compiled every time instead. The table keeps the newest
MAX_ENTRIES entries, none longer than MAX_SQL_CHARS.
"""

import dataclasses
import functools
import importlib.util
import json
import sqlite3
from pathlib import Path
from typing import FrozenSet, NamedTuple

from .. import __version__
from .digest import sha256
from .indexer import schema_version
from .values import stored_number

MAX_ENTRIES = 32
MAX_SQL_CHARS = 100_000
# The modules whose code decides a selection's SQL: the compiler and what it
# imports from runq (a test checks this list against the compiler's imports).
COMPILING_MODULES = (
    "attrs", "compiler", "errors", "lexer", "opspec", "parser", "pgdialect", "selection", "sqlcache", "timerange", "tree",
    "values",
)
LOCK_MILLISECONDS = 100  # how long storing an entry may wait for another writer before giving up
ENTRY_COLUMNS = "sql, params, now_params, lazy_attrs, has_run_args, uses_scalars"


class CachedQuery(NamedTuple):
    """A compiled selection read back from the cache: what the executor uses of
    a compiler.CompiledQuery."""

    text: str
    params: dict
    lazy_attrs: FrozenSet[str]
    has_run_args: bool
    uses_scalars: bool  # reads the scalars table: event files a first build left unread are read first

    def sql(self):
        return self.text

    def bound_params(self):
        return self.params


def compiled_selection(conn, selection, now, count=False):
    """The selection's compiled query at `now` (with `count`, the query that
    counts its runs): the cached one when the index holds it, else compiled,
    and kept for the next time."""
    now_values = values_of_now(selection, now)
    key = cache_key(selection, now_values, count)
    cached = _lookup(conn, key, now_values) if key else None
    if cached is not None:
        return cached
    from .compiler import compile_selection  # imports sqlglot

    compiled = compile_selection(selection, now, count=count)
    if key:
        _store(conn, key, compiled, now_values)
    return compiled


def values_of_now(selection, now):
    """The values the compiler takes from `now`, by the role it gives their
    parameters (compiler._Compiler.now_param)."""
    values = {"now": int(now.timestamp() * 1000000)}
    if selection.started is not None:
        from .timerange import epoch_bounds

        values["started_from"], values["started_to"] = epoch_bounds(selection.started, now)
    return values


def cache_key(selection, now_values, count=False):
    """The hash of what decides the selection's SQL (its runs' query, or with
    `count` the query that counts them); None when something of it cannot be
    told exactly (then the selection is not cached)."""
    code = code_version()
    if code is None:
        return None
    try:
        described = _described(selection)
    except TypeError:
        return None
    unbounded = sorted(role for role, value in now_values.items() if value is None)  # no parameter, no test
    text = json.dumps([code, schema_version(), described, unbounded, "count" if count else "runs"], separators=(",", ":"))
    return sha256(text.encode()).hexdigest()


@functools.cache
def code_version():
    """runq's version, a hash of the compiling modules' source and sqlglot's
    version; None when a source file cannot be read (then nothing is cached)."""
    digest = sha256(__version__.encode())
    here = Path(__file__).resolve().parent
    sqlglot = importlib.util.find_spec("sqlglot")  # found, not imported
    paths = [here / f"{name}.py" for name in COMPILING_MODULES]
    try:
        paths.append(Path(sqlglot.submodule_search_locations[0]) / "_version.py")
        for path in paths:
            digest.update(path.read_bytes())
    except (OSError, TypeError, AttributeError, IndexError):
        return None
    return digest.hexdigest()


def _described(value):
    """`value` as JSON data that tells apart all the values the compiler does
    (1, 1.0 and True included); TypeError for a value it cannot describe."""
    if value is None or type(value) in (bool, int, float, str):
        return [type(value).__name__, value]
    if type(value) in (tuple, list):
        return [type(value).__name__, [_described(item) for item in value]]
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple (a selection, a RUN argument)
        return [kind, [[name, _described(getattr(value, name))] for name in value._fields]]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [kind, [[f.name, _described(getattr(value, f.name))] for f in dataclasses.fields(value)]]
    raise TypeError(f"cannot describe {type(value).__name__}")


def _lookup(conn, key, now_values):
    try:
        row = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM compiled WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:  # no cache is no error: the selection is compiled
        return None
    if row is None:
        return None
    text, params, now_params, lazy_attrs, has_run_args, uses_scalars = row
    params = json.loads(params)
    for name, role in json.loads(now_params).items():
        params[name] = stored_number(now_values[role])
    return CachedQuery(text, params, frozenset(json.loads(lazy_attrs)), bool(has_run_args), bool(uses_scalars))


def _store(conn, key, compiled, now_values):
    entry = _entry(compiled, now_values)
    if entry is None:
        return
    try:
        _write(conn, key, entry)
    except sqlite3.Error:  # another process writing, a full disk: the next time compiles again
        pass


def _entry(compiled, now_values):
    """The columns of an entry, or None for a compiled selection not to keep."""
    text, params = compiled.sql(), compiled.bound_params()
    if len(text) > MAX_SQL_CHARS:
        return None
    if any(compiled.params[name] != now_values.get(role) for name, role in compiled.now_params.items()):
        return None  # the compiler took something else from `now` than values_of_now says
    params_text = json.dumps(params)
    if not _same_values(json.loads(params_text), params):
        return None
    return (text, params_text, json.dumps(compiled.now_params), json.dumps(sorted(compiled.lazy_attrs)),
            int(compiled.has_run_args), int(compiled.uses_scalars))


def _same_values(read, written):
    """Whether parameters read back from JSON are the ones written, types included."""
    return read.keys() == written.keys() and all(
        type(read[name]) is type(value) and read[name] == value for name, value in written.items()
    )


def _write(conn, key, entry):
    """Inserts the entry and drops the oldest beyond MAX_ENTRIES. Waits for
    another writer only briefly: sqlite3's own wait, not the index's long one."""
    execute = functools.partial(sqlite3.Connection.execute, conn)
    waited = execute("PRAGMA busy_timeout").fetchone()[0]
    execute(f"PRAGMA busy_timeout = {LOCK_MILLISECONDS}")
    try:
        with conn:
            execute("BEGIN IMMEDIATE")
            execute(f"INSERT OR REPLACE INTO compiled (key, {ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", (key, *entry))
            execute("DELETE FROM compiled WHERE rowid <= (SELECT MAX(rowid) FROM compiled) - ?", (MAX_ENTRIES,))
    finally:
        execute(f"PRAGMA busy_timeout = {waited}")
