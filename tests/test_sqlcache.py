"""Compiled selections kept in the index (engine/sqlcache.py): a repeated
selection is answered from its cached SQL without importing sqlglot, with
exactly the output a fresh compilation gives, values taken from `now`
recomputed on each use, and nothing served across runq versions, code or
schema changes."""

import ast
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import runq
from runq.commands.app import app
from runq.engine import sqlcache
from runq.engine.compiler import RUN_COLUMNS
from runq.engine.executor import SelectedRun
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home
from runq.engine.selection import build_selection

NOW = datetime(2026, 11, 29, 12, 0, 0)
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
ENGINE = Path(runq.__file__).parent / "engine"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqlcache")
    return root, generate_home(root, HomeSpec(runs=40, seed=3, profile="fidelity", sourcecode_files=1), NOW)


@pytest.fixture
def home(tmp_path):
    return generate_home(tmp_path, HomeSpec(runs=24, seed=5, profile="fidelity", sourcecode_files=1), NOW).root


def run_cli(home, *args, now=NOW):
    result = CliRunner().invoke(app, ["-H", str(home), "--now", now.isoformat(), *args])
    return result.exit_code, result.stdout, result.stderr


def index_path(home):
    return Path(home) / "cache" / "runq" / "index.db"


def index_rows(home, sql):
    if not index_path(home).exists():
        assert run_cli(home, "index")[0] == 0
    conn = sqlite3.connect(index_path(home))
    try:
        with conn:
            return conn.execute(sql).fetchall()
    finally:
        conn.close()


def cached_rows(home):
    return index_rows(home, "SELECT key, sql, params, now_params FROM compiled ORDER BY rowid")


def forget_compiled(home):
    index_rows(home, "DELETE FROM compiled")


def poison_compiled(home):
    """Every cached selection made to select no run: what shows that a command read the cache."""
    index_rows(home, "UPDATE compiled SET sql = 'SELECT * FROM (' || sql || ') WHERE 0'")


# Output is the same with and without the cache

SELECTIONS = [
    ("runs", "list"),
    ("runs", "list", "-a", "-F", "lr > 0.001 and batch-size = 32"),
    ("runs", "list", "-a", "-F", "loss < 0.5 or not label contains best"),
    ("runs", "list", "-a", "-F", "x = 1"),
    ("runs", "list", "-a", "-F", "x = 1.0"),
    ("runs", "list", "-a", "-F", "started > '2026-11-20' and time"),
    ("runs", "list", "-a", "-F", "cmd contains python"),
    ("runs", "list", "-a", "-Sc", "-Fo", "^train", "-Fl", "-"),
    ("runs", "list", "-a", "--deleted", "-Ft", "best", "-Fm"),
    ("runs", "list", "-a", "--started", "last 3 days"),
    ("runs", "list", "-a", "--started", "today"),
    ("runs", "list", "-a", "--started", "after 2026-11-27"),
    ("runs", "list", "--json", "--started", "2 days ago"),
    ("runs", "purge", "--dry-run", "--json", "1:3", "5"),
    ("runs", "purge", "--dry-run", "1", "-y"),
]


@pytest.mark.parametrize("args", SELECTIONS, ids=" ".join)
def test_cached_output_is_the_compiled_output(sample, args):
    home, _ = sample
    for now in (NOW, NOW + timedelta(hours=30)):
        forget_compiled(home)
        fresh = run_cli(home, *args, now=now)
        stored = cached_rows(home)
        assert len(stored) <= (2 if _shows_some(args) else 1)  # a listing of the first runs also counts them all
        assert run_cli(home, *args, now=now) == fresh
        assert cached_rows(home) == stored  # answered from the cache: nothing compiled and stored again


def _shows_some(args):
    return args[:2] == ("runs", "list") and not {"-a", "--json"} & set(args)


def test_a_listing_of_the_first_runs_counts_the_rest_from_the_cache(sample):
    home, _ = sample
    forget_compiled(home)
    assert run_cli(home, "runs", "list", "-n", "2")[0] == 0
    assert [sql.startswith("SELECT COUNT(*)") for _, sql, *_ in cached_rows(home)] == [False, True]
    index_rows(home, "UPDATE compiled SET sql = replace(sql, 'COUNT(*)', '1234567') WHERE sql LIKE 'SELECT COUNT(*)%'")
    again = run_cli(home, "runs", "list")
    assert "(1234567 total)" in again[2]


