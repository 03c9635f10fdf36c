"""runq under things going wrong: readers killed (with runq, or alone),
the index locked by another process, unexpected errors, a reader of the
output that goes away, arguments that are not text or are huge, patterns
that backtrack for ever; and a demo that writes only into the cache."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robust_homes import NOW, alive, children_of, many_runs_home
from runq.commands.app import app
from runq.engine import executor, indexer
from runq.engine.samplehome import HomeSpec, generate_home

RUNQ_SCRIPT = Path(sys.executable).parent / "runq"


def runq(home, *args, env=None):
    argv = (["-H", str(home)] if home else []) + ["--now", NOW.isoformat(), *args]
    return CliRunner().invoke(app, argv, env=env)


def script(*args, env=None, **kwargs):
    return subprocess.Popen(
        [str(RUNQ_SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        stdout=kwargs.pop("stdout", subprocess.PIPE),
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def assert_one_line_error(result, *fragments):
    assert result.exit_code not in (0, None), result.stdout
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runq: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def wait_for_children(pid, count, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [child for child in children_of(pid) if alive(child)]
        if len(found) >= count:
            return found
        time.sleep(0.005)
    raise AssertionError(f"runq {pid} never had {count} children")


def wait_until_gone(pids, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.02)
    return [pid for pid in pids if alive(pid)]


def indexed_count(index_path):
    with sqlite3.connect(index_path) as conn:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


@pytest.fixture(scope="module")
def big_home(tmp_path_factory):
    """1500 small runs: a cold build reads them with the pool of readers."""
    return many_runs_home(tmp_path_factory.mktemp("big") / "home", 1500)


@pytest.fixture(scope="module")
def small_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("small") / "home"
    generate_home(home, HomeSpec(runs=30, seed=3, profile="fidelity", sourcecode_files=0), NOW)
    return home


# The pool of readers


def test_killing_runq_mid_build_leaves_no_reader_and_ends_its_pipeline(big_home, tmp_path):
    index = tmp_path / "index.db"
    runq_process = script("-H", str(big_home), "--index", str(index), "index", "--rebuild")
    cat = subprocess.Popen(["cat"], stdin=runq_process.stdout, stdout=subprocess.PIPE)
    runq_process.stdout.close()  # only cat reads it now
    readers = wait_for_children(runq_process.pid, 2)
    runq_process.send_signal(signal.SIGKILL)
    runq_process.wait(timeout=10)
    assert wait_until_gone(readers) == []
    cat.communicate(timeout=5)  # ends: nothing else holds runq's stdout
    assert cat.returncode == 0


def test_a_killed_reader_costs_only_time(big_home, tmp_path):
    index = tmp_path / "index.db"
    runq_process = script("-H", str(big_home), "--index", str(index), "index", "--rebuild")
    readers = wait_for_children(runq_process.pid, 2)
    os.kill(readers[0], signal.SIGKILL)
    out, err = runq_process.communicate(timeout=120)
    assert runq_process.returncode == 0, err
    assert b"Traceback" not in err
    assert err.decode().splitlines() == [
        "runq: 1 process(es) reading runs died (killed by signal 9); their runs were read again"
    ]
    assert indexed_count(index) == 1500


def test_forked_children_die_with_their_parent(tmp_path):
    """The stat child and the readers start the same way: killing their parent kills them."""
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import conftest\n"
        "from runq.engine.indexer import _start_child\n"
        "print(_start_child(time.sleep, 600), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    assert wait_until_gone([child]) == []


def test_reading_runs_in_process_and_with_the_pool_agree(big_home):
    items = [(str(big_home / "runs" / name), name, 0, n) for n, name in enumerate(sorted(os.listdir(big_home / "runs")))]
    lost = []
    pooled = [r for chunk in indexer._read_runs(items[:400], 2, lost.append) for r in chunk]
    serial = [r for chunk in indexer._read_runs(items[:400], 1) for r in chunk]
    assert lost == []
    assert [(r.id, r.run) for r in pooled] == [(r.id, r.run) for r in serial]


def test_many_runs_without_a_time_are_indexed(tmp_path):
    """They all want the same row key, over several chunks of runs."""
    home = tmp_path / "home"
    generate_home(home, HomeSpec(runs=120, seed=4, profile="realistic", sourcecode_files=0, deleted_fraction=0), NOW)
    for run in (home / "runs").iterdir():
        for name in ("started", "initialized"):
            (run / ".guild" / "attrs" / name).unlink(missing_ok=True)
    result = runq(home, "runs", "list", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == 120


# A write lock held by another process


# What another process holds: SQLite's write lock on the index, or runq's
# own lock file exclusively (as while it rebuilds or replaces the index).
HOLDERS = {
    "write": (
        "import sqlite3, sys, time\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "conn.execute('COMMIT')\n"
    ),
    "replacement": (
        "import fcntl, sys, time\n"
        "fd = open(sys.argv[1] + '.lock', 'w')\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
    ),
}
GAVE_UP = {
    "write": "another process still holds the index {index} (wait longer with --lock-timeout SECONDS or RUNQ_LOCK_TIMEOUT)",
    "replacement": "the index {index} is being replaced or used by another runq process "
    "(try again when it has finished, or wait longer with --lock-timeout SECONDS)",
}


def hold_lock(index_path, seconds, kind="write"):
    """Another process holding a lock of the index; returns once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDERS[kind], str(index_path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


@pytest.mark.parametrize("kind", sorted(HOLDERS))
def test_a_held_lock_is_announced_then_ends_in_one_line(small_home, tmp_path, kind):
    index = tmp_path / "index.db"
    assert runq(small_home, "--index", str(index), "index").exit_code == 0
    holder = hold_lock(index, 30, kind)
    try:
        result = runq(small_home, "--index", str(index), "--lock-timeout", "1", "runs", "list")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [
        f"runq: waiting for another runq process using the index {index} (up to 1 s, --lock-timeout)",
        "runq: gave up after 1 s: " + GAVE_UP[kind].format(index=index),
    ]


def test_runq_goes_on_when_the_lock_is_released_in_time(small_home, tmp_path):
    index = tmp_path / "index.db"
    assert runq(small_home, "--index", str(index), "index").exit_code == 0
    holder = hold_lock(index, 1.5)
    result = runq(small_home, "--index", str(index), "runs", "list", "-a", env={"RUNQ_LOCK_TIMEOUT": "30"})
    holder.wait()
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("runq: waiting for another runq process using the index")
    assert "(up to 30 s, --lock-timeout)" in result.stderr
    assert len(result.stdout.splitlines()) > 0


def test_the_script_says_within_a_second_that_it_waits(small_home, tmp_path):
    index = tmp_path / "index.db"
    assert runq(small_home, "--index", str(index), "index").exit_code == 0
    holder = hold_lock(index, 60)
    try:
        waiting = script("-H", str(small_home), "--index", str(index), "runs", "list", env={"RUNQ_LOCK_TIMEOUT": "3"})
        first_line = waiting.stderr.readline().decode()
        out, rest = waiting.communicate(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert first_line.startswith("runq: waiting for another runq process using the index")
    assert waiting.returncode == 1
    assert rest.decode().startswith("runq: gave up after 3 s") and b"Traceback" not in rest


# Unexpected errors, broken pipes


def test_an_os_error_is_one_line_with_its_path(small_home, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = runq(small_home, "--index", str(not_a_dir / "sub" / "index.db"), "runs", "list")
    assert_one_line_error(result, str(not_a_dir))
    assert result.exit_code == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("how", [["-v"], ["RUNQ_DEBUG"]])
def test_verbose_or_runq_debug_shows_the_traceback(small_home, how):
    env = {"RUNQ_DEBUG": "1"} if how == ["RUNQ_DEBUG"] else None
    options = ["-v"] if how == ["-v"] else []
    with open("/dev/full", "w") as full:  # an error no command expects
        done = script("-H", str(small_home), *options, "runs", "list", "-a", "--deleted", stdout=full, env=env)
        _, err = done.communicate(timeout=60)
    assert done.returncode == 1
    assert b"Traceback (most recent call last)" in err
    assert err.decode().splitlines()[-1].startswith("runq: cannot write")


def test_output_to_a_full_disk_is_one_line(small_home):
    with open("/dev/full", "w") as full:
        done = script("-H", str(small_home), "runs", "list", "-a", "--deleted", stdout=full)
        _, err = done.communicate(timeout=60)
    assert done.returncode == 1
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runq: cannot write") and "No space left on device" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["sql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 300000) SELECT x FROM c"],
        ["runs", "list", "-a", "--deleted"],
    ],
)
def test_a_reader_that_goes_away_ends_runq_quietly(big_home, args):
    done = script("-H", str(big_home), *args)
    assert done.stdout.readline()
    done.stdout.close()  # as `| head -1` does
    err = done.stderr.read()
    assert done.wait(timeout=60) == 0
    assert err == b""


