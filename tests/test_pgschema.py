"""The PostgreSQL schema is schema.sql's: every SQLite table, column and view
exists in PostgreSQL with a matching type family, shared in schema `runq`
with a `home` column and seen one home at a time in `runq_home_<id>`."""

import sqlite3
import threading
from datetime import datetime

import pytest

from runq.engine import pgschema

psycopg = pytest.importorskip("psycopg")

# PostgreSQL's data_type -> the family of SQLite's declared type (PRAGMA table_info).
PG_FAMILIES = {"bigint": "INTEGER", "integer": "INTEGER", "double precision": "REAL", "text": "TEXT", "numeric": ""}


@pytest.fixture
def conn(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.install(conn)
        yield conn


def _sqlite_schema():
    db = sqlite3.connect(":memory:")
    db.executescript(pgschema.SCHEMA_SQL.read_text())
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
    return {name: [(r[1], r[2].upper()) for r in db.execute(f"PRAGMA table_info({name})")] for name in names}


def _pg_columns(conn, schema, name):
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, name),
    ).fetchall()
    return [(column, PG_FAMILIES.get(kind, kind)) for column, kind in rows]


def _register(conn, host="h", path="/home"):
    home = conn.execute("INSERT INTO runq.homes (host, path) VALUES (%s, %s) RETURNING id", (host, path)).fetchone()[0]
    pgschema.home_views(conn, home)
    return home


def test_every_sqlite_table_and_column_has_its_postgres_twin(conn):
    for name, columns in _sqlite_schema().items():
        shared = _pg_columns(conn, "runq", name)
        assert shared[0] == ("home", "INTEGER"), name
        assert [c for c, _ in shared[1:]] == [c for c, _ in columns], name
        for (column, sqlite_type), (_, pg_family) in zip(columns, shared[1:]):
            if sqlite_type:  # a view's computed column has no declared type in SQLite
                assert pg_family == sqlite_type, (name, column)


def test_a_home_sees_its_own_rows_under_the_sqlite_names(conn):
    first, second = _register(conn), _register(conn, path="/other")
    for home, run_id in ((first, "aaaa"), (second, "bbbb")):
        conn.execute(
            "INSERT INTO runq.runs (home, key, id, deleted, dir, status, started) VALUES (%s, 1, %s, 0, 'runs/x', 'completed', 1700000000000000)",
            (home, run_id),
        )
        conn.execute("INSERT INTO runq.tags VALUES (%s, 1, 'b'), (%s, 1, 'a'), (%s, 1, 'B')", (home, home, home))
    conn.execute(f"SET search_path = {pgschema.home_schema(first)}, runq")
    assert conn.execute("SELECT id FROM runs").fetchall() == [("aaaa",)]
    assert conn.execute("SELECT run_id, tags FROM runs_view").fetchall() == [("aaaa", "B a b")]
    sqlite_columns = {name: [c for c, _ in columns] for name, columns in _sqlite_schema().items()}
    for name, columns in sqlite_columns.items():
        assert [c for c, _ in _pg_columns(conn, pgschema.home_schema(first), name)] == columns


def test_views_show_local_time_and_sqlite_integers(conn):
    home = _register(conn)
    conn.execute(
        "INSERT INTO runq.attrs VALUES (%s, 1, 'cmd', 'raw', NULL, NULL, NULL, NULL), (%s, 1, 'x', 'int', %s, NULL, NULL, NULL)",
        (home, home, 2**62 + 1),
    )
    conn.execute(
        "INSERT INTO runq.runs (home, key, id, deleted, dir, status, started) VALUES (%s, 1, 'r', 0, 'runs/r', 'completed', 0)",
        (home,),
    )
    conn.execute(f"SET search_path = {pgschema.home_schema(home)}, runq")
    conn.execute("SET TIME ZONE 'UTC'")
    assert conn.execute("SELECT name, value, decoded FROM run_attrs ORDER BY name").fetchall() == [
        ("cmd", None, 0),
        ("x", str(2**62 + 1), 1),
    ]
    assert conn.execute("SELECT started FROM runs_view").fetchone() == (None,)  # 0: no time, as in SQLite
    conn.execute("UPDATE runq.runs SET started = 1700000000500000")
    assert conn.execute("SELECT started FROM runs_view").fetchone() == ("2023-11-14 22:13:20",)


def test_install_is_idempotent_and_upgrades_keep_homes(conn):
    home = _register(conn)
    assert pgschema.install(conn) is False
    conn.execute("UPDATE runq.meta_schema SET value = 'older'")
    assert pgschema.install(conn) is True
    assert conn.execute("SELECT count(*) FROM runq.homes").fetchone() == (1,)
    conn.execute(f"SET search_path = {pgschema.home_schema(home)}, runq")
    assert conn.execute("SELECT count(*) FROM runs_view").fetchone() == (0,)


def _at_once(pg_url, work, count=4):
    """Errors of `work(conn)` run by `count` connections at once."""
    errors = []

    def run():
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                work(conn)
        except Exception as e:  # noqa: BLE001 - the test reports whatever went wrong
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_machines_installing_at_once_do_not_collide(pg_url):
    assert _at_once(pg_url, pgschema.install) == []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        home = conn.execute("INSERT INTO runq.homes (host, path) VALUES ('h', '/p') RETURNING id").fetchone()[0]
    assert _at_once(pg_url, lambda conn: pgschema.home_views(conn, home)) == []


def _shown(value):
    """A value as compared across the two databases: numbers by value (numeric
    text is 0.00001 where SQLite's REAL shows 1e-05)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return str(value)


def test_views_show_what_sqlites_show(tmp_path, pg_url):
    import pgloader

    from runq.engine import executor
    from runq.engine.samplehome import HomeSpec, generate_home

    generate_home(tmp_path / "home", HomeSpec(runs=30, seed=2, profile="fidelity"), datetime(2026, 11, 29, 12))
    path = pgloader.decoded_sqlite_index(tmp_path / "home")
    sqlite = sqlite3.connect(path)
    with psycopg.connect(pg_url, autocommit=True) as pg:
        pgloader.use_home(pg, pgloader.load(path, pg))
        executor.set_local_time_zone(pg)
        for view, columns in pgschema.sqlite_views().items():
            names = ", ".join(map(pgschema.quoted, columns))
            rows = [
                sorted((tuple(map(_shown, row)) for row in conn.execute(f"SELECT {names} FROM {view}")), key=repr)
                for conn in (sqlite, pg)
            ]
            assert rows[0] and rows[0] == rows[1], view
