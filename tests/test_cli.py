"""runq's command line on generated Guild homes, through Typer's runner and
through the installed `runq` script: `runs list` as Guild lists runs, --sql
scripts that select what the command selects, the index and home options,
and a one-line error for every kind of bad input."""

import gc
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from guildenv import guild_script  # noqa: E402

from runq.commands.app import app  # noqa: E402
from runq.engine import rundir  # noqa: E402
from runq.engine.executor import register_functions  # noqa: E402
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home  # noqa: E402

NOW = datetime(2026, 11, 29, 12, 0, 0)
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
GUILD_NOTE = "Showing the first {shown} runs ({total} total) - use --all to show all or -m to show more\n"


def make_home(root, runs=40, seed=1, **spec):
    spec = {"profile": "fidelity", "sourcecode_files": 2, **spec}
    return generate_home(root, HomeSpec(runs=runs, seed=seed, **spec), NOW)


def runq(home, *args, input=None, env=None):
    """runq in-process; `home` None leaves the home to GUILD_HOME."""
    argv = (["-H", str(home)] if home else []) + ["--now", NOW.isoformat(), *args]
    return CliRunner().invoke(app, argv, input=input, env=env)


def listed(home, *args):
    result = runq(home, "runs", "list", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def listed_ids(home, *args):
    return [run["id"] for run in listed(home, *args)]


def dir_names(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def disk_state(home):
    """Every file and directory under the run roots, with sizes: what 'changes nothing' keeps."""
    state = {}
    for root in (home / "runs", home / "trash"):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                state[os.path.relpath(path, home)] = os.lstat(path).st_size
    return state


def assert_one_line_error(result, *fragments):
    assert result.exit_code not in (0, None), result.stdout
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runq: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def home50(tmp_path_factory):
    """50 live and 30 deleted runs; read-only for the tests that use it."""
    root = tmp_path_factory.mktemp("home50")
    return root, make_home(root, runs=80, seed=7, deleted_fraction=0.375)


# runs list


def _sort_key(record):
    ts = record.sort_timestamp
    return (ts is None, -(ts or 0))


@pytest.mark.parametrize("deleted", [False, True])
def test_list_is_newest_first_by_start_else_init_time(home50, deleted):
    home, manifest = home50
    records = manifest.deleted if deleted else manifest.live
    timed = [r for r in records if r.sort_timestamp is not None]
    assert len({r.sort_timestamp for r in timed}) == len(timed)  # one order only
    assert len(timed) < len(records)  # and some runs with no time at all
    shown = listed_ids(home, *(["--deleted"] if deleted else []))
    expected = [r.id for r in sorted(records, key=_sort_key)]
    assert shown[: len(timed)] == expected[: len(timed)]
    assert set(shown[len(timed) :]) == set(expected[len(timed) :])


def test_list_json_has_each_runs_fields(home50):
    home, manifest = home50
    by_id = manifest.by_id()
    shown = listed(home)
    assert [run["index"] for run in shown] == list(range(1, len(manifest.live) + 1))
    for run in shown:
        record = by_id[run["id"]]
        assert not record.deleted and run["deleted"] is False
        assert run["operation"] == record.operation
        assert run["started"] == record.started
        assert run["stopped"] == record.stopped
        assert run["status"] == record.status
        assert run["exit_status"] == record.exit_status
        assert run["marked"] is record.marked  # as Guild: null without a marked file
        assert run["run_dir"] == str(home / "runs" / run["id"])
        if record.label is None or record.label == record.label.strip():
            assert run["label"] == record.label
        started = datetime.fromtimestamp(record.started / 1e6) if record.started else None
        assert run["started_text"] == (started.strftime("%Y-%m-%d %H:%M:%S") if started else "")


def test_list_deleted_shows_the_trash(home50):
    home, manifest = home50
    shown = listed(home, "--deleted")
    assert sorted(run["id"] for run in shown) == sorted(r.id for r in manifest.deleted)
    assert all(run["deleted"] and run["run_dir"] == str(home / "trash" / "runs" / run["id"]) for run in shown)


def _rows(stdout):
    return [re.match(r"\[(\d+):([0-9a-f]{8})\]", line).groups() for line in stdout.splitlines()]


@pytest.mark.parametrize(
    "args, shown, note",
    [
        ([], 20, GUILD_NOTE.format(shown=20, total=50)),
        (["-m"], 40, GUILD_NOTE.format(shown=40, total=50)),
        (["-m", "-m"], 50, ""),
        (["--more", "--more", "--more"], 50, ""),
        (["-n", "7"], 7, ""),
        (["--limit", "60"], 50, ""),
        (["-a"], 50, ""),
    ],
)
def test_list_limits_rows_and_notes_the_rest_on_stderr(home50, args, shown, note):
    home, _ = home50
    ids = listed_ids(home)
    result = runq(home, "runs", "list", *args)
    assert result.exit_code == 0
    assert result.stderr == note
    assert _rows(result.stdout) == [(str(i), run_id[:8]) for i, run_id in enumerate(ids[:shown], 1)]


# Plain columns, judged by `guild runs list` itself


def _point_runs_at(home, manifest, base):
    """Gives some runs operation dirs under `base`, so that each way Guild shows
    an op dir (same as cwd, below it, beside it, under ~, shortened) occurs."""
    oprefs = [
        f"guildfile:{base}/proj/guild.yml 7f3a '' train",
        f"guildfile:{base}/proj/sub/guild.yml 7f3a resnet evaluate",
        f"guildfile:{base}/guild.yml 7f3a '' prepare",
        f"guildfile:{base}/a-rather-long-project-directory/with/several/levels/guild.yml 7f3a '' train",
        f"script:{base}/other/scripts '' '' train.py",
        f"guildfile:{base}/other/guild.yml 7f3a '' test",
    ]
    for roots in (manifest.live, manifest.deleted):
        for record, opref in zip(sorted(roots, key=lambda r: r.id), oprefs):
            (record.run_dir(home) / ".guild" / "opref").write_text(opref + "\n")


def _strip_labels(home, manifest):
    # Guild shows a label as written; labels with surrounding blanks are the
    # subject of test_list_shows_labels_with_surrounding_blanks_as_guild_does.
    for record in manifest.runs:
        if record.label is not None and record.label != record.label.strip():
            (record.run_dir(home) / ".guild" / "attrs" / "label").write_text(
                encode_attr(record.label.strip())
            )


@pytest.fixture(scope="module")
def columns_home(tmp_path_factory):
    base = tmp_path_factory.mktemp("columns")
    home = base / "home"
    manifest = make_home(home, runs=60, seed=11)
    _point_runs_at(home, manifest, base)
    _strip_labels(home, manifest)
    for sub in ("proj", "other", "elsewhere/deep"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return base, home


def _guild(home, args, cwd, user_home):
    env = {**os.environ, "GUILD_HOME": str(home), "HOME": str(user_home), "NO_COLOR": "1"}
    return subprocess.run([str(guild_script()), *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "cwd, user_home",
    [("proj", "elsewhere"), ("other", "."), ("/", "proj"), ("elsewhere/deep", "."), (".", "/home/alice")],
)
@pytest.mark.parametrize("args", [["-a"], ["--deleted", "-a"], []])
def test_list_columns_are_guilds(columns_home, monkeypatch, cwd, user_home, args):
    base, home = columns_home
    cwd, user_home = base / cwd, base / user_home  # an absolute right side stays as it is
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(user_home))
    guild = _guild(home, ["runs", "list", *args], cwd, user_home)
    assert guild.returncode == 0, guild.stderr
    result = runq(home, "runs", "list", *args)
    assert result.exit_code == 0
    assert result.stdout == guild.stdout
    assert result.stderr == guild.stderr


def test_list_shows_labels_with_surrounding_blanks_as_guild_does(tmp_path):
    manifest = make_home(tmp_path, runs=20, seed=2)
    record = manifest.live[0]
    (record.run_dir(tmp_path) / ".guild" / "attrs" / "label").write_text(
        encode_attr(" leading and trailing ")
    )
    shown = {run["id"]: run for run in listed(tmp_path)}
    assert shown[record.id]["label"] == " leading and trailing "


# --sql: a script that runs as printed


SQL_SELECTIONS = [
    [],
    ["-Fl", "best"],
    ["-Fo", "train", "-Sce"],
    ["-F", "lr > 0.001 or label contains best"],
    ["--started", "last 30 days"],
    ["-Fm", "2:6"],
    ["3", "1", "1:2"],
    ["-Ft", "best", "-Fc", "bob"],
    ["-Fo", "^gpkg", "--not-error"],
]
SQL_COMMANDS = {
    "list": ["runs", "list", "--json"],
    "purge": ["runs", "purge", "--dry-run", "--json"],
    "delete": ["runs", "delete", "--dry-run", "--json"],
    "restore": ["runs", "restore", "--dry-run", "--json"],
}


def run_sql_script(db_path, script):
    """Executes a printed --sql script with sqlite3, binding its `-- :pN = value` lines."""
    params = {}
    literal_reader = sqlite3.connect(":memory:")
    for name, literal in re.findall(r"^-- :(\w+) = (.*)$", script, flags=re.M):
        params[name] = literal_reader.execute(f"SELECT {literal}").fetchone()[0]
    conn = sqlite3.connect(db_path)
    register_functions(conn)
    cursor = conn.execute(script, params)
    columns = [d[0] for d in cursor.description]
    ids = [dict(zip(columns, row))["id"] for row in cursor]
    conn.close()
    return list(dict.fromkeys(i for i in ids if i is not None))


@pytest.fixture(scope="module")
def sql_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqlhome")
    make_home(root, runs=60, seed=3)
    return root


@pytest.mark.parametrize("command", SQL_COMMANDS)
@pytest.mark.parametrize("selection", SQL_SELECTIONS, ids=" ".join)
def test_sql_script_selects_what_the_command_selects(sql_home, command, selection):
    args = SQL_COMMANDS[command]
    result = runq(sql_home, *args, *selection)
    assert result.exit_code == 0, result.stderr
    ids = [run["id"] for run in json.loads(result.stdout)]
    shown = runq(sql_home, *args[:2], "--sql", *selection)
    assert shown.exit_code == 0 and shown.stderr == ""
    assert shown.stdout.startswith(("WITH", "SELECT"))
    assert run_sql_script(sql_home / "cache" / "runq" / "index.db", shown.stdout) == ids


def test_sql_script_shows_each_parameter_as_a_literal():
    result = runq(None, "runs", "list", "--sql", "-Fl", "it's", "-F", "lr > 0.5 and note = undefined")
    assert result.exit_code == 0
    body, _, tail = result.stdout.partition(";\n")
    params = dict(re.fullmatch(r"-- :(p\d+) = (.*)", line).groups() for line in tail.splitlines())
    assert {"'lr'", "'note'", "0.5", "'it''s'"} <= set(params.values())
    assert set(re.findall(r":(p\d+)", body)) == set(params)
    assert "it's" not in body and "note" not in body  # user text travels as parameters only
    assert re.search(r"^WHERE$|^  WHERE$", body, flags=re.M)  # pretty-printed: one clause a line


def test_sql_script_on_large_attributes_says_when_it_works(tmp_path):
    """Attributes are decoded the first time a command selects on them;
    the script says so, and works once that happened."""
    make_home(tmp_path, runs=30, seed=4)
    shown = runq(tmp_path, "runs", "list", "--sql", "-F", "cmd contains train")
    assert shown.stdout.startswith("-- Attributes this selection names (cmd) stay undecoded")
    expected = listed_ids(tmp_path, "-F", "cmd contains train")
    from_script = run_sql_script(tmp_path / "cache" / "runq" / "index.db", shown.stdout)
    assert from_script == expected
    assert from_script


@pytest.mark.parametrize("command", ["list", "purge", "delete", "restore"])
def test_sql_never_creates_or_touches_the_index(tmp_path, command):
    make_home(tmp_path, runs=20)
    yes = [] if command == "list" else ["-y"]
    result = runq(tmp_path, "runs", command, "--sql", *yes, "-Fl", "best")
    assert result.exit_code == 0 and result.stdout.startswith(("WITH", "SELECT"))
    assert not (tmp_path / "cache").exists()
    assert runq(tmp_path, "runs", "list", "-n", "1").exit_code == 0
    gc.collect()  # closes the index that command left open, as its process would
    index_dir = tmp_path / "cache" / "runq"
    before = {path.name: os.stat(path).st_mtime_ns for path in index_dir.iterdir()}
    state = disk_state(tmp_path)
    assert runq(tmp_path, "runs", command, "--sql", *yes).exit_code == 0
    assert {path.name: os.stat(path).st_mtime_ns for path in index_dir.iterdir()} == before
    assert disk_state(tmp_path) == state


# The index and the home


def _index_fields(stdout):
    return dict(re.match(r"([A-Z][a-z ]+):\s+(.*)$", line).groups() for line in stdout.splitlines())


def test_index_reports_its_state(tmp_path):
    manifest = make_home(tmp_path, runs=30)
    result = runq(tmp_path, "index")
    assert result.exit_code == 0, result.stderr
    fields = _index_fields(result.stdout)
    assert list(fields) == [
        "Guild home",
        "Index",
        "Size",
        "Runs",
        "Deleted runs",
        "Last change",
        "Refresh took",
    ]
    assert fields["Guild home"] == f"{tmp_path} (given with -H)"
    assert fields["Index"] == f"{tmp_path / 'cache' / 'runq' / 'index.db'} (in the home)"
    assert fields["Runs"] == str(len(manifest.live))
    assert fields["Deleted runs"] == str(len(manifest.deleted))
    assert re.fullmatch(r"\d+(\.\d)? (bytes|KB|MB)", fields["Size"])
    refreshed = datetime.strptime(fields["Last change"], "%Y-%m-%d %H:%M:%S")
    assert abs((datetime.now() - refreshed).total_seconds()) < 60
    assert re.fullmatch(r"\d+\.\d{3} s", fields["Refresh took"])


def test_a_command_on_an_unchanged_home_leaves_the_index_files_as_they_were(tmp_path):
    make_home(tmp_path, runs=30)
    commands = (["runs", "list"], ["runs", "list", "--deleted", "-F", "lr > 0.001"], ["index"])
    for argv in commands:  # builds the index and keeps each selection's compiled SQL
        assert runq(tmp_path, *argv).exit_code == 0
    time.sleep(rundir.RACY_WINDOW_NS / 1e9)  # files written just now are read again until then
    assert runq(tmp_path, "runs", "list").exit_code == 0
    files = [tmp_path / "cache" / "runq" / name for name in ("index.db", "index.db-wal")]
    before = [(p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in files]
    for argv in commands:
        assert runq(tmp_path, *argv).exit_code == 0
    assert [(p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in files] == before


def test_index_follows_the_disk_and_rebuild_starts_over(tmp_path):
    manifest = make_home(tmp_path, runs=30)
    db = tmp_path / "cache" / "runq" / "index.db"
    assert runq(tmp_path, "index").exit_code == 0
    gone = manifest.live[0].run_dir(tmp_path)
    os.rename(gone, tmp_path / "trash" / "runs" / gone.name)
    fields = _index_fields(runq(tmp_path, "index").stdout)
    assert (fields["Runs"], fields["Deleted runs"]) == (
        str(len(manifest.live) - 1),
        str(len(manifest.deleted) + 1),
    )
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('left-by-test', 'x')")
    conn.close()
    result = runq(tmp_path, "index", "--rebuild")
    assert result.exit_code == 0
    assert _index_fields(result.stdout)["Runs"] == str(len(manifest.live) - 1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'left-by-test'").fetchall() == []
    conn.close()


def test_index_option_puts_the_database_elsewhere(tmp_path):
    manifest = make_home(tmp_path / "home", runs=20)
    elsewhere = tmp_path / "elsewhere" / "my.db"
    elsewhere.parent.mkdir()
    result = runq(manifest.root, "--index", str(elsewhere), "runs", "list", "--json")
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)) == len(manifest.live)
    assert elsewhere.exists()
    assert not (manifest.root / "cache").exists()
    fields = _index_fields(runq(manifest.root, "--index", str(elsewhere), "index").stdout)
    assert fields["Index"] == f"{elsewhere} (given with --index)"


def test_guild_home_comes_from_the_environment_unless_given(tmp_path):
    one = make_home(tmp_path / "one", runs=20, seed=1)
    two = make_home(tmp_path / "two", runs=30, seed=2)
    from_env = runq(None, "runs", "list", "--json", env={"GUILD_HOME": str(one.root)})
    assert sorted(run["id"] for run in json.loads(from_env.stdout)) == sorted(r.id for r in one.live)
    given = runq(two.root, "runs", "list", "--json", env={"GUILD_HOME": str(one.root)})
    assert sorted(run["id"] for run in json.loads(given.stdout)) == sorted(r.id for r in two.live)
    assert not (tmp_path / "two" / "runs" / one.live[0].id).exists()


def test_no_refresh_uses_the_index_as_it_is(tmp_path):
    manifest = make_home(tmp_path, runs=20)
    assert runq(tmp_path, "index").exit_code == 0
    moved = manifest.live[0]
    os.rename(moved.run_dir(tmp_path), tmp_path / "trash" / "runs" / moved.id)
    assert moved.id in [
        run["id"] for run in json.loads(runq(tmp_path, "--no-refresh", "runs", "list", "--json").stdout)
    ]
    assert moved.id not in listed_ids(tmp_path)
    assert moved.id in listed_ids(tmp_path, "--deleted")


def _break_two_runs(home, manifest):
    """One live run with an attribute that is not YAML, one with an event file cut short."""
    corrupt = manifest.live[0]
    (corrupt.run_dir(home) / ".guild" / "attrs" / "label").write_text("flags: [unclosed\n")
    truncated = next(
        (r, path)
        for r in manifest.live[1:]
        for path in sorted(r.run_dir(home).rglob("*tfevents*"))
        if path.stat().st_size > 40
    )
    record, path = truncated
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 7)
    return corrupt, record, path


def test_problems_are_one_summary_line_or_one_line_per_run_with_v(tmp_path):
    manifest = make_home(tmp_path, runs=40)
    corrupt, truncated, path = _break_two_runs(tmp_path, manifest)
    quiet = runq(tmp_path, "runs", "list", "-a")
    assert quiet.exit_code == 0
    assert quiet.stderr == (
        "runq: 2 run(s) had unreadable files and were indexed with what could be read (use -v for details)\n"
    )
    shown = _rows(quiet.stdout)
    assert {corrupt.id[:8], truncated.id[:8]} <= {short for _, short in shown}
    loud = runq(tmp_path, "-v", "index", "--rebuild")
    lines = loud.stderr.splitlines()
    assert lines[0] == "runq: 2 run(s) had unreadable files and were indexed with what could be read"
    details = {line.split(":")[0].strip(): line for line in lines[1:]}
    assert set(details) == {corrupt.id[:8], truncated.id[:8]}
    assert "attribute label" in details[corrupt.id[:8]]
    assert path.name in details[truncated.id[:8]]


# Bad input: one line, a non-zero exit, no traceback, nothing changed


@pytest.fixture(scope="module")
def small_home(tmp_path_factory):
    """A home that no test in this part may change."""
    root = tmp_path_factory.mktemp("small")
    return root, make_home(root, runs=30, seed=5)


def _first_char_shared(ids):
    return next(c for c in "abcdef" if sum(i.startswith(c) for i in ids) > 1)  # digits would be positions


BAD_SELECTIONS = [
    (["-F", "label = = best"], "at position 8"),
    (["-F", "label contains 'unclosed"], "at position 15"),
    (["--started", "the day before"], None),
    (["--started", "between 2024-01-01"], None),
    (["--started", "2024-13-01"], None),
    (["-Sx"], "'x'"),
    (["-Scq"], "'q'"),
    (["-Fl", "best", "-Fu"], "--unlabeled"),
    (["-Fm", "-Fn"], "--unmarked"),
    (["zzzz"], "'zzzz'"),
    (["--bogus"], "--bogus"),
]


@pytest.mark.parametrize("command", ["list", "purge", "delete", "restore"])
@pytest.mark.parametrize("args, fragment", BAD_SELECTIONS, ids=[" ".join(args) for args, _ in BAD_SELECTIONS])
def test_bad_selection_is_one_line_and_changes_nothing(small_home, command, args, fragment):
    home, _ = small_home
    state = disk_state(home)
    extra = ["-y"] if command != "list" else []
    result = runq(home, "runs", command, *extra, *args)
    assert_one_line_error(result, *([fragment] if fragment else []))
    assert disk_state(home) == state


def test_filter_error_names_the_offending_position():
    expr = "lr > 0.1 and = best"
    result = runq(None, "runs", "list", "--sql", "-F", expr)
    line = assert_one_line_error(result)
    position = int(re.search(r"at position (\d+)", line).group(1))
    assert expr[position:].startswith("= best")


def test_filter_error_at_the_end_names_the_position():
    line = assert_one_line_error(runq(None, "runs", "list", "--sql", "-F", "label ="))
    assert "position 7" in line


def test_started_error_says_which_option():
    line = assert_one_line_error(runq(None, "runs", "list", "--sql", "--started", "the day before"))
    assert "RANGE" in line or "--started" in line


def test_run_prefix_matching_several_runs_names_them(small_home):
    home, manifest = small_home
    prefix = _first_char_shared([r.id for r in manifest.live])
    line = assert_one_line_error(runq(home, "runs", "delete", "-y", prefix), f"'{prefix}'")
    matching = sorted(r.id[:8] for r in manifest.live if r.id.startswith(prefix))
    assert all(short in line for short in matching[:10])


def test_missing_guild_home_is_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(runq(missing, "runs", "list"), str(missing))
    assert_one_line_error(runq(None, "runs", "purge", "-y", env={"GUILD_HOME": str(missing)}), str(missing))
    assert not missing.exists()


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("DELETE FROM runs", "not allowed"),
        ("DROP TABLE runs", "not allowed"),
        ("INSERT INTO meta (key, value) VALUES ('a', 'b')", "not allowed"),
        ("SELECT 1; DELETE FROM runs", "one statement"),
        ("SELEC id FROM runs", "syntax error"),
        ("SELECT nope FROM runs", "no such column"),
    ],
)
def test_sql_refuses_writes_and_reports_bad_sql_in_one_line(small_home, query, fragment):
    home, manifest = small_home
    assert_one_line_error(runq(home, "sql", query), "SQL error", fragment)
    count = runq(home, "sql", "--json", "SELECT COUNT(*) AS n FROM runs")
    assert json.loads(count.stdout) == [{"n": len(manifest.runs)}]


def test_sql_answers_a_select(small_home):
    home, manifest = small_home
    result = runq(home, "sql", "SELECT id, deleted FROM runs ORDER BY id")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "deleted"]
    assert [line.split() for line in lines[2:]] == sorted([r.id, str(int(r.deleted))] for r in manifest.runs)


