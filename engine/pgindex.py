"""A home's index in PostgreSQL: one database shared by many homes.

The schema `runq` (engine/pgschema.py) holds every home's rows, each with
its `home` id; each home reads them through its own schema of views,
`runq_home_<id>`, named as the SQLite index's tables. A PgIndex is an
indexer.Index whose connection is a PgConnection: with the home's views
first on the search path, the indexer's own SQL (the same change
detection, the same records) reads and updates this home's rows only,
while inserts become COPYs into the shared tables with the home's id, and
`BEGIN IMMEDIATE` takes the home's advisory lock, which serializes two
refreshes of one home and lets other homes' refreshes run.

psycopg is an optional dependency (`pip install 'runq[postgres]'`): it is
imported only when a PostgreSQL index is opened.
"""

import contextlib
import functools
import math
import os
import re
import time
from decimal import Decimal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from . import indexer
from .errors import HomeError, QueryError, QueryInterrupted

HOME_PARAMETER = "home"  # ?home=NAME in the URL: the home's name (else host name and real path)
LOCK_CLASS = 0x72756E71  # "runq": the first key of every advisory lock runq takes
CONNECT_TIMEOUT = 10
INSTALL_HINT = "pip install 'runq[postgres]'"
# Primary keys (after `home`) of the tables the indexer inserts into with
# INSERT OR REPLACE (an upsert) or INSERT OR IGNORE (a COPY of the first row
# of each key, as the insert keeps).
ROW_KEYS = {
    "meta": ("key",),
    "attrs": ("run_key", "name"),
    "flags": ("run_key", "name"),
    "scalars": ("run_key", "tag", "prefix"),
    "tags": ("run_key", "tag"),
    "comments": ("run_key", "seq"),
    "attr_names": ("name",),
    "flag_names": ("name",),
}


# The URL


class Target:
    """Where a PostgreSQL index is: the URL to connect with (the home's name
    taken out), the home's name if given, and the URL as it may be shown
    (no password)."""

    def __init__(self, url):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as e:
            raise HomeError(f"bad PostgreSQL URL {shown_url(url)}: {e}",
                            hint="postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?home=NAME]") from None
        query = parse_qsl(parts.query, keep_blank_values=True)
        names = [value for key, value in query if key == HOME_PARAMETER]
        self.home_name = names[-1] if names else None
        rest = urlencode([(key, value) for key, value in query if key != HOME_PARAMETER])
        self.url = urlunsplit(parts._replace(query=rest))
        self.password = unquote(parts.password) if parts.password else None
        self.shown = shown_url(url)
        if self.home_name == "":
            raise HomeError(f"bad PostgreSQL URL {self.shown}: an empty home name", hint="?home=NAME names the home")


def shown_url(url):
    """The URL without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)


# Connecting


def psycopg_module():
    try:
        import psycopg
    except ImportError:
        raise HomeError("an index in PostgreSQL needs psycopg", hint=INSTALL_HINT) from None
    return psycopg


def connect(target):
    """An autocommit psycopg connection to the target's database, with runq's schema installed."""
    psycopg = psycopg_module()
    from . import pgschema

    try:
        conn = psycopg.connect(target.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as e:
        raise HomeError(f"cannot connect to the index {target.shown}: {_reason(e, target)}") from None
    try:
        pgschema.install(conn)
    except psycopg.Error as e:  # e.g. a role that may not create schemas
        conn.close()
        raise HomeError(f"cannot set up the index in {target.shown}: {_reason(e, target)}",
                        hint="runq needs a role that may create schemas in the database") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _reason(error, target):
    """psycopg's message on one line, without the password."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines) or type(error).__name__
    text = re.sub(r"^connection failed: ", "", text)
    return text.replace(target.password, "***") if target.password else text


