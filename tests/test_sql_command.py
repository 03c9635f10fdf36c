"""`runq sql` on generated Guild homes: it only reads, stops on a time limit
and on Ctrl-C, streams its rows, runs back the scripts `--sql` prints; and
`--explain`, the declared foreign keys and the views written for it."""

import hashlib
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_cli import RUNQ_SCRIPT, assert_one_line_error, disk_state, listed_ids, make_home, runq

from runq.commands.render import plan_lines, sql_literal
from runq.engine.errors import QueryError
from runq.engine.executor import ReadOnlyQuery, register_functions
from runq.engine.script import option_params, script_params, sql_value
from runq.engine.values import stored_value

ENDLESS = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) "
STREAM_ROWS = int(os.environ.get("RUNQ_TEST_STREAM_ROWS", "1000000"))  # the table's; JSON takes half
MAX_RSS_MB = 150


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """60 runs, about half deleted, indexed; no test here may change it."""
    root = tmp_path_factory.mktemp("sqlhome")
    manifest = make_home(root, runs=60, seed=3)
    assert runq(root, "index").exit_code == 0
    return root, manifest


def index_path(root):
    return root / "cache" / "runq" / "index.db"


def index_digest(root):
    """Every row of the index, and its journal mode: what 'unchanged' keeps."""
    with sqlite3.connect(index_path(root)) as conn:
        rows = "\n".join(conn.iterdump())
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return hashlib.sha256(rows.encode()).hexdigest(), mode


def sql(root, *args, input=None):
    return runq(root, "--no-refresh", "sql", *args, input=input)


def json_rows(result):
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# 1. Read-only


REFUSED = [
    ("DELETE FROM runs", "DELETE (runs)"),
    ("UPDATE runs SET label = 'x'", "UPDATE (runs)"),
    ("INSERT INTO meta (key, value) VALUES ('a', 'b')", "INSERT (meta)"),
    ("DROP TABLE runs", "changing the schema"),
    ("CREATE TABLE x (a)", "changing the schema"),
    ("CREATE TEMP TABLE x (a)", "changing the schema"),
    ("CREATE INDEX x ON runs (label)", "changing the schema"),
    ("ALTER TABLE runs ADD COLUMN x", "ALTER TABLE"),
    ("ATTACH DATABASE '{tmp}/attached.db' AS x", "ATTACH"),
    ("VACUUM INTO '{tmp}/copy.db'", "ATTACH"),
    ("DETACH DATABASE main", "DETACH"),
    ("PRAGMA journal_mode = delete", "PRAGMA journal_mode = delete"),
    ("PRAGMA writable_schema = 1", "PRAGMA writable_schema"),
    ("PRAGMA query_only = 0", "PRAGMA query_only"),
    ("PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA wal_checkpoint"),
    ("BEGIN IMMEDIATE", "TRANSACTION"),
    ("ANALYZE", "changing the schema"),
    ("REINDEX", "REINDEX"),
]


@pytest.mark.parametrize("statement, what", REFUSED, ids=[s for s, _ in REFUSED])
def test_a_statement_that_writes_is_refused_and_changes_nothing(home, tmp_path, statement, what):
    root, _ = home
    before, state = index_digest(root), disk_state(root)
    line = assert_one_line_error(sql(root, statement.format(tmp=tmp_path)), what, "not allowed")
    assert line.startswith("runq: SQL error: ")
    assert index_digest(root) == before == (before[0], "wal")
    assert disk_state(root) == state
    assert list(tmp_path.iterdir()) == []  # ATTACH and VACUUM INTO create no file


@pytest.mark.parametrize(
    "query, expected",
    [
        ("PRAGMA journal_mode", [{"journal_mode": "wal"}]),
        ("SELECT name FROM pragma_table_info('tags')", [{"name": "run_key"}, {"name": "tag"}]),
        ("SELECT COUNT(*) AS n FROM pragma_foreign_key_check", [{"n": 0}]),
        ("SELECT regexp('^tr', 'train') AS m, runq_fnmatch('train', 't*') AS f", [{"m": 1, "f": 1}]),
        (ENDLESS + "SELECT MAX(n) AS n FROM (SELECT n FROM c LIMIT 5)", [{"n": 5}]),
    ],
)
def test_reads_pragmas_functions_and_recursive_queries_are_allowed(home, query, expected):
    root, _ = home
    assert json_rows(sql(root, "--json", query)) == expected