# The installed script: real exit codes and stderr


def script(*args, input=None, env=None):
    return subprocess.run(
        [str(RUNQ_SCRIPT), *args],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, code",
    [
        (["runs", "purge", "-y", "-F", "label = = x"], 1),
        (["runs", "delete", "-y", "--started", "sometime"], 1),
        (["runs", "restore", "-y", "nosuchrun"], 1),
        (["runs", "list", "--no-such-option"], 2),
        (["sql", "UPDATE runs SET label = 'x'"], 1),
    ],
)
def test_installed_script_exits_with_one_line_errors(small_home, args, code):
    home, _ = small_home
    state = disk_state(home)
    done = script("-H", str(home), *args)
    assert done.returncode == code
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("runq: "), done.stderr
    assert "Traceback" not in done.stderr
    assert disk_state(home) == state


def test_installed_script_reports_a_missing_home_and_lists_a_real_one(small_home, tmp_path):
    home, manifest = small_home
    done = script("runs", "list", env={"GUILD_HOME": str(tmp_path / "missing")})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("runq: ") and str(tmp_path / "missing") in done.stderr
    done = script("-H", str(home), "runs", "list", "-a", "--deleted")
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == len(manifest.deleted)


@pytest.mark.parametrize("answer", ["n\n", ""])
def test_installed_script_exits_4_when_purge_is_not_confirmed(small_home, answer):
    home, manifest = small_home
    trash = dir_names(home / "trash" / "runs")
    done = script("-H", str(home), "runs", "purge", input=answer)
    assert done.returncode == 4
    assert done.stderr.splitlines()[-1].startswith(
        f"Permanently delete {len(manifest.deleted)} run(s)? (y/N)"
    )
    assert "Traceback" not in done.stderr
    assert dir_names(home / "trash" / "runs") == trash


# Run by a process no shell started (cron, a service): `runq` ends up a child
# of a reparented orphan, whose ancestors hold no shell.
ORPHAN = """
import json, os, subprocess, sys, time
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(0.2)
        done = subprocess.run(sys.argv[2:], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        with open(sys.argv[1] + ".tmp", "w") as f:
            json.dump([done.returncode, done.stdout, done.stderr], f)
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    os._exit(0)
"""


@pytest.mark.parametrize("option", ["--show-completion", "--install-completion"])
def test_completion_where_no_shell_started_runq_is_a_one_line_error(tmp_path, option):
    answer = tmp_path / "answer.json"
    subprocess.run([sys.executable, "-c", ORPHAN, str(answer), str(RUNQ_SCRIPT), option], check=True, timeout=30,
                   env={**os.environ, "HOME": str(tmp_path)})
    for _ in range(600):
        if answer.exists():
            break
        time.sleep(0.05)
    code, stdout, stderr = json.loads(answer.read_text())
    assert (code, stdout) == (2, "")
    assert stderr == f"runq: cannot tell which shell runs runq: use {option} from bash, zsh, fish or PowerShell\n"
    assert os.listdir(tmp_path) == ["answer.json"]  # nothing installed
