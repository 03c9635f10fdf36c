"""The runq index in PostgreSQL: its DDL, made from schema.sql.

Several homes share one database. Schema `runq` holds the shared tables:
`runq.homes` (one row a home) and every table of schema.sql with a first
column `home` (primary keys, unique constraints and indexes start with it),
the views of schema.sql over them (with `home` too), and the SQL functions
that compiled selections call. Schema `runq_home_<id>` holds, for one home,
a view named as each table and view of the SQLite index, with its SQLite
columns and that home's rows only: with `search_path = runq_home_<id>, runq`,
the SQL compiled for SQLite names the same tables and sees one home.

Types: INTEGER is bigint (run keys and times in microseconds pass 2^31);
REAL is double precision; TEXT is text COLLATE "C" (code-point order, as
Python compares str, whatever the database's locale); the untyped `num`
(ints and floats) is numeric, which keeps every int64 exact. Bind a float to
`num` as `pg_number(value)`: PostgreSQL's float8 -> numeric cast keeps only
15 digits. JSON stays text: Python writes NaN, which jsonb refuses.
"""

import hashlib
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import sqlglot
from sqlglot import exp

from .pgdialect import code_point_order, local_time_text, truthy

SCHEMA = "runq"
DIALECT = "postgres"
SCHEMA_SQL = Path(__file__).resolve().parent.parent / "schema.sql"
# pg_advisory_xact_lock's key while installing: "runq" in ASCII.
INSTALL_LOCK = 0x72756E71
# What an upgrade keeps in schema runq: who the homes are, and the version.
KEPT_ON_UPGRADE = ("homes", "meta_schema")

HOMES_DDL = """
CREATE TABLE IF NOT EXISTS runq.homes (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host text COLLATE "C" NOT NULL,
    path text COLLATE "C" NOT NULL,
    name text COLLATE "C" UNIQUE,
    UNIQUE (host, path)
)"""

META_SCHEMA_DDL = """
CREATE TABLE IF NOT EXISTS runq.meta_schema (
    key text COLLATE "C" PRIMARY KEY,
    value text
)"""

# SQLite type -> PostgreSQL type; None: a column declared without a type.
COLUMN_TYPES = {
    "INT": "BIGINT",
    "BIGINT": "BIGINT",
    "DOUBLE": "DOUBLE PRECISION",
    "FLOAT": "DOUBLE PRECISION",
    "TEXT": 'TEXT COLLATE "C"',
    None: "NUMERIC",
}