def test_the_connection_is_given_back_as_it_was(tmp_path):
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    conn.execute("CREATE TABLE t (a)")
    with pytest.raises(QueryError, match="INSERT"):
        with ReadOnlyQuery(conn, "INSERT INTO t VALUES (1)"):
            pass
    with ReadOnlyQuery(conn, "SELECT COUNT(*) FROM t") as query:
        assert list(query) == [(0,)]
    conn.execute("INSERT INTO t VALUES (1)")  # no authorizer, query_only off again
    assert conn.execute("PRAGMA query_only").fetchone() == (0,)
    conn.execute(ENDLESS + "SELECT COUNT(*) FROM (SELECT n FROM c LIMIT 100000)")  # no progress handler


# 2. Time limit and Ctrl-C


def test_a_query_over_its_time_limit_stops(home):
    root, _ = home
    result = sql(root, "--timeout", "0.3", ENDLESS + "SELECT COUNT(*) FROM c")
    assert_one_line_error(result, "timed out after 0.3 s", "--timeout")
    assert result.exit_code == 1


def test_only_time_in_sqlite_counts(home):
    """Rows that wait for their reader do not use up the query's time."""
    root, _ = home
    conn = sqlite3.connect(index_path(root), isolation_level=None)
    with ReadOnlyQuery(conn, ENDLESS + "SELECT n FROM c LIMIT 3000", seconds=0.5) as query:
        for n, _row in enumerate(query):
            if n in (0, 1000, 2000):
                time.sleep(0.3)
    conn.close()


def _cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_cpu(process, seconds):
    """Until the process has computed that long: past start-up, inside its query."""
    deadline = time.monotonic() + 60
    while _cpu_seconds(process.pid) < seconds:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_stops_a_query_inside_sqlite(home):
    root, _ = home
    args = [str(RUNQ_SCRIPT), "-H", str(root), "--no-refresh", "sql", "--timeout", "0", ENDLESS + "SELECT COUNT(*) FROM c"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_cpu(process, 1.5)  # start-up takes well under a second of CPU
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, out, err) == (130, "", "runq: interrupted\n")


def test_ctrl_c_stops_a_query_while_it_prints(home):
    root, _ = home
    args = [str(RUNQ_SCRIPT), "-H", str(root), "--no-refresh", "sql", "--json", ENDLESS + "SELECT n FROM c"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.read(100000)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert (process.returncode, err) == (130, "runq: interrupted\n")


# 3. Streaming


def _peak_rss_mb(args):
    """Peak RSS of a runq process, measured from a fresh parent of its own."""
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "assert done.returncode == 0, done.stderr\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", measure, str(RUNQ_SCRIPT), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout) / 1024


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["table", "json"])
def test_memory_stays_flat_on_many_rows(home, output):
    root, _ = home
    rows = STREAM_ROWS if not output else STREAM_ROWS // 2
    query = ENDLESS + f"SELECT n, 'run ' || n AS label FROM c LIMIT {rows}"
    peak = _peak_rss_mb(["-H", str(root), "--no-refresh", "sql", *output, query])
    assert peak < MAX_RSS_MB, f"{peak:.0f} MB for {rows} rows"


