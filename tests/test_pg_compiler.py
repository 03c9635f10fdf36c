"""Selections compiled for PostgreSQL: golden SQL (no server needed), and
each place where PostgreSQL reads SQLite's SQL differently, checked on a
real server against what SQLite (runq's reference) answers."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import pgloader
import pytest
from differential import NOW, engine_select
from sqlglot import exp
from test_differential import CASES
from typer.testing import CliRunner

from runq.commands.app import app
from runq.engine import executor, pgschema
from runq.engine.compiler import PostgresSpelling, SQLiteSpelling, compile_selection
from runq.engine.pgdialect import PythonMatch
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home
from runq.engine.selection import build_selection

REPO = pgschema.SCHEMA_SQL.parent


def pg_where(**options):
    """(WHERE of the selected runs, parameters) compiled for PostgreSQL."""
    compiled = compile_selection(build_selection(now=NOW, **options), NOW, "postgres")
    with_ = compiled.expression.args.get("with_")
    selected = with_.expressions[0].this if with_ else compiled.expression
    return selected.args["where"].this.sql(dialect=PostgresSpelling.dialect), compiled.params


GOLDEN = [
    ({}, "r.deleted = %(p1)s", {"p1": 0}),
    (
        {"operations": ["^tr"]},
        "r.deleted = %(p1)s AND r.operation = ANY(CAST(%(p2)s AS TEXT[]))",
        {"p1": 0, "p2": PythonMatch("regexp", "operation", "^tr")},
    ),
    (
        {"operations": ["m*:train"]},
        "r.deleted = %(p1)s AND (r.opspec_model = ANY(CAST(%(p2)s AS TEXT[])) AND r.opspec_op = %(p3)s)",
        {"p1": 0, "p2": PythonMatch("fnmatch", "opspec_model", "m*"), "p3": "train"},
    ),
    (
        {"filter_expr": "started < '2026'"},
        "r.deleted = %(p1)s AND CASE WHEN r.started <> 0 THEN TO_CHAR(TO_TIMESTAMP(r.started / 1000000),"
        " 'YYYY-MM-DD HH24:MI:SS') ELSE '' END COLLATE \"C\" < %(p2)s",
        {"p1": 0, "p2": "2026"},
    ),
    (
        {"filter_expr": "lr > 0.5"},
        "r.deleted = %(p2)s AND COALESCE(a1.num, f2.num, CAST(CAST(s3.last_val AS TEXT) AS DECIMAL)) > %(p3)s",
        {"p1": "lr", "p2": 0, "p3": 0.5},
    ),
    (
        {"filter_expr": "optimizer >= Adam"},
        "r.deleted = %(p2)s AND COALESCE(a1.str, f2.str) COLLATE \"C\" >= %(p3)s",
        {"p1": "optimizer", "p2": 0, "p3": "Adam"},
    ),
    (
        {"filter_expr": "layers < [1, a]"},
        "r.deleted = %(p2)s AND (COALESCE(a1.kind, f2.kind) = 'list'"
        " AND RUNQ_LIST_COMPARE(COALESCE(a1.json, f2.json), '<', %(p3)s))",
        {"p1": "layers", "p2": 0, "p3": '[1, "a"]'},
    ),
    (
        {"filter_expr": "not time contains 1"},
        "r.deleted = %(p3)s AND NOT COALESCE(CASE WHEN COALESCE('str', f1.kind) = 'list'"
        " THEN RUNQ_LIST_CONTAINS(f1.json, %(p4)s) ELSE POSITION(%(p4)s IN COALESCE(NULLIF(LOWER(CASE"
        " WHEN r.status = 'running' AND NOT r.started IS NULL THEN RUNQ_CLOCK_TEXT(((%(p5)s - r.started) / 1000000))"
        " WHEN r.stopped <> 0 AND NOT r.started IS NULL THEN RUNQ_CLOCK_TEXT(((r.stopped - r.started) / 1000000))"
        " END), ''), f1.folded, s2.last_folded)) > 0 END, FALSE)",
        {"p1": "time", "p2": 1795953600000000, "p3": 0, "p4": "1", "p5": 1795953600000000},
    ),
]


@pytest.mark.parametrize("options, where, params", GOLDEN, ids=[str(g[0]) for g in GOLDEN])
def test_golden_postgres_where(options, where, params):
    assert pg_where(**options) == (where, params)


def test_run_arguments_are_typed_values_and_booleans():
    compiled = compile_selection(build_selection(now=NOW, runs=["2:", "ab"]), NOW, "postgres")
    assert (
        "(VALUES (1, TRUE, CAST(%(p2)s AS BIGINT), CAST(%(p3)s AS BIGINT), CAST(%(p4)s AS TEXT)),"
        " (2, FALSE, CAST(%(p1)s AS BIGINT), CAST(%(p3)s AS BIGINT), CAST(%(p5)s AS TEXT)))"
    ) in compiled.sql()
    assert compiled.params == {"p1": 0, "p2": 1, "p3": None, "p4": "2:", "p5": "ab"}


def test_no_percent_sign_but_placeholders_in_any_case():
    """psycopg reads every % of the statement as a parameter's start."""
    for _command, args, _ in CASES:
        if "-F" not in args:
            continue
        expr = args[args.index("-F") + 1]
        try:
            compiled = compile_selection(build_selection(now=NOW, filter_expr=expr), NOW, "postgres")
        except Exception:  # noqa: BLE001 - cases runq refuses
            continue
        assert "%" not in re.sub(r"%\(p\d+\)s", "", compiled.sql()), expr