# Arguments


NOT_UTF8 = b"ab\xff\xfe".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    "args, option",
    [
        (["runs", "list", NOT_UTF8], "RUN"),
        (["runs", "purge", "-Fo", NOT_UTF8], "--operation"),
        (["runs", "list", "-Fo", "^" + NOT_UTF8], "--operation"),
        (["runs", "list", "-Fl", NOT_UTF8], "--label"),
        (["runs", "list", "-Ft", NOT_UTF8], "--tag"),
        (["runs", "list", "-Fc", NOT_UTF8], "--comment"),
        (["runs", "list", "-Fd", NOT_UTF8], "--digest"),
        (["runs", "delete", "-F", f"label = '{NOT_UTF8}'"], "--filter"),
        (["runs", "list", "--started", NOT_UTF8], "--started"),
    ],
)
def test_arguments_that_are_not_utf8_are_refused_by_name(small_home, args, option):
    line = assert_one_line_error(runq(small_home, *args), option, "not valid UTF-8", "ab\\xff\\xfe")
    assert "\udcff" not in line


def test_sql_that_is_not_utf8_is_one_line(small_home):
    assert_one_line_error(runq(small_home, "sql", f"SELECT '{NOT_UTF8}'"), "not valid UTF-8", "\\xff")


def test_control_characters_are_shown_escaped(small_home):
    line = assert_one_line_error(runq(small_home, "runs", "list", "x\x1b[2J\x07y\nz\u202e"))
    assert "x\\x1b[2J\\x07y\\nz\\u202e" in line
    assert not any(c in line for c in "\x1b\x07\n\u202e")