def test_the_table_is_sized_by_its_first_rows_and_lists_them_all(home):
    root, _ = home
    result = sql(root, ENDLESS + "SELECT n, substr('xxxxxxxxxxxx', 1, n / 1000) AS x FROM c LIMIT 3000")
    lines = result.stdout.splitlines()
    assert lines[0] == "n     x"
    assert lines[1] == "----  -"
    assert lines[2] == "1" and lines[1001] == "1000  x"
    assert lines[-1] == "3000  xxx" and len(lines) == 3002


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["table", "json"])
def test_a_reader_that_goes_away_ends_it_quietly(home, output):
    root, _ = home
    args = [str(RUNQ_SCRIPT), "-H", str(root), "--no-refresh", "sql", *output, ENDLESS + "SELECT n FROM c"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    assert process.wait(timeout=30) == 0
    assert process.stderr.read() == b""


def test_json_is_an_array_of_objects_whatever_the_rows(home):
    root, _ = home
    assert json_rows(sql(root, "--json", "SELECT 1 AS a WHERE 0")) == []
    rows = json_rows(sql(root, "--json", "SELECT 1 AS a, 'x\ny' AS b, NULL AS a"))
    assert rows == [{"a": None, "b": "x\ny"}]


# 4. Scripts as --sql prints them


SCRIPT_SELECTIONS = [
    ["-F", "lr > 0.001 and batch-size = 32"],
    ["-F", "loss < 0.5 or label contains best"],
    ["-Fo", "train", "-Sce"],
    ["-Fo", "^gpkg", "--not-error"],
    ["-Set", "2:6"],
    ["3", "1", "1:2"],
    ["--started", "last 60 days", "-Fl", "-"],
    ["-Ft", "best", "-Fc", "bob"],
    ["-Fo", "*:train", "-Fm"],
]


def script_ids(result):
    """Run ids in the order a script lists them (RUN arguments may list a run twice)."""
    return list(dict.fromkeys(row["id"] for row in json_rows(result) if row["id"] is not None))


@pytest.mark.parametrize("selection", SCRIPT_SELECTIONS, ids=" ".join)
def test_a_printed_script_runs_back_and_selects_what_the_command_selects(home, tmp_path, selection):
    root, _ = home
    printed = runq(root, "runs", "list", "--deleted", "-a", *selection, "--sql")
    assert printed.exit_code == 0, printed.stderr
    script = tmp_path / "q.sql"
    script.write_text(printed.stdout)
    expected = listed_ids(root, "--deleted", "-a", *selection)
    assert script_ids(sql(root, "--json", str(script))) == expected
    assert script_ids(sql(root, "--json", "-", input=printed.stdout)) == expected


def param_name(script, literal):
    return re.search(rf"^-- :(\w+) = {re.escape(literal)}$", script, flags=re.M).group(1)


def test_an_edited_script_answers_the_edited_selection(home, tmp_path):
    root, _ = home
    printed = runq(root, "runs", "list", "--deleted", "-a", "-F", "lr > 0.001 and optimizer = adam", "--sql").stdout
    lr, optimizer = param_name(printed, "0.001"), param_name(printed, "'adam'")
    edited = printed.replace(f"-- :{lr} = 0.001", f"-- :{lr} = 0.01").replace(f"-- :{optimizer} = 'adam'", f"-- :{optimizer} = 'sgd'")
    (tmp_path / "q.sql").write_text(edited)
    expected = listed_ids(root, "--deleted", "-a", "-F", "lr > 0.01 and optimizer = sgd")
    assert expected and expected != listed_ids(root, "--deleted", "-a", "-F", "lr > 0.001 and optimizer = adam")
    assert script_ids(sql(root, "--json", str(tmp_path / "q.sql"))) == expected
    (tmp_path / "p.sql").write_text(printed)  # -p wins over the script's own values
    overridden = sql(root, "--json", "-p", f"{lr}=0.01", "-p", f"{optimizer}=sgd", str(tmp_path / "p.sql"))
    assert script_ids(overridden) == expected


def test_a_script_on_large_attributes_decodes_them_first(tmp_path):
    make_home(tmp_path, runs=30, seed=4)
    printed = runq(tmp_path, "runs", "list", "-a", "-F", "cmd contains train", "--sql").stdout
    from_script = script_ids(runq(tmp_path, "sql", "--json", "-", input=printed))
    assert from_script and from_script == listed_ids(tmp_path, "-a", "-F", "cmd contains train")


def test_params_from_the_command_line(home):
    root, _ = home
    rows = json_rows(sql(root, "--json", "-p", "a=3", "-p", ":b=0.5", "-p", "c=x y", "-p", "d='7'", "-p", "e=",
                         "SELECT :a AS a, :b AS b, :c AS c, :d AS d, :e AS e, typeof(:d) AS t"))
    assert rows == [{"a": 3, "b": 0.5, "c": "x y", "d": "7", "e": "", "t": "text"}]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["nothere.sql"], "no such file: nothere.sql"),
        (["SELECT :p1"], "binding parameter :p1"),
        (["-p", "p1", "SELECT 1"], "bad parameter: p1"),
        (["SELECT 1; SELECT 2"], "one statement"),
        (["SELEC 1"], "syntax error"),
        (["--timeout", "-1", "SELECT 1"], "--timeout"),
        ([" "], "no SQL in the argument"),
    ],
)
def test_bad_sql_or_arguments_are_one_line(home, args, fragment):
    root, _ = home
    assert_one_line_error(sql(root, *args), fragment)


def test_a_bad_value_line_in_a_script_is_one_line(home):
    root, _ = home
    assert_one_line_error(sql(root, "-", input="\n  \n"), "no SQL in standard input")
    assert_one_line_error(sql(root, "-", input="SELECT :p1;\n-- :p1 = adam\n"), "cannot read the value of :p1: adam")