# Python's comparison and membership of JSON values, as executor.list_compare
# and executor.list_contains decide them in SQLite: numbers and booleans
# compare by value (True == 1), strings by code point, lists item by item,
# dicts only for equality; where Python raises TypeError the test is false.
FUNCTIONS = r"""
-- SQLite's printf('%d:%02d:%02d', s / 3600, (s / 60) % 60, s % 60): a run's
-- time as Guild shows it (integer division and remainder take the sign of
-- s, and %02d pads with zeros to two characters, a minus sign included).
CREATE FUNCTION runq.runq_clock_text(s bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT (s / 3600)::text
        || ':' || lpad(((s / 60) % 60)::text, greatest(2, length(((s / 60) % 60)::text)), '0')
        || ':' || lpad((s % 60)::text, greatest(2, length((s % 60)::text)), '0')
$$;

CREATE FUNCTION runq.py_number(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(v) WHEN 'boolean' THEN (v::boolean)::int::numeric ELSE v::numeric END
$$;

CREATE FUNCTION runq.py_is_number(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_typeof(v) IN ('number', 'boolean') $$;

CREATE FUNCTION runq.py_equal(a jsonb, b jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
BEGIN
    IF runq.py_is_number(a) AND runq.py_is_number(b) THEN
        RETURN runq.py_number(a) = runq.py_number(b);
    ELSIF jsonb_typeof(a) <> jsonb_typeof(b) THEN
        RETURN false;
    ELSIF jsonb_typeof(a) = 'array' THEN
        IF jsonb_array_length(a) <> jsonb_array_length(b) THEN
            RETURN false;
        END IF;
        FOR i IN 0 .. jsonb_array_length(a) - 1 LOOP
            IF NOT runq.py_equal(a -> i, b -> i) THEN
                RETURN false;
            END IF;
        END LOOP;
        RETURN true;
    ELSIF jsonb_typeof(a) = 'object' THEN
        IF (SELECT count(*) FROM jsonb_object_keys(a)) <> (SELECT count(*) FROM jsonb_object_keys(b)) THEN
            RETURN false;
        END IF;
        FOR k IN SELECT jsonb_object_keys(a) LOOP
            IF NOT (b ? k) OR NOT runq.py_equal(a -> k, b -> k) THEN
                RETURN false;
            END IF;
        END LOOP;
        RETURN true;
    END IF;
    RETURN a = b;
END
$$;

-- `a <op> b` for <, <=, >, >=; NULL where Python raises TypeError.
CREATE FUNCTION runq.py_order(a jsonb, op text, b jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    x numeric;
    y numeric;
    s text COLLATE "C";
    t text COLLATE "C";
BEGIN
    IF runq.py_is_number(a) AND runq.py_is_number(b) THEN
        x := runq.py_number(a);
        y := runq.py_number(b);
        RETURN CASE op WHEN '<' THEN x < y WHEN '<=' THEN x <= y WHEN '>' THEN x > y ELSE x >= y END;
    ELSIF jsonb_typeof(a) = 'string' AND jsonb_typeof(b) = 'string' THEN
        s := a #>> '{}';
        t := b #>> '{}';
        RETURN CASE op WHEN '<' THEN s < t WHEN '<=' THEN s <= t WHEN '>' THEN s > t ELSE s >= t END;
    ELSIF jsonb_typeof(a) = 'array' AND jsonb_typeof(b) = 'array' THEN
        RETURN runq.py_list_order(a, op, b);
    END IF;
    RETURN NULL;
END
$$;

-- Python's list comparison: the first items that differ decide, else the lengths.
CREATE FUNCTION runq.py_list_order(a jsonb, op text, b jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    la integer := jsonb_array_length(a);
    lb integer := jsonb_array_length(b);
BEGIN
    FOR i IN 0 .. least(la, lb) - 1 LOOP
        IF NOT runq.py_equal(a -> i, b -> i) THEN
            RETURN runq.py_order(a -> i, op, b -> i);
        END IF;
    END LOOP;
    RETURN CASE op WHEN '<' THEN la < lb WHEN '<=' THEN la <= lb WHEN '>' THEN la > lb ELSE la >= lb END;
END
$$;

-- JSON text as Python's json writes it, as jsonb: NaN, which json.loads
-- reads as one shared float (equal to itself in a list, as `is` finds it,
-- and to no number), becomes {"runq:nan": true}; the infinities become
-- numbers past any float. Outside strings only: each match is a string, a
-- non-finite token, or other text. NULL for text that is no JSON.
CREATE FUNCTION runq.py_json(text_value text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN text_value::jsonb;
EXCEPTION WHEN others THEN
    BEGIN
        RETURN (
            SELECT string_agg(
                CASE m[2] WHEN 'NaN' THEN '{"runq:nan": true}' WHEN 'Infinity' THEN '1e100000'
                    WHEN '-Infinity' THEN '-1e100000' ELSE coalesce(m[1], m[3]) END, '' ORDER BY n)
            FROM regexp_matches(text_value, '("(?:[^"\\]|\\.)*")|(-?Infinity|NaN)|([^"NI-]+|.)', 'g')
                WITH ORDINALITY AS t(m, n)
        )::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
END
$$;

CREATE FUNCTION runq.runq_list_compare(value_json text, op text, target_json text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := runq.py_json(value_json);
    t jsonb := runq.py_json(target_json);
BEGIN
    IF v IS NULL OR t IS NULL THEN
        RETURN false;
    ELSIF op = '=' THEN
        RETURN runq.py_equal(v, t);
    ELSIF op = '!=' THEN
        RETURN NOT runq.py_equal(v, t);
    END IF;
    RETURN coalesce(runq.py_order(v, op, t), false);
END
$$;

-- Guild's `contains` on a list value: membership; a list target needs every item.
CREATE FUNCTION runq.runq_list_contains(value_json text, target_json text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := runq.py_json(value_json);
    t jsonb := runq.py_json(target_json);
BEGIN
    IF v IS NULL OR t IS NULL OR jsonb_typeof(v) <> 'array' OR jsonb_array_length(v) = 0 THEN
        RETURN false;
    ELSIF jsonb_typeof(t) <> 'array' THEN
        RETURN EXISTS (SELECT 1 FROM jsonb_array_elements(v) AS item WHERE runq.py_equal(item, t));
    END IF;
    RETURN NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements(t) AS wanted
        WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v) AS item WHERE runq.py_equal(item, wanted))
    );
END
$$;
"""


def pg_number(value):
    """A number for a numeric column, exactly: a float as its shortest repr."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def quoted(name):
    """An identifier from schema.sql, quoted: some (user, time) are PostgreSQL keywords."""
    return '"' + name.replace('"', '""') + '"'


def home_schema(home_id):
    """The schema of one home's views."""
    return f"runq_home_{int(home_id)}"