def register_home(conn, home, name=None):
    """The id of the home's row in runq.homes, made on first use: the row
    named `name` when given, else the one of this host and real path."""
    import socket

    host, path = socket.gethostname(), os.path.realpath(home.path)
    if name is not None:
        row = conn.execute("SELECT id FROM runq.homes WHERE name = %s", (name,)).fetchone()
        if row:
            return row[0]
    row = _home_here(conn, host, path)
    if row is None:  # ids are taken only by homes that are new (a conflict would use one up)
        conn.execute("INSERT INTO runq.homes (host, path, name) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                      (host, path, name))
        row = _home_here(conn, host, path)
    home_id, registered_name = row
    if name is not None and registered_name is None:
        conn.execute("UPDATE runq.homes SET name = %s WHERE id = %s", (name, home_id))
    elif name is not None and registered_name != name:
        raise HomeError(f"{path} on {host} is registered as the home '{registered_name}', not '{name}'",
                        hint=f"use ?home={registered_name}, or no home name")
    return home_id


def _home_here(conn, host, path):
    return conn.execute("SELECT id, name FROM runq.homes WHERE host = %s AND path = %s", (host, path)).fetchone()


def home_schema(home_id):
    return f"runq_home_{int(home_id)}"


def _use_home(conn, home_id):
    """Makes the home's views (if they are not there yet) and puts them first on the search path."""
    from . import pgschema

    schema = home_schema(home_id)
    missing = "SELECT to_regclass(%s) IS NULL"
    if conn.execute(missing, (f"{schema}.runs",)).fetchone()[0]:
        try:
            with conn.transaction():  # two processes making them at once would collide in the catalog
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, home_id))
                if conn.execute(missing, (f"{schema}.runs",)).fetchone()[0]:
                    pgschema.home_views(conn, home_id)
        except _psycopg().errors.UniqueViolation:  # made meanwhile by another process (an upgrade's)
            if conn.execute(missing, (f"{schema}.runs",)).fetchone()[0]:
                raise
    conn.execute(f"SET search_path = {schema}, runq")


# The index