def test_floats_bind_exactly_and_patterns_stay_for_the_executor():
    compiled = compile_selection(build_selection(now=NOW, filter_expr="x = 0.1 or x = 1e400 or x = 2"), NOW, "postgres")
    assert [str(v) for v in compiled.bound_params().values()][2:] == ["0.1", "Infinity", "2"]


# --sql --dialect postgres

SQL_ARGS = ["runs", "purge", "--sql", "--dialect", "postgres", "-Fo", "^tr", "-F", "lr > 0.5", "1"]
SQL_OUTPUT = """\
WITH selected AS (
  SELECT
    r.id,
    r.deleted,
    r.dir,
    r.operation,
    r.op_dir,
    r.started,
    r.stopped,
    r.status,
    r.remote,
    r.exit_status,
    r.pid,
    r.label,
    r.marked,
    ROW_NUMBER() OVER (
      ORDER BY r.timestamp IS NULL NULLS FIRST, r.timestamp DESC NULLS LAST, r.listing NULLS FIRST
    ) AS position
  FROM runs AS r
  LEFT JOIN attrs AS a1
    ON a1.run_key = r.key AND a1.name = %(p1)s AND a1.kind <> 'null'
  LEFT JOIN flags AS f2
    ON f2.run_key = r.key
    AND f2.name = %(p1)s
    AND f2.kind <> 'null'
    AND a1.run_key IS NULL
  LEFT JOIN scalars AS s3
    ON s3.run_key = r.key
    AND s3.tag = %(p1)s
    AND s3.preferred = 1
    AND a1.run_key IS NULL
    AND f2.run_key IS NULL
  WHERE
    r.deleted = %(p2)s
    AND r.operation = ANY(
      CAST(%(p3)s AS TEXT[])
    )
    AND COALESCE(a1.num, f2.num, CAST(CAST(s3.last_val AS TEXT) AS DECIMAL)) > %(p4)s
), run_args(arg, by_index, lo, hi, text) AS (
  SELECT
    *
  FROM (VALUES
    (1, TRUE, CAST(%(p5)s AS BIGINT), CAST(%(p2)s AS BIGINT), CAST(%(p6)s AS TEXT))) AS _values
), resolved_args AS (
  SELECT
    a.arg,
    a.lo,
    a.hi,
    a.text,
    (
      a.by_index
      AND (
        a.hi IS NULL OR a.hi <= (
          SELECT
            COUNT(*)
          FROM selected
        )
      )
    ) AS by_index
  FROM run_args AS a
)
SELECT
  a.arg,
  a.text AS arg_text,
  a.by_index,
  s.id,
  s.deleted,
  s.dir,
  s.operation,
  s.op_dir,
  s.started,
  s.stopped,
  s.status,
  s.remote,
  s.exit_status,
  s.pid,
  s.label,
  s.marked,
  s.position
FROM resolved_args AS a
LEFT JOIN selected AS s
  ON CASE
    WHEN a.by_index
    THEN s.position > a.lo AND (
      a.hi IS NULL OR s.position <= a.hi
    )
    ELSE SUBSTRING(s.id FROM 1 FOR LENGTH(a.text)) = a.text
  END
ORDER BY
  a.arg,
  s.position;
-- :p1 = 'lr'
-- :p2 = 1
-- :p3 = the operation values that Python's re.search matches with '^tr' (a text[] found as the selection runs)
-- :p4 = 0.5
-- :p5 = 0
-- :p6 = '1'
"""