# The SQLite index's objects, read from schema.sql

def _statements():
    # WITHOUT ROWID is SQLite's storage choice, which sqlglot does not read
    # and PostgreSQL has no use for.
    text = re.sub(r"\)\s*WITHOUT\s+ROWID", ")", SCHEMA_SQL.read_text(), flags=re.IGNORECASE)
    return [s for s in sqlglot.parse(text, read="sqlite") if s is not None]


def _of_kind(kind):
    return [s for s in _statements() if isinstance(s, exp.Create) and s.kind == kind]


@lru_cache(maxsize=1)
def sqlite_tables():
    """{table name: [column names]} of schema.sql, in order."""
    tables = {}
    for create in _of_kind("TABLE"):
        columns = [c for c in create.this.expressions if isinstance(c, (exp.ColumnDef, exp.Identifier))]
        tables[create.this.this.name] = [c.name for c in columns]
    return tables


@lru_cache(maxsize=1)
def sqlite_views():
    """{view name: [column names]} of schema.sql, in order."""
    return {create.this.name: [e.alias_or_name for e in create.expression.expressions] for create in _of_kind("VIEW")}


# Tables

def _table_ddl(create):
    name = create.this.this.name
    columns = ["home integer NOT NULL REFERENCES runq.homes (id)"]
    keys = []
    for element in create.this.expressions:
        if isinstance(element, exp.PrimaryKey):
            keys.append(_key("PRIMARY KEY", [e.name for e in element.expressions]))
        else:
            column, key = _column_ddl(element)
            columns.append(column)
            keys += key
    return f"CREATE TABLE runq.{name} (\n    " + ",\n    ".join(columns + keys) + "\n)"


def _key(kind, columns):
    return f"{kind} (" + ", ".join(["home", *map(quoted, columns)]) + ")"


def _column_ddl(element):
    """A column's PostgreSQL definition and the keys it declares (with `home`).
    REFERENCES is left out: SQLite declares it without enforcing it."""
    if isinstance(element, exp.Identifier):
        return f"{quoted(element.name)} {COLUMN_TYPES[None]}", []
    kind = element.args["kind"].this.name
    parts, keys = [quoted(element.name), COLUMN_TYPES[kind]], []
    for constraint in element.args.get("constraints") or []:
        rule = constraint.args["kind"]
        if isinstance(rule, exp.NotNullColumnConstraint):
            parts.append("NOT NULL")
        elif isinstance(rule, exp.DefaultColumnConstraint):
            parts.append("DEFAULT " + rule.this.sql(dialect=DIALECT))
        elif isinstance(rule, exp.PrimaryKeyColumnConstraint):
            parts.append("NOT NULL")
            keys.append(_key("PRIMARY KEY", [element.name]))
        elif isinstance(rule, exp.UniqueColumnConstraint):
            keys.append(_key("UNIQUE", [element.name]))
    return " ".join(parts), keys


def _index_ddl(create):
    index = create.this
    table = index.args["table"].name
    columns = ["home"]
    for ordered in index.args["params"].args["columns"]:
        ordered = ordered.copy()
        if not isinstance(ordered.this, exp.Column):
            ordered.set("this", exp.Paren(this=ordered.this))  # an expression in an index needs them
        columns.append(ordered.sql(dialect=DIALECT, identify=True))
    return f"CREATE INDEX {index.name} ON runq.{table} (" + ", ".join(columns) + ")"


# Views: schema.sql's, with `home`, in PostgreSQL's words

def _view_ddl(create):
    query = create.expression.copy()
    _add_home(query)
    for node in list(query.walk()):
        _rewrite(node)
    return f"CREATE VIEW runq.{create.this.name} AS " + query.sql(dialect=DIALECT, identify=True)


def _add_home(select, outer=None):
    """`home` first; each join and each correlated subquery on the same home."""
    alias = select.args["from_"].this.alias_or_name
    for table in select.find_all(exp.Table):
        table.set("db", exp.to_identifier(SCHEMA))
    home = lambda table: exp.column("home", table)
    if outer is None:
        select.set("expressions", [home(alias), *select.expressions])
    else:
        select.where(exp.EQ(this=home(alias), expression=home(outer)), copy=False)
    for join in select.args.get("joins") or []:
        on = exp.and_(join.args["on"], exp.EQ(this=home(join.this.alias_or_name), expression=home(alias)))
        join.set("on", on)
    for subquery in select.find_all(exp.Subquery):
        _add_home(subquery.this, outer=alias)