def test_an_argument_is_a_file_only_when_one_word_names_one(home, tmp_path, monkeypatch):
    root, _ = home
    monkeypatch.chdir(tmp_path)
    Path("query").write_text("SELECT 'from the file' AS a")
    assert json_rows(sql(root, "--json", "query")) == [{"a": "from the file"}]
    Path("SELECT 1 AS a").write_text("SELECT 2 AS a")  # words: SQL, even if a file has that name
    assert json_rows(sql(root, "--json", "SELECT 1 AS a")) == [{"a": 1}]


values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(),
)


@given(values)
def test_a_printed_value_reads_back_as_itself(value):
    assert sql_value(sql_literal(value)) == value


def test_script_parameters_are_what_the_selection_binds():
    from runq.commands.render import sql_script
    from runq.engine.compiler import compile_selection
    from runq.engine.selection import build_selection

    now = datetime(2026, 11, 29, 12)
    selection = build_selection(deleted=True, filter_expr="lr > 1e400 and note = 'a\tb' and x = -0.0", now=now)
    compiled = compile_selection(selection, now)
    assert script_params(sql_script(compiled)) == compiled.bound_params()


def test_infinite_values_print_as_sqlite_reads_them(home):
    root, _ = home
    printed = runq(None, "runs", "list", "--sql", "-F", "lr < 1e400 and lr > -1e400").stdout
    literals = re.findall(r"^-- :\w+ = (.*)$", printed, flags=re.M)
    assert "1e999" in literals and "-1e999" in literals
    with sqlite3.connect(":memory:") as conn:
        assert conn.execute("SELECT 1e999, -1e999").fetchone() == (math.inf, -math.inf)
    expected = listed_ids(root, "-a", "-F", "lr < 1e400 and lr > -1e400")
    assert expected and script_ids(sql(root, "--json", "-", input=printed)) == expected


def test_option_values_are_numbers_else_text():
    assert option_params(["a=1", "b=1.5e3", "c=.5", "d=1x", "e='1'", "f=inf"]) == {
        "a": 1, "b": 1500.0, "c": 0.5, "d": "1x", "e": "1", "f": "inf"
    }


# 5. --explain


@pytest.mark.parametrize(
    "command, selection",
    [
        (["list"], ["-F", "lr > 0.001 and batch-size = 32"]),
        (["purge", "-y"], ["-Fo", "train", "1:3"]),
        (["delete", "-y"], ["-Fl", "best", "-Sc"]),
        (["restore", "-y"], ["--started", "last 30 days"]),
    ],
)
def test_explain_prints_the_plan_the_index_gets_and_touches_nothing(home, tmp_path, command, selection):
    root, _ = home
    before, state = index_digest(root), disk_state(root)
    explained = runq(root, "runs", *command, "--explain", *selection)
    assert explained.exit_code == 0, explained.stderr
    assert (index_digest(root), disk_state(root)) == (before, state)
    lines = explained.stdout.splitlines()
    assert lines[0] == "QUERY PLAN" and all(re.match(r"(\|  |   )*(\|--|`--)\S", line) for line in lines[1:])

    script = runq(root, "runs", *command, "--sql", *selection).stdout
    with sqlite3.connect(index_path(root)) as conn:
        register_functions(conn)
        rows = conn.execute("EXPLAIN QUERY PLAN " + script, script_params(script)).fetchall()
    assert lines == plan_lines([(row[0], row[1], row[3]) for row in rows])

    fresh = tmp_path / "fresh"
    make_home(fresh, runs=5)
    assert runq(fresh, "runs", *command, "--explain", *selection).stdout == explained.stdout
    assert not (fresh / "cache").exists()


def test_sql_with_explain_is_a_script_with_the_plan_as_comments(home):
    root, _ = home
    shown = runq(root, "runs", "list", "--sql", "--explain", "-Fl", "best").stdout
    script, _, plan = shown.partition(";\n")
    assert "\n-- QUERY PLAN\n-- " in plan
    assert all(line.startswith("-- ") for line in plan.splitlines())
    assert script_ids(sql(root, "--json", "-", input=shown)) == listed_ids(root, "-a", "-Fl", "best")


def test_plan_lines_draw_a_tree_as_sqlite3_does():
    rows = [(2, 0, "CO-ROUTINE x"), (5, 2, "SCAN a"), (7, 2, "SCAN b"), (9, 7, "USE b"), (12, 0, "SCAN x")]
    assert plan_lines(rows) == [
        "QUERY PLAN",
        "|--CO-ROUTINE x",
        "|  |--SCAN a",
        "|  `--SCAN b",
        "|     `--USE b",
        "`--SCAN x",
    ]