def test_a_huge_value_is_not_echoed(small_home):
    huge = "a" * 1_000_000
    for args in (["runs", "list", huge], ["runs", "list", "-F", f"x = = {huge}"], ["runs", "list", "--started", huge]):
        line = assert_one_line_error(runq(small_home, *args))
        assert len(line) < 1200


def test_a_huge_value_with_spaces_keeps_the_end_of_the_message(small_home):
    line = assert_one_line_error(runq(small_home, "runs", "list", "a " * 500_000))
    assert len(line) < 1200
    assert line.endswith("(try 'runq runs list' for a list)")


@pytest.fixture
def long_operation_home(tmp_path):
    home = tmp_path / "home"
    generate_home(home, HomeSpec(runs=4, seed=5, profile="realistic", sourcecode_files=0, deleted_fraction=0), NOW)
    run = sorted((home / "runs").iterdir())[0]
    (run / ".guild" / "opref").write_text(f"guildfile:/p/guild.yml abc '' {'a' * 40}b\n")
    return home


def test_a_pattern_that_backtracks_for_ever_ends_in_one_line(long_operation_home, monkeypatch):
    monkeypatch.setattr(executor, "PATTERN_SECONDS", 0.2)
    executor._search.cache_clear()
    line = assert_one_line_error(runq(long_operation_home, "runs", "list", "-Fo", "^(a|aa)+$"), "took over 0.2 s")
    assert line.startswith("runq: the pattern '^(a|aa)+$'")
    result = runq(long_operation_home, "runs", "list", "--json", "-Fo", "^a+b$")
    assert [run["operation"] for run in json.loads(result.stdout)] == ["a" * 40 + "b"]


def test_regexp_reads_patterns_as_python_does():
    assert executor.regexp("^tr(ai)n$", "train") == 1
    assert executor.regexp("[", "train") == 0  # a bad pattern matches nothing, as in Guild
    assert executor.regexp(r"\p{L}", "train") == 0  # `re` refuses it, so Guild matches nothing
    assert executor.regexp("^a", None) == 0
    assert executor.shell_match(None, "a*") == 0
    assert executor.shell_match("abc", "a*") == 1


# The demo


def test_demo_without_a_home_writes_its_sample_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache), "GUILD_HOME": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["demo", "--runs", "12"], env=env)
    assert result.exit_code == 0, result.output
    sample = cache / "runq" / "demo-home"
    assert f"Generating a sample Guild home with 12 runs in {sample}" in result.stdout
    assert (sample / "runs").is_dir()
    assert sorted(os.listdir(tmp_path)) == ["cache"]


def test_demo_on_an_existing_home_writes_nothing_into_it(small_home, tmp_path):
    before = sorted(str(p.relative_to(small_home)) for p in small_home.rglob("*"))
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["-H", str(small_home), "demo"], env={"XDG_CACHE_HOME": str(cache)})
    assert result.exit_code == 0, result.output
    after = sorted(str(p.relative_to(small_home)) for p in small_home.rglob("*"))
    assert after == before
    assert "read-only" in result.stdout
    assert list((cache / "runq" / "demo-index").glob("*.db"))