def _sqlite_function(call):
    """datetime(CAST(x / 1000000 AS INTEGER), 'unixepoch', 'localtime'): local time text."""
    if call.name.lower() != "datetime":
        return call
    seconds = call.expressions[0]
    return local_time_text(seconds.this if isinstance(seconds, exp.Cast) else seconds)


def _sorted_concat(node):
    """group_concat in the order SQLite reads the rows: the column's (by its index)."""
    ordered = exp.Ordered(this=code_point_order(node.this.copy()))
    node.set("this", exp.Order(this=node.this, expressions=[ordered]))
    return node


def _as_text(node):
    """COALESCE over columns of several types: SQLite's value column has none."""
    cast = [exp.Cast(this=a, to=exp.DataType.build("TEXT")) for a in (node.this, *node.expressions)]
    return exp.Coalesce(this=cast[0], expressions=cast[1:])


def _integer_condition(branch):
    """CASE WHEN column: SQLite reads an integer as a condition."""
    if isinstance(branch.this, exp.Column):
        branch.set("this", truthy(branch.this))
    return branch


def _integer_result(alias):
    """A condition shown as a column: SQLite's 0 or 1."""
    if isinstance(alias.this, exp.Predicate):
        alias.set("this", exp.Cast(this=alias.this, to=exp.DataType.build("INT")))
    return alias


def _plain_division(div):
    # sqlglot reads SQLite's x / y as NULL for y = 0 (NULLIF); the divisors here are literals.
    div.set("safe", False)
    return div


VIEW_REWRITES = {
    exp.Anonymous: _sqlite_function,
    exp.GroupConcat: _sorted_concat,
    exp.Coalesce: _as_text,
    exp.If: _integer_condition,
    exp.Alias: _integer_result,
    exp.Div: _plain_division,
}


def _rewrite(node):
    rewrite = VIEW_REWRITES.get(type(node))
    replacement = rewrite(node) if rewrite else node
    if replacement is not node:
        node.replace(replacement)


@lru_cache(maxsize=1)
def ddl():
    """The statements that make schema `runq`'s index objects, in order."""
    statements = [_table_ddl(c) for c in _of_kind("TABLE")]
    statements += [_index_ddl(c) for c in _of_kind("INDEX")]
    statements += [_view_ddl(c) for c in _of_kind("VIEW")]
    return statements


@lru_cache(maxsize=1)
def schema_version():
    text = "\n".join([HOMES_DDL, META_SCHEMA_DDL, *ddl(), FUNCTIONS])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Installing

def install(conn):
    """Creates or upgrades schema `runq` (idempotent, safe when several
    machines install at once). An older version's index objects are dropped
    and made anew, with every home's views: the index is a cache, which each
    home's next refresh fills again. Returns True when it changed anything."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INSTALL_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS runq")
        conn.execute(HOMES_DDL)
        conn.execute(META_SCHEMA_DDL)
        row = conn.execute("SELECT value FROM runq.meta_schema WHERE key = 'schema_version'").fetchone()
        if row and row[0] == schema_version():
            return False
        _drop_index_objects(conn)
        for statement in ddl():
            conn.execute(statement)
        conn.execute(FUNCTIONS)
        for (home_id,) in conn.execute("SELECT id FROM runq.homes ORDER BY id").fetchall():
            home_views(conn, home_id)
        conn.execute(
            "INSERT INTO runq.meta_schema VALUES ('schema_version', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (schema_version(),),
        )
    return True


def _drop_index_objects(conn):
    """Everything in schema `runq` but KEPT_ON_UPGRADE."""
    relations = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'runq' AND c.relkind IN ('r', 'v') AND NOT c.relname = ANY(%s)",
        (list(KEPT_ON_UPGRADE),),
    ).fetchall()
    for name, relkind in relations:
        kind = "VIEW" if relkind == "v" else "TABLE"
        conn.execute(f'DROP {kind} IF EXISTS runq."{name}" CASCADE')
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'runq'"
    ).fetchall()
    for (signature,) in functions:
        conn.execute(f"DROP FUNCTION IF EXISTS {signature} CASCADE")


def home_views(conn, home_id):
    """Schema runq_home_<id>: a view of each SQLite table and view with that
    home's rows (idempotent)."""
    schema = home_schema(home_id)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INSTALL_LOCK,))  # machines registering at once
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, columns in {**sqlite_tables(), **sqlite_views()}.items():
            conn.execute(
                f"CREATE OR REPLACE VIEW {schema}.{name} AS SELECT "
                + ", ".join(map(quoted, columns))
                + f" FROM runq.{name} WHERE home = {int(home_id)}"
            )