class PgIndex(indexer.Index):
    """The index of one Guild home, kept in PostgreSQL."""

    backend = "PostgreSQL"
    dialect = "postgres"

    def __init__(self, home, target, lock_wait=None):
        self.home = home
        self.target = target
        self.path = target.shown  # what messages and `runq index` show
        self.notices = []
        raw = connect(target)
        try:
            self.home_id = register_home(raw, home, target.home_name)
            _use_home(raw, self.home_id)
        except _psycopg().Error as e:
            raw.close()
            raise HomeError(f"cannot register the home in {target.shown}: {_reason(e, target)}") from None
        except BaseException:
            raw.close()
            raise
        self.conn = PgConnection(raw, self.home_id, lock_wait or indexer.LockWait(), target.shown)
        self.home_identity = _storable_value(home.identity())  # as meta holds it: its NUL escaped
        self.dir_prefix = f"{home.path}/"

    def close(self):
        self.conn.close()

    @property
    def query_conn(self):
        return self.conn.pg  # the home's views first on its search path

    @property
    def views_schema(self):
        return home_schema(self.home_id)

    def _bulk_load(self, runs):
        """Rows already go in by COPY; SQLite's page cache and index rebuild have no counterpart here."""
        return contextlib.nullcontext()

    def delete_rows(self, run_ids):
        """As Index.delete_rows, one statement a table (not one a run: a round trip each)."""
        ids = list(run_ids)
        if not ids:
            return
        for table in indexer.CHILD_TABLES:
            self.conn.execute(f"DELETE FROM {table} WHERE run_key IN (SELECT key FROM runs WHERE id = ANY(?))", (ids,))
        self.conn.execute("DELETE FROM runs WHERE id = ANY(?)", (ids,))

    def move_rows(self, run_ids, deleted):
        """As Index.move_rows, in one statement."""
        ids = list(run_ids)
        if ids:
            self.conn.execute("UPDATE runs SET deleted = ?, dir = ? || id WHERE id = ANY(?)",
                              (deleted, indexer.relative_dir("", deleted), ids))

    def home_name(self):
        row = self.conn.execute("SELECT name FROM runq.homes WHERE id = ?", (self.home_id,)).fetchone()
        return row[0] if row else None

    def size(self):
        """Bytes of the shared tables, every home's rows."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = 'runq' AND c.relkind = 'r'"
        ).fetchone()
        return int(row[0])

    def clear(self):
        """Forgets every row of this home (a rebuild): the next refresh reads every run."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for table in (*indexer.CHILD_TABLES, *self.name_tables.values(), "runs", "meta"):
                self.conn.execute(f"DELETE FROM runq.{table} WHERE home = ?", (self.home_id,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def drop(self):
        """Removes this home's rows, its views and its registration."""
        self.clear()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(f"DROP SCHEMA IF EXISTS {home_schema(self.home_id)} CASCADE")
            self.conn.execute("DELETE FROM runq.homes WHERE id = ?", (self.home_id,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise


def open_index(home, url, lock_wait=None):
    return PgIndex(home, Target(url), lock_wait)


# The connection the indexer's SQL runs on


class PgConnection:
    """The part of sqlite3.Connection the indexer, purge and the commands
    use, over psycopg: `?` parameters, SQLite's statements for
    transactions and inserts done PostgreSQL's way."""

    def __init__(self, conn, home_id, lock_wait, shown):
        self.pg = conn
        self.home_id = home_id
        self.lock_wait = lock_wait
        self.shown = shown

    def close(self):
        self.pg.close()

    @property
    def in_transaction(self):
        return self.pg.info.transaction_status != _psycopg().pq.TransactionStatus.IDLE

    def execute(self, sql, params=()):
        if sql == "BEGIN IMMEDIATE":
            return self._begin_locked()
        return self._guarded(self.pg.execute, _postgres_sql(sql), _storable(params))

    def executemany(self, sql, rows):
        insert = _insert_statement(sql)
        if insert:
            table, columns, mode = insert
            return self._guarded(self._insert, table, tuple(columns), mode, rows)
        cursor = self.pg.cursor()
        self._guarded(cursor.executemany, _postgres_sql(sql), [_storable(row) for row in rows])
        return cursor

    def __enter__(self):
        self._begin_locked()
        return self

    def __exit__(self, kind, *_):
        self.execute("ROLLBACK" if kind else "COMMIT")

    def _begin_locked(self):
        """A transaction holding the home's lock: one writer per home, waiting
        as --lock-timeout says (announced after a slice), other homes free."""
        self._guarded(self.pg.execute, "BEGIN")
        started, announced = time.monotonic(), False
        while not self._guarded(self.pg.execute, "SELECT pg_try_advisory_xact_lock(%s, %s)",
                                (LOCK_CLASS, self.home_id)).fetchone()[0]:
            waited = time.monotonic() - started
            if waited > self.lock_wait.seconds:
                self.pg.execute("ROLLBACK")
                raise indexer.IndexLocked(
                    f"gave up after {self.lock_wait.seconds:g} s: another runq process still writes this "
                    f"home's index in {self.shown}",
                    hint="wait longer with --lock-timeout SECONDS or RUNQ_LOCK_TIMEOUT",
                )
            if not announced and waited >= indexer.LOCK_WAIT_SLICE and self.lock_wait.on_wait:
                self.lock_wait.on_wait(self.shown, self.lock_wait.seconds)
                announced = True
            time.sleep(0.02)

    def _insert(self, table, columns, mode, rows):
        """Rows into the shared table, with the home's id: upserted for
        INSERT OR REPLACE, else copied (the first row of a key kept, as
        INSERT OR IGNORE keeps it)."""
        if mode == "REPLACE":
            return self._upsert(table, columns, rows)
        if mode == "IGNORE":
            rows = _first_of_each_key(rows, [columns.index(c) for c in ROW_KEYS[table]])
        return self._copy(table, columns, rows)

    def _upsert(self, table, columns, rows):
        from .pgschema import quoted

        keys = ROW_KEYS[table]
        updates = ", ".join(f"{quoted(c)} = EXCLUDED.{quoted(c)}" for c in columns if c not in keys)
        sql = (f"INSERT INTO runq.{table} (home, {', '.join(map(quoted, columns))}) VALUES (%s{', %s' * len(columns)})"
               f" ON CONFLICT (home, {', '.join(map(quoted, keys))}) DO {f'UPDATE SET {updates}' if updates else 'NOTHING'}")
        cursor = self.pg.cursor()
        cursor.executemany(sql, [(self.home_id, *_storable(row)) for row in rows])
        return cursor

    def _copy(self, table, columns, rows):
        from .pgschema import quoted

        converters = self._converters(table, columns)
        with self.pg.cursor() as cursor:
            with cursor.copy(f"COPY runq.{table} (home, {', '.join(map(quoted, columns))}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((self.home_id, *[convert(v) for convert, v in zip(converters, row)]))
        return cursor

    @functools.lru_cache(maxsize=None)  # noqa: B019 - one adapter per connection, a few tables
    def _converters(self, table, columns):
        """For each column, what makes a value fit: SQLite keeps a float
        (an infinite or huge time) in an INTEGER column, bigint cannot."""
        types = dict(self.pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'runq' AND table_name = %s", (table,)).fetchall())
        return tuple(_bigint_value if types.get(c) == "bigint" else _copyable_value for c in columns)

    def _guarded(self, call, *args):
        """Calls psycopg; a lost server or a failed statement is one RunqError."""
        psycopg = _psycopg()
        try:
            return call(*args)
        except psycopg.OperationalError as e:
            raise HomeError(f"the index in {self.shown} failed: {_first_line(e)}") from None
        except psycopg.DatabaseError as e:
            raise HomeError(f"the index in {self.shown} refused a change: {_first_line(e)}") from None


def _psycopg():
    import psycopg

    return psycopg


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


_INSERT = re.compile(r"INSERT(?: OR (REPLACE|IGNORE))? INTO (\w+) \(([^)]*)\) VALUES \([?, ]*\)")


def _insert_statement(sql):
    """(table, columns, REPLACE|IGNORE|None) of the indexer's `INSERT ... VALUES (?, ...)`, else None."""
    match = _INSERT.fullmatch(sql.strip())
    if not match:
        return None
    mode, table, columns = match.groups()
    return table, [c.strip() for c in columns.split(",")], mode


@functools.lru_cache(maxsize=256)
def _postgres_sql(sql):
    """The indexer's SQLite SQL as PostgreSQL takes it: its SQL has no `?`
    or `%` inside quotes, and `INDEXED BY` is SQLite's planner hint."""
    sql = re.sub(r" INDEXED BY \w+", "", sql)
    return sql.replace("%", "%%").replace("?", "%s")


def _storable(row):
    """Values as the SQLite index holds them, in what PostgreSQL can hold: a
    NaN is NULL (SQLite binds it so), a NUL in text the escape \\x00 (as
    storable_text escapes what UTF-8 cannot hold)."""
    if isinstance(row, dict):
        return {k: _storable_value(v) for k, v in row.items()}
    return tuple(_storable_value(v) for v in row)


def _storable_value(value):
    if isinstance(value, str) and "\0" in value:
        return value.replace("\0", "\\x00")
    if isinstance(value, float):  # exactly, for `num` (numeric): a float8 cast keeps 15 digits
        return None if value != value else Decimal(repr(value))
    return value


def _copyable_value(value):
    """A value for COPY's text, where a float is written exactly as repr writes it."""
    if isinstance(value, float):
        return None if value != value else value
    return value.replace("\0", "\\x00") if isinstance(value, str) and "\0" in value else value


INT64 = (-(2**63), 2**63 - 1)


def _bigint_value(value):
    """A float in a bigint column: NaN is no value, others the nearest
    integer in range, which keeps their order (infinite and huge times
    sort past every real one, as they do in the SQLite index)."""
    if not isinstance(value, float):
        return value
    if value != value:
        return None
    if value in (math.inf, -math.inf):
        return INT64[value > 0]
    return min(max(math.floor(value), INT64[0]), INT64[1])


def _first_of_each_key(rows, key_positions):
    seen = set()
    kept = []
    for row in rows:
        key = tuple(row[i] for i in key_positions)
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept




# runq sql: every home's rows, read-only


def read_only_query(conn, sql, params=None, seconds=None):
    """The read-only query `runq sql` runs: PostgreSQL's for a PostgreSQL index."""
    if isinstance(conn, PgConnection):
        return PgReadOnlyQuery(conn, sql, params, seconds)
    from .executor import ReadOnlyQuery

    return ReadOnlyQuery(conn, sql, params, seconds)


class PgReadOnlyQuery:
    """executor.ReadOnlyQuery's promises on PostgreSQL: a read-only
    transaction over schema `runq` (every home's rows, with their `home`
    and the `homes` table), a statement timeout, and `interrupt()` cancelling
    the query on the server. Rows are streamed as the server sends them."""

    def __init__(self, conn, sql, params=None, seconds=None):
        self.conn, self.pg = conn, conn.pg
        self.sql, self.params = _pyformat(sql, params or {})
        self.seconds = seconds
        self.columns = []
        self.interrupted = False
        self._rows = None

    def __enter__(self):
        milliseconds = int(self.seconds * 1000) if self.seconds else 0
        self.conn.execute("BEGIN")
        try:
            self.pg.execute("SET TRANSACTION READ ONLY")
            self.pg.execute("SET LOCAL search_path = runq")
            self.pg.execute(f"SET LOCAL statement_timeout = {milliseconds}")
            self._rows = self._stream()
            self._first = self._next()
        except BaseException:
            self._end()
            raise
        return self

    def __exit__(self, *_exc):
        self._end()

    def __iter__(self):
        row = self._first
        while row is not None:
            yield row
            row = self._next()

    def interrupt(self):
        self.interrupted = True
        if self._rows is None:
            raise QueryInterrupted("interrupted")
        self.pg.cancel_safe()

    def _stream(self):
        cursor = self.pg.cursor()
        self._cursor = cursor
        return iter(cursor.stream(self.sql, self.params))

    def _next(self):
        psycopg = _psycopg()
        try:
            row = next(self._rows, None)
        except psycopg.Error as e:
            raise self._error(e) from None
        if self.interrupted:
            raise QueryInterrupted("interrupted")
        if not self.columns and self._cursor.description:
            self.columns = [column.name for column in self._cursor.description]
        return row

    def _error(self, error):
        if self.interrupted:
            return QueryInterrupted("interrupted")
        if isinstance(error, _psycopg().errors.QueryCanceled):
            return QueryError(f"query timed out after {self.seconds:g} s",
                              hint="--timeout SECONDS allows more, 0 no limit")
        if isinstance(error, _psycopg().errors.ReadOnlySqlTransaction):
            return QueryError(f"SQL error: {_first_line(error)}", hint="runq sql only reads the index")
        return QueryError(f"SQL error: {_first_line(error)}")

    def _end(self):
        if self.pg.closed:
            return
        try:
            self.pg.execute("ROLLBACK")
        except _psycopg().Error:  # a statement that ended the transaction itself
            pass


_QUOTED_OR_PARAMETER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|::|:(\w+)|%|\?")


def _pyformat(sql, params):
    """(SQL, params) with the `:name` parameters that runq's scripts use
    (or `?` with a sequence) written as psycopg's `%(name)s` (outside quotes
    and comments, `::` casts left alone) and every `%` doubled, so psycopg
    binds them."""
    positional = not isinstance(params, dict)
    if positional:
        params = {f"p{i}": value for i, value in enumerate(params)}
    names, places = set(params), iter(range(len(params) if positional else 0))

    def replace(match):
        text, name = match.group(0), match.group(1)
        if text == "%":
            return "%%"
        if text == "?":  # also a jsonb operator: a parameter only when parameters are a sequence
            return f"%(p{next(places, len(params))})s" if positional else "?"
        if name is not None and name in names:
            return f"%({name})s"
        return text.replace("%", "%%")

    return _QUOTED_OR_PARAMETER.sub(replace, sql), {k: _storable_value(v) for k, v in params.items()}