def test_sql_dialect_postgres_golden():
    result = CliRunner().invoke(app, ["--now", NOW.isoformat(), *SQL_ARGS])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == SQL_OUTPUT


def test_sql_dialect_sqlite_is_the_default():
    run = lambda *extra: CliRunner().invoke(app, ["--now", NOW.isoformat(), "runs", "list", "--sql", "-F", "x < 1", *extra])
    assert run().stdout == run("--dialect", "sqlite").stdout
    assert ":p1" in run().stdout and "%(p1)s" in run("--dialect", "postgres").stdout


def test_sql_on_a_postgresql_index_is_postgresqls(monkeypatch):
    """No --dialect: the SQL --sql prints is the index's own (no server asked)."""
    url = "postgresql://runq@127.0.0.1:1/nowhere"
    run = lambda *args: CliRunner().invoke(app, ["--now", NOW.isoformat(), *args, "runs", "list", "--sql", "-F", "x < 1"])
    postgres = CliRunner().invoke(app, ["--now", NOW.isoformat(), "runs", "list", "--sql", "-F", "x < 1",
                                        "--dialect", "postgres"]).stdout
    assert run("--index", url).stdout == postgres
    monkeypatch.setenv("RUNQ_INDEX", url)
    assert run().stdout == postgres
    plan = CliRunner().invoke(app, ["--now", NOW.isoformat(), "runs", "list", "--sql", "--explain", "-F", "x < 1"])
    assert plan.exit_code == 0 and ":p1" in plan.stdout  # --explain shows SQLite's plan, of SQLite's SQL


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dialect", "postgres"], "runq: --dialect only applies to the SQL --sql prints (add --sql)"),
        (["--sql", "--explain", "--dialect", "postgres"], "runq: --explain shows SQLite's query plan"),
        (["--sql", "--dialect", "oracle"], "runq: Invalid value for '--dialect'"),
    ],
)
def test_dialect_misused_is_one_line(args, message):
    result = CliRunner().invoke(app, ["--now", NOW.isoformat(), "runs", "purge", *args])
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_sql_dialect_postgres_needs_neither_server_nor_psycopg(tmp_path):
    """psycopg made unimportable, as where the postgres extra is not installed."""
    code = (
        "import sys, importlib.util; sys.modules['psycopg'] = None\n"
        f"spec = importlib.util.spec_from_file_location('runq', {str(REPO / '__init__.py')!r},"
        f" submodule_search_locations=[{str(REPO)!r}])\n"
        "runq = importlib.util.module_from_spec(spec); sys.modules['runq'] = runq; spec.loader.exec_module(runq)\n"
        "from runq.commands.app import app\n"
        f"app([*{['--now', NOW.isoformat(), *SQL_ARGS]!r}])\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "GUILD_HOME": str(tmp_path / "guild")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == SQL_OUTPUT


# On a real server: the SQLite expression and its PostgreSQL spelling agree


@pytest.fixture
def pg(pg_url):
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.install(conn)
        conn.execute("SET search_path = runq")
        yield conn


def _in_sqlite(expression):
    conn = sqlite3.connect(":memory:")
    try:
        return conn.execute("SELECT " + expression.sql(dialect=SQLiteSpelling.dialect)).fetchone()[0]
    finally:
        conn.close()


def _in_postgres(conn, expression):
    return conn.execute("SELECT " + expression.sql(dialect=PostgresSpelling.dialect)).fetchone()[0]


SECONDS = [0, 5, 59, 60, 61, 3599, 3600, 3661, 86399, 90061, 360000, -1, -5, -59, -61, -600, -3600, -3661, -90061]


def test_run_time_text_is_sqlites_printf(pg):
    for seconds in SECONDS:
        number = exp.Literal.number(seconds)
        assert _in_postgres(pg, PostgresSpelling.clock_text(number)) == _in_sqlite(SQLiteSpelling.clock_text(number)), seconds


# Not before 1970 nor past 2037, where SQLite's 'localtime' uses an equivalent year's rules.
MOMENTS = [0, 1, 86399, 1700000000, 1711846800, 1730595600, 1751000000, 2000000000]


@pytest.mark.parametrize(
    "zone", ["UTC", "Asia/Kolkata", "America/New_York", "Australia/Lord_Howe", "IST-5:30", "Nowhere/Else"]
)
def test_local_time_text_is_sqlites_localtime(pg, monkeypatch, zone):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        executor.set_local_time_zone(pg)
        for seconds in MOMENTS:
            number = exp.Literal.number(seconds)
            expected = _in_sqlite(SQLiteSpelling.local_time(number))
            assert _in_postgres(pg, PostgresSpelling.local_time(number)) == expected, (zone, seconds)
    finally:
        monkeypatch.undo()
        time.tzset()


BIG = 2**53 + 1
LISTS = [
    ("[1, 2]", "[1, 2]"), ("[1, 2]", "[1.0, 2]"), ("[true, 0]", "[1, false]"), ("[1, 2]", "[1, 3]"),
    ("[1, 2]", "[1]"), ("[]", "[]"), ("[]", "[0]"), ('["a", "B"]', '["a", "b"]'), ('["\\u00e9"]', '["z"]'),
    ('[1, "a"]', '["a", 1]'), ('[1, "a"]', "[1, 2]"), ("[[1, 2], 3]", "[[1, 2], 3]"), ("[[1, 2]]", "[[1, 3]]"),
    ("[[1]]", "[1]"), ('[{"a": 1}]', '[{"a": 1.0}]'), ('[{"a": 1}]', '[{"a": 2}]'), ('[{"a": 1}]', '[{"b": 1}]'),
    (f"[{BIG}]", f"[{BIG - 1}]"), (f"[{BIG}]", f"[{BIG}]"), (f"[{BIG}]", "[9007199254740992.0]"),
    ("[NaN]", "[NaN]"), ("[NaN, 1]", "[1]"), ("[1, NaN]", "[1, 2]"), ("[Infinity]", "[1e308]"),
    ("[-Infinity]", "[-1e308]"), ('["NaN", 1]', '["NaN", 1]'), ("[null]", "[null]"), ("[null]", "[0]"),
    ('["x, NaN]"]', '["x, NaN]"]'), ("[1]", "1"),
]


def test_list_comparison_is_pythons(pg):
    for value, target in LISTS:
        for op in executor.LIST_OPS:
            got = pg.execute("SELECT runq_list_compare(%s, %s, %s)", (value, op, target)).fetchone()[0]
            assert got == bool(executor.list_compare(value, op, target)), (value, op, target)


def test_list_membership_is_pythons(pg):
    for value, target in LISTS:
        items = json.loads(target)
        for wanted in (target, json.dumps(items[0] if isinstance(items, list) and items else items)):
            got = pg.execute("SELECT runq_list_contains(%s, %s)", (value, wanted)).fetchone()[0]
            assert got == bool(executor.list_contains(value, wanted)), (value, wanted)


# Selections on a small home: its SQLite index and its copy in PostgreSQL

def _small_home(root, attrs):
    """Six runs; `attrs` maps a live run's number to attribute files; returns the live runs' ids."""
    manifest = generate_home(root, HomeSpec(runs=6, seed=5, profile="fidelity"), NOW)
    live = manifest.live
    for number, files in attrs.items():
        for name, value in files.items():
            (live[number].run_dir(root) / ".guild" / "attrs" / name).write_text(encode_attr(value))
    return [run.id for run in live]


def _both(root, pg_url):
    import psycopg

    path = pgloader.decoded_sqlite_index(root)
    sqlite = sqlite3.connect(path)
    executor.register_functions(sqlite)
    pg = psycopg.connect(pg_url, autocommit=True)
    pgloader.use_home(pg, pgloader.load(path, pg))
    return {"sqlite": sqlite, "postgres": pg}


def _selects(indexes, args, command="list"):
    answers = {dialect: engine_select(conn, command, args, dialect) for dialect, conn in indexes.items()}
    return answers["sqlite"], answers["postgres"]


def test_integers_past_2_53_compare_exactly(tmp_path, pg_url):
    ids = _small_home(tmp_path / "home", {0: {"big": BIG}, 1: {"big": BIG - 1}})
    indexes = _both(tmp_path / "home", pg_url)
    expected = {
        f"big = {BIG - 1}": [ids[1]],  # a float8 comparison finds both
        f"big > {BIG - 1}": [ids[0]],
        "big > 9007199254740992.0": [ids[0]],  # the float bound as float8 finds none
        f"big in [{BIG}]": [ids[0]],
    }
    for expr, runs in expected.items():
        sqlite, postgres = _selects(indexes, ["-F", expr])
        assert sqlite == postgres == (runs, None), expr


def test_patterns_are_pythons(tmp_path, pg_url):
    _small_home(tmp_path / "home", {})
    indexes = _both(tmp_path / "home", pg_url)
    for pattern in ["^(?P<op>[a-z]+)", "(?i)^TRAIN", r"^\w+\.py$", "^(bad", "^[[:alpha:]]", "*[!x]*", "[a-m]*"]:
        sqlite, postgres = _selects(indexes, ["-Fo", pattern])
        assert sqlite == postgres and sqlite[1] is None, pattern


def test_text_compares_by_code_point_in_any_locale(tmp_path, postgres):
    """A database whose default collation is ICU's English, where 'Best' > 'a' and ':' < '0'."""
    try:
        postgres.psql(
            "CREATE DATABASE icu_en LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C' TEMPLATE template0",
            database="postgres",
        )
    except subprocess.CalledProcessError as e:
        pytest.skip(f"no ICU collations here: {e.stderr}")
    ids = _small_home(tmp_path / "home", {0: {"label": "Best"}, 1: {"label": "apple"}})
    indexes = _both(tmp_path / "home", postgres.url("icu_en"))
    for expr in ["label < a", "label >= a", "time < ':'", "started < ':'", "label < [a]"]:
        sqlite, postgres_answer = _selects(indexes, ["-F", expr])
        assert sqlite == postgres_answer and sqlite[1] is None, expr
    below_a = _selects(indexes, ["-F", "label < a"])[1][0]
    assert ids[0] in below_a and ids[1] not in below_a


def test_as_many_joined_tables_as_sqlite_joins(tmp_path, pg_url):
    """SQLite joins at most 64 tables (21 unprefixed names); PostgreSQL would
    plan hundreds for minutes, in gigabytes: both refuse past 64."""
    _small_home(tmp_path / "home", {})
    indexes = _both(tmp_path / "home", pg_url)
    names = lambda count: " or ".join(f"x{i} = {i}" for i in range(count))
    sqlite, postgres = _selects(indexes, ["-F", names(21)])
    assert sqlite == postgres == ([], None)
    sqlite, postgres = _selects(indexes, ["-F", names(22)])
    assert sqlite[0] is None and "64 tables" in sqlite[1]
    assert postgres[0] is None and "64 tables" in postgres[1]


def test_a_pattern_that_backtracks_for_ever_stops_in_postgres_too(tmp_path, pg_url, monkeypatch):
    """The -Fo regular expression runs in Python, with its time limit, whichever the database."""
    home = tmp_path / "home"
    generate_home(home, HomeSpec(runs=4, seed=5, profile="realistic", sourcecode_files=0, deleted_fraction=0), NOW)
    run = sorted((home / "runs").iterdir())[0]
    (run / ".guild" / "opref").write_text(f"guildfile:/p/guild.yml abc '' {'a' * 40}b\n")
    indexes = _both(home, pg_url)
    monkeypatch.setattr(executor, "PATTERN_SECONDS", 0.2)
    executor._search.cache_clear()
    sqlite, postgres = _selects(indexes, ["-Fo", "^(a|aa)+$"])
    assert sqlite[0] is None and postgres[0] is None
    assert sqlite[1].startswith("the pattern '^(a|aa)+$' took over 0.2 s")
    assert postgres[1] == sqlite[1]
    assert _selects(indexes, ["-Fo", "^a+b$"]) == (([run.name], None), ([run.name], None))


def test_dialect_choices_are_the_compilers():
    from runq.commands.selection_options import SQL_DIALECTS
    from runq.engine.compiler import SPELLINGS

    assert SQL_DIALECTS == tuple(SPELLINGS)
