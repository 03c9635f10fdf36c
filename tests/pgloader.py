"""Test-only: a built SQLite index copied into PostgreSQL, laid out as
engine/pgschema.py lays out the index (one home registered), so that
selections compiled for PostgreSQL can be checked against SQLite's answers
on the same rows, whoever fills the PostgreSQL index in the product."""

import sqlite3

from runq.engine import api, pgschema

# The SQLite index's own state (its home's path and device, refresh times):
# nothing a selection reads.
SQLITE_BOOKKEEPING = {"meta"}


def decoded_sqlite_index(home):
    """The path of the home's SQLite index, refreshed, with every raw
    attribute decoded (as filters naming them would leave it)."""
    with api.open(home) as index:
        raw = index.index.conn.execute("SELECT DISTINCT name FROM attrs WHERE kind = 'raw'").fetchall()
        index.index.decode_lazy({name for name, in raw})
        return index.path


def load(sqlite_path, pg_conn, host="test-host", path="/test/home"):
    """Copies every table of the SQLite index into the shared tables as one
    new home; returns the home's id."""
    pgschema.install(pg_conn)
    home_id = pg_conn.execute(
        "INSERT INTO runq.homes (host, path) VALUES (%s, %s) RETURNING id", (host, path)
    ).fetchone()[0]
    pgschema.home_views(pg_conn, home_id)
    source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        for table, columns in pgschema.sqlite_tables().items():
            if table in SQLITE_BOOKKEEPING:
                continue
            _copy_table(source, pg_conn, home_id, table, columns)
    finally:
        source.close()
    return home_id


def _copy_table(source, pg_conn, home_id, table, columns):
    names = ", ".join(map(pgschema.quoted, columns))
    rows = source.execute(f"SELECT {names} FROM {table}")
    with pg_conn.cursor().copy(f"COPY runq.{table} (home, {names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row((home_id, *map(pgschema.pg_number, row)))


def use_home(pg_conn, home_id):
    """The connection sees one home under the SQLite index's names."""
    pg_conn.execute(f"SET search_path = {pgschema.home_schema(home_id)}, runq")