# 6. Foreign keys and views


def test_child_tables_declare_their_run(home):
    root, _ = home
    with sqlite3.connect(index_path(root)) as conn:
        for table in ("attrs", "flags", "scalars", "tags", "comments"):
            keys = conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()
            assert [(k[2], k[3], k[4]) for k in keys] == [("runs", "run_key", "key")]
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)


def test_rows_keep_pointing_at_runs_through_delete_restore_and_purge(tmp_path):
    make_home(tmp_path, runs=30, seed=6)
    for args in (["delete", "-y", "1:5"], ["restore", "-y", "1:2"], ["purge", "-y", "1:4"], ["delete", "-y", "-p", "1"]):
        assert runq(tmp_path, "runs", *args).exit_code == 0
    with sqlite3.connect(index_path(tmp_path)) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 25


def view_rows(root, view):
    rows = json_rows(sql(root, "--json", f"SELECT * FROM {view}"))
    by_run = {}
    for row in rows:
        by_run.setdefault(row["run_id"], []).append(row)
    return by_run


def _time_text(us):
    return datetime.fromtimestamp(us // 1000000).strftime("%Y-%m-%d %H:%M:%S") if us else None


def test_runs_view(home):
    root, manifest = home
    rows = view_rows(root, "runs_view")
    assert set(rows) == {r.id for r in manifest.runs}
    for record in manifest.runs:
        (row,) = rows[record.id]
        assert row["short_id"] == record.id[:8] and row["deleted"] == int(record.deleted)
        assert (row["operation"], row["status"], row["label"]) == (record.operation, record.status, record.label)
        assert row["started"] == _time_text(record.started)
        assert row["stopped"] == _time_text(record.stopped)
        if isinstance(record.tags, list) and all(isinstance(t, str) for t in record.tags):
            assert row["tags"] == (" ".join(sorted(set(record.tags))) or None)


def _stored(value):
    _kind, num, text, _folded, as_json = stored_value(value)
    return next((v for v in (num, text, as_json) if v is not None), None)


def test_run_flags(home):
    root, manifest = home
    rows = view_rows(root, "run_flags")
    for record in manifest.runs:
        if not isinstance(record.flags, dict) or not record.flags:
            continue
        got = {row["name"]: row["value"] for row in rows[record.id]}
        assert got == {str(name): _stored(value) for name, value in record.flags.items()}


def test_run_attrs_say_which_attributes_are_not_decoded_and_a_quoted_name_decodes_one(home):
    root, manifest = home
    rows = view_rows(root, "run_attrs")
    assert set(rows) == {r.id for r in manifest.runs}
    for record in manifest.runs:
        by_name = {row["name"]: row for row in rows[record.id]}
        if record.label is not None:
            assert (by_name["label"]["value"], by_name["label"]["decoded"]) == (record.label, 1)
        for name in ("cmd", "host"):
            if name in by_name:
                assert (by_name[name]["kind"], by_name[name]["value"], by_name[name]["decoded"]) == ("raw", None, 0)
    named = json_rows(sql(root, "--json", "SELECT run_id, value, decoded FROM run_attrs WHERE name = 'id'"))
    assert {row["run_id"]: (row["value"], row["decoded"]) for row in named} == {r.id: (r.id, 1) for r in manifest.runs}


def test_run_scalars(home):
    root, manifest = home
    rows = view_rows(root, "run_scalars")
    for record in manifest.runs:
        got = {(row["prefix"], row["tag"]): row["last_val"] for row in rows.get(record.id, [])}
        assert set(got) == set(record.scalars)
        for key, value in record.scalars.items():
            assert got[key] == (None if math.isnan(value) else pytest.approx(value, rel=1e-6))


def test_run_tags_and_comments(home):
    root, manifest = home
    tags, comments = view_rows(root, "run_tags"), view_rows(root, "run_comments")
    for record in manifest.runs:
        if isinstance(record.tags, list) and all(isinstance(t, str) for t in record.tags):
            assert sorted(row["tag"] for row in tags.get(record.id, [])) == sorted(set(record.tags))
        if isinstance(record.comments, list) and all(isinstance(c, dict) for c in record.comments):
            got = [(row["body"], row["time"]) for row in comments.get(record.id, [])]
            assert got == [(c.get("body"), _time_text(c.get("time"))) for c in record.comments]