def test_now_dependent_values_are_recomputed_as_runs_age(home):
    """`--started 'last 1 hours'` from the cache moves with the clock."""
    [(newest,)] = index_rows(home, "SELECT MAX(timestamp) FROM runs WHERE deleted = 0")
    soon = datetime.fromtimestamp(newest // 1000000) + timedelta(minutes=30)
    args = ("runs", "list", "--json", "--started", "last 1 hours")
    recent = json.loads(run_cli(home, *args, now=soon)[1])
    [(key, sql, _, now_params)] = cached_rows(home)
    assert recent and list(json.loads(now_params).values()) == ["started_from"]  # no end: up to now and after
    later = run_cli(home, *args, now=soon + timedelta(hours=1))
    assert [(k, s) for k, s, *_ in cached_rows(home)] == [(key, sql)]  # the same entry served
    assert json.loads(later[1]) == []
    forget_compiled(home)
    assert run_cli(home, *args, now=soon + timedelta(hours=1)) == later


def test_a_filter_on_time_takes_the_time_of_each_use(home):
    """A running run's `time` is its age at `now`."""
    [(run_id, started)] = index_rows(
        home, "SELECT id, started FROM runs WHERE status = 'running' AND started ORDER BY started DESC LIMIT 1"
    )
    two_hours_in = datetime.fromtimestamp(started // 1000000 + 7201)
    args = ("runs", "list", "-a", "--json", "-F", "time contains '2:00:0'")
    ids = lambda now: [run["id"] for run in json.loads(run_cli(home, *args, now=now)[1])]
    assert run_id in ids(two_hours_in)
    stored = cached_rows(home)
    assert run_id not in ids(two_hours_in + timedelta(hours=1))
    assert cached_rows(home) == stored


def test_lazy_attributes_are_decoded_for_a_cached_selection(home):
    """A large attribute read again from its file (raw in the index) is decoded
    before the cached SQL compares it."""
    args = ("runs", "list", "-a", "--json", "-F", "cmd contains zz-marker")
    assert json.loads(run_cli(home, *args)[1]) == []
    run_dir = next((Path(home) / "runs").iterdir())
    (run_dir / ".guild" / "attrs" / "cmd").write_text(encode_attr(["python", "zz-marker"]))
    stored = cached_rows(home)
    assert [run["id"] for run in json.loads(run_cli(home, *args)[1])] == [run_dir.name]
    assert cached_rows(home) == stored


# The cache is used, and only while nothing that decides the SQL changed


def test_a_repeated_selection_reads_the_cache(home):
    args = ("runs", "list", "--json", "-F", "lr > 0")
    assert json.loads(run_cli(home, *args)[1])
    poison_compiled(home)
    assert json.loads(run_cli(home, *args)[1]) == []


def test_another_runq_version_compiles_again(home, monkeypatch):
    args = ("runs", "list", "--json", "-F", "lr > 0")
    expected = run_cli(home, *args)
    poison_compiled(home)
    monkeypatch.setattr(sqlcache, "__version__", "999.0")
    sqlcache.code_version.cache_clear()
    try:
        assert run_cli(home, *args) == expected
    finally:
        sqlcache.code_version.cache_clear()
    assert len(cached_rows(home)) == 2


def test_another_schema_compiles_again(home, monkeypatch):
    args = ("runs", "list", "--json", "-Sc")
    expected = run_cli(home, *args)
    poison_compiled(home)
    monkeypatch.setattr(sqlcache, "schema_version", lambda: "another schema")
    assert run_cli(home, *args) == expected


def test_a_changed_schema_file_starts_a_new_index(home, monkeypatch):
    from runq.engine import indexer

    args = ("runs", "list", "--json", "-Sc")
    expected = run_cli(home, *args)
    poison_compiled(home)
    schema = indexer.schema_text()
    monkeypatch.setattr(indexer, "schema_text", lambda: schema + "\n-- changed\n")
    assert run_cli(home, *args) == expected


def test_code_version_covers_the_compiler_and_sqlglot():
    version = sqlcache.code_version()
    assert version and len(version) == 64
    assert "compiler" in sqlcache.COMPILING_MODULES


def test_compiling_modules_are_all_the_compiler_imports():
    """Every runq module the compiler imports, at the top or inside a function,
    is hashed into the key: a change to any of them must not reuse old SQL."""
    seen, pending = set(), ["compiler"]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((ENGINE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                pending += [node.module] if node.module else [alias.name for alias in node.names]
    assert seen <= set(sqlcache.COMPILING_MODULES), seen - set(sqlcache.COMPILING_MODULES)


def test_run_columns_are_the_selected_runs_first_fields():
    assert RUN_COLUMNS == SelectedRun._fields[: len(RUN_COLUMNS)]


# Keys


def key(now=NOW, **options):
    selection = build_selection(now=now, **options)
    return sqlcache.cache_key(selection, sqlcache.values_of_now(selection, now))


def test_keys_tell_apart_what_the_compiler_tells_apart():
    keys = [
        key(),
        key(deleted=True),
        key(filter_expr="x = 1"),
        key(filter_expr="x = 1.0"),
        key(filter_expr="x = true"),
        key(filter_expr="x = '1'"),
        key(labels=("a",)),
        key(tags=("a",)),
        key(runs=("1",)),
        key(runs=("1:",)),
        key(started="after 2026-11-01"),
        key(started="before 2026-11-01"),
        key(started="today"),
        key(started="last 1 hours"),
        key(started="2 weeks ago"),
    ]
    assert None not in keys and len(set(keys)) == len(keys)


def test_keys_do_not_hold_the_time():
    assert key(started="last 1 hours") == key(started="last 1 hours", now=NOW + timedelta(days=400))
    assert key(filter_expr="time") == key(filter_expr="time", now=NOW + timedelta(seconds=1))


# The table stays small


def test_the_cache_keeps_the_newest_entries_only(sample, tmp_path):
    home, _ = sample
    with runq.open(home=home, index=tmp_path / "index.db") as index:
        for n in range(sqlcache.MAX_ENTRIES + 8):
            index.select(filter=f"lr > {n}")
        newest = {key for key, in index.sql("SELECT key FROM compiled").rows}
        index.select(filter=f"lr > {sqlcache.MAX_ENTRIES + 7}")  # the newest: served, kept
        assert {key for key, in index.sql("SELECT key FROM compiled").rows} == newest
    assert len(newest) == sqlcache.MAX_ENTRIES


def test_long_sql_is_not_kept(sample, tmp_path, monkeypatch):
    home, _ = sample
    monkeypatch.setattr(sqlcache, "MAX_SQL_CHARS", 100)
    with runq.open(home=home, index=tmp_path / "index.db") as index:
        expected = [run.id for run in index.select(filter="lr > 0")]
        assert [run.id for run in index.select(filter="lr > 0")] == expected
        assert index.sql("SELECT COUNT(*) FROM compiled").rows == [(0,)]


def test_another_writer_holding_the_index_only_skips_storing(sample, tmp_path):
    home, _ = sample
    with runq.open(home=home, index=tmp_path / "other.db") as index:
        expected = [run.id for run in index.select(filter="lr > 0.001")]
    path = tmp_path / "index.db"
    runq.open(home=home, index=path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with runq.open(home=home, index=path, refresh=False) as index:
            assert [run.id for run in index.select(filter="lr > 0.001")] == expected
            assert index.sql("SELECT COUNT(*) FROM compiled").rows == [(0,)]
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# The installed command


def imported_modules(stderr):
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    "args, unused",
    [
        (("runs", "list"), {"sqlglot", "yaml"}),  # nothing compiled, nothing decoded
        (("runs", "list", "-F", "lr > 0.001", "--started", "last 30 days"), {"sqlglot"}),  # 0.001 is decoded
    ],
)
def test_a_cached_listing_does_not_import_sqlglot(home, tmp_path, args, unused):
    argv = [sys.executable, "-X", "importtime", str(RUNQ_SCRIPT), "-H", str(home), *args]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == second.returncode == 0, second.stderr[-2000:]
    assert "sqlglot" in imported_modules(first.stderr)
    assert not unused & imported_modules(second.stderr)
    assert second.stdout == first.stdout and second.stdout


def test_a_listing_converts_only_its_own_command(home):
    """Typer makes click commands of the run commands one by one, as they are named."""
    group = typer.main.get_command(app)
    runs_group = group.commands["runs"]
    assert runs_group.commands == {}
    with pytest.raises(SystemExit) as done:
        group.main(["-H", str(home), "runs", "list"], prog_name="runq")
    assert done.value.code == 0
    assert list(runs_group.commands) == ["list"]
    assert runs_group.list_commands(None) == ["list", "purge", "delete", "restore"]
