"""A home's index in PostgreSQL (`--index postgresql://...`), on a real
server (tests/pgserver.py) with real homes and the real CLI: the rows a
refresh stores are the SQLite index's, homes sharing a database never see
each other's runs, refreshes of one home are serialized and of two homes
are not, purge/delete/restore keep their promises, and a bad URL or
server is one line."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runq.commands.app import app
from runq.engine.home import GuildHome
from runq.engine.pgindex import PgIndex, Target
from runq.engine.samplehome import HomeSpec, generate_home

pytestmark = pytest.mark.usefixtures("postgres")

NOW = datetime(2026, 11, 29, 12, 0, 0)
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
TABLES = {  # table -> its key, to compare rows in one order
    "runs": "id",
    "attrs": "run_key, name",
    "flags": "run_key, name",
    "scalars": "run_key, tag, prefix",
    "tags": "run_key, tag",
    "comments": "run_key, seq",
    "attr_names": "name",
    "flag_names": "name",
}


def make_home(root, runs=40, seed=1):
    generate_home(root, HomeSpec(runs=runs, seed=seed, profile="fidelity", sourcecode_files=1), NOW)
    return root


def runq(home, index, *args, input=None):
    return CliRunner().invoke(app, ["-H", str(home), "--index", index, "--now", NOW.isoformat(), *args], input=input)


def runq_process(home, index, *args, env=None):
    return subprocess.run([str(RUNQ_SCRIPT), "-H", str(home), "--index", index, *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def copy_home(source, dest):
    shutil.copytree(source, dest, symlinks=True, ignore=lambda d, names: ["cache"] if d == str(source) else [])
    return dest


def open_pg(home, url):
    return PgIndex(GuildHome(Path(home), "given"), Target(url))


def _comparable(value):
    if isinstance(value, Decimal):  # numeric `num`: ints stay ints
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def pg_rows(home, url, table):
    index = open_pg(home, url)
    try:
        rows = index.conn.execute(f"SELECT * FROM {table} ORDER BY {TABLES[table]}").fetchall()
    finally:
        index.close()
    return [tuple(map(_comparable, row)) for row in rows]


def sqlite_rows(home, table):
    conn = sqlite3.connect(Path(home, "cache", "runq", "index.db"))
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY {TABLES[table]}").fetchall()
    finally:
        conn.close()


def listed(home, index, *args):
    result = runq(home, index, "runs", "list", "-a", "--json", *args)
    assert result.exit_code == 0, result.output
    return [run["id"] for run in json.loads(result.stdout)]


def on_disk(home, deleted):
    root = Path(home, "trash", "runs") if deleted else Path(home, "runs")
    return sorted(os.listdir(root)) if root.is_dir() else []


def indexed(home, url, deleted):
    index = open_pg(home, url)
    try:
        return sorted(row[0] for row in index.conn.execute("SELECT id FROM runs WHERE deleted = ?", (deleted,)))
    finally:
        index.close()


# What a refresh stores


def test_a_refresh_stores_the_rows_the_sqlite_index_holds(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=60)
    time.sleep(0.1)  # past the racy window: both indexes sign every run at their first read
    assert CliRunner().invoke(app, ["-H", str(home), "index"]).exit_code == 0  # the SQLite index in the home
    result = runq(home, pg_url, "index")
    assert result.exit_code == 0, result.output
    for table in TABLES:
        pg, lite = pg_rows(home, pg_url, table), sqlite_rows(home, table)
        assert [p for p, q in zip(pg, lite) if p != q] == [] and len(pg) == len(lite), table


def test_a_refresh_follows_changes_incrementally(tmp_path, pg_url):
    home = make_home(tmp_path / "home")
    assert runq(home, pg_url, "index").exit_code == 0
    assert CliRunner().invoke(app, ["-H", str(home), "index"]).exit_code == 0  # both follow the same changes
    victim = on_disk(home, False)[0]
    shutil.move(str(home / "runs" / victim), str(home / "trash" / "runs" / victim))
    gone = on_disk(home, True)[0]
    shutil.rmtree(home / "trash" / "runs" / gone)
    label = home / "runs" / on_disk(home, False)[0] / ".guild" / "attrs" / "label"
    label.write_text("relabelled\n")
    time.sleep(0.1)  # past the racy window, so that both indexes sign the relabelled run at once
    index = open_pg(home, pg_url)
    try:
        report = index.refresh()
    finally:
        index.close()
    assert (report.moved, report.removed, report.updated) == (1, 1, 1)
    assert indexed(home, pg_url, 0) == on_disk(home, False)
    assert indexed(home, pg_url, 1) == on_disk(home, True)
    assert CliRunner().invoke(app, ["-H", str(home), "index"]).exit_code == 0
    for table in TABLES:
        pg, lite = pg_rows(home, pg_url, table), sqlite_rows(home, table)
        assert [p for p, q in zip(pg, lite) if p != q] == [] and len(pg) == len(lite), table


def test_a_refreshed_index_knows_its_home_so_no_refresh_means_none(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=6)
    assert runq(home, pg_url, "index").exit_code == 0
    index = open_pg(home, pg_url)
    try:
        assert not index.home_changed  # else every command would check every run
    finally:
        index.close()
    (home / "runs" / on_disk(home, False)[0] / ".guild" / "attrs" / "label").write_text("unseen\n")
    assert "unseen" not in runq(home, pg_url, "--no-refresh", "runs", "list", "-a").stdout
    assert "unseen" in runq(home, pg_url, "runs", "list", "-a").stdout


def test_runq_index_shows_the_backend_the_home_and_counts(tmp_path, pg_url):
    home = make_home(tmp_path / "home")
    result = runq(home, f"{pg_url}?home=lab", "index")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["Backend"].strip() == "PostgreSQL"
    assert lines["Home id"].strip().startswith("1 (lab), views in schema runq_home_1")
    assert int(lines["Runs"]) == len(on_disk(home, False))
    assert int(lines["Deleted runs"]) == len(on_disk(home, True))
    assert "runq-test-password" not in result.stdout and ":***@" in lines["Index"]


def test_rebuild_reads_every_run_again_and_drop_forgets_the_home(tmp_path, pg_url):
    home = make_home(tmp_path / "home")
    assert runq(home, pg_url, "index").exit_code == 0
    rebuilt = runq(home, pg_url, "index", "--rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert indexed(home, pg_url, 0) == on_disk(home, False)
    dropped = runq(home, pg_url, "index", "--drop")
    assert dropped.exit_code == 0, dropped.output
    other = make_home(tmp_path / "other", runs=4, seed=2)
    result = runq(other, pg_url, "sql", "SELECT h.path, COUNT(r.id) FROM homes AS h LEFT JOIN runs AS r"
                  " ON r.home = h.id GROUP BY 1")
    assert result.exit_code == 0, result.output
    assert str(home) not in result.stdout and str(other) in result.stdout


# Homes sharing one database


def test_two_homes_with_the_same_runs_keep_apart(tmp_path, pg_url):
    first = make_home(tmp_path / "first")
    second = copy_home(first, tmp_path / "second")  # the same run ids
    shutil.rmtree(second / "runs" / on_disk(second, False)[0])
    assert runq(first, pg_url, "index").exit_code == 0
    assert runq(second, f"{pg_url}?home=second", "index").exit_code == 0
    assert indexed(first, pg_url, 0) == on_disk(first, False)
    assert indexed(second, f"{pg_url}?home=second", 0) == on_disk(second, False)
    result = runq(first, pg_url, "sql", "--json", "SELECT home, COUNT(*) AS n FROM runs GROUP BY home ORDER BY home")
    counts = [row["n"] for row in json.loads(result.stdout)]
    total = len(on_disk(first, False)) + len(on_disk(first, True))
    assert counts == [total, total - 1]


def test_a_home_name_is_kept_and_another_name_for_it_is_refused(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=4)
    assert runq(home, f"{pg_url}?home=lab", "index").exit_code == 0
    assert runq(home, pg_url, "index").stdout.count("(lab)") == 1  # the same host and path: the same home
    refused = runq(home, f"{pg_url}?home=other", "index")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("runq: ") and "registered as the home 'lab'" in refused.stderr


# Refreshing at once


def test_processes_building_two_homes_at_once_each_get_their_home_whole(tmp_path, pg_url):
    homes = [make_home(tmp_path / "first", runs=120), make_home(tmp_path / "second", runs=120, seed=2)]
    starts = [homes[0], homes[1], homes[0], homes[1]]  # one home twice at once: serialized, not duplicated
    procs = [subprocess.Popen([str(RUNQ_SCRIPT), "-H", str(home), "--index", pg_url, "index"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for home in starts]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for home in homes:
        assert indexed(home, pg_url, 0) == on_disk(home, False)
        assert indexed(home, pg_url, 1) == on_disk(home, True)


def test_a_home_being_written_blocks_only_itself(tmp_path, pg_url):
    busy, free = make_home(tmp_path / "busy", runs=6), make_home(tmp_path / "free", runs=6, seed=2)
    writer = open_pg(busy, pg_url)
    try:
        writer.conn.execute("BEGIN IMMEDIATE")  # what a refresh or a purge of `busy` holds
        other = runq_process(free, pg_url, "--lock-timeout", "5", "index")
        assert other.returncode == 0, other.stderr
        waited = runq_process(busy, pg_url, "--lock-timeout", "1", "index")
        writer.conn.execute("ROLLBACK")
    finally:
        writer.close()
    assert waited.returncode == 1
    lines = waited.stderr.splitlines()
    assert lines[0].startswith("runq: waiting for another runq process")
    assert lines[-1].startswith("runq: gave up after 1 s") and "Traceback" not in waited.stderr
    assert "runq-test-password" not in waited.stderr


# runq sql


def test_runq_sql_reads_every_home_and_refuses_writes(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=6)
    result = runq(home, pg_url, "sql", "SELECT h.name, r.home, COUNT(*) FROM runs AS r JOIN homes AS h"
                  " ON h.id = r.home WHERE r.deleted = :d GROUP BY 1, 2", "-p", "d=0")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].split() == ["NULL", "1", str(len(on_disk(home, False)))]
    for sql in ("DELETE FROM runs", "UPDATE runq.runs SET label = 'x'", "CREATE TABLE t (x int)"):
        refused = runq(home, pg_url, "sql", sql)
        assert refused.exit_code == 1, sql
        assert refused.stderr.startswith("runq: SQL error: cannot execute") and "read-only" in refused.stderr
    assert len(indexed(home, pg_url, 0)) == len(on_disk(home, False))


def test_runq_sql_on_postgresql_stops_at_its_timeout(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=2)
    result = runq(home, pg_url, "sql", "--timeout", "0.2", "SELECT pg_sleep(5)")
    assert result.exit_code == 1
    assert result.stderr.startswith("runq: query timed out after 0.2 s")


def test_sql_parameters_keep_percent_signs_and_casts(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=2)
    result = runq(home, pg_url, "sql", "--json",
                  "SELECT :p1 AS p, '50%' AS pct, '1'::int AS n, ':p1' AS literal -- :p1 in a comment\n",
                  "-p", "p1=x%y")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"p": "x%y", "pct": "50%", "n": 1, "literal": ":p1"}]


# Bad URLs and servers: one line, no traceback, no password


def _bad_urls(postgres):
    closed = f"postgresql://runq:secret-pw@127.0.0.1:{_closed_port()}/runq"
    return {
        "closed port": (closed, "Connection refused"),
        "wrong password": (postgres.url(password="secret-pw"), "password authentication failed"),
        "missing database": (postgres.url(database="nosuchdb"), 'database "nosuchdb" does not exist'),
        "bad port": ("postgresql://runq:secret-pw@127.0.0.1:port/runq", "bad PostgreSQL URL"),
        "bad option": (f"postgresql://runq:secret-pw@127.0.0.1:{postgres.port}/runq?nosuch=1", "nosuch"),
        "empty home name": (f"postgresql://runq:secret-pw@127.0.0.1:{postgres.port}/runq?home=", "empty home"),
    }


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the test connects


@pytest.mark.parametrize("case", ["closed port", "wrong password", "missing database", "bad port", "bad option",
                                  "empty home name"])
def test_a_bad_url_or_server_is_one_line(tmp_path, postgres, case):
    url, expected = _bad_urls(postgres)[case]
    home = make_home(tmp_path / "home", runs=2)
    by_environment = case in ("wrong password", "bad option", "missing database")  # RUNQ_INDEX, else --index
    env = {"RUNQ_INDEX": url} if by_environment else {}
    args = ("runs", "list") if by_environment else ("--index", url, "runs", "list")
    proc = subprocess.run([str(RUNQ_SCRIPT), "-H", str(home), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("runq: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr
    assert "secret-pw" not in proc.stderr and "runq-test-password" not in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (home / "cache" / "runq").exists()  # no SQLite index made on the side


def test_without_psycopg_a_postgresql_index_says_what_to_install(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=2)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "psycopg.py").write_text("raise ImportError('psycopg is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocked)}
    proc = subprocess.run([str(RUNQ_SCRIPT), "-H", str(home), "--index", pg_url, "runs", "list"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert proc.stderr == "runq: an index in PostgreSQL needs psycopg (pip install 'runq[postgres]')\n"


# Purge, delete and restore


STEPS = [  # what a user does, in order; each as the SQLite index and the PostgreSQL index do it
    ("runs", "list", "-a"),
    ("runs", "list", "-a", "--deleted", "-F", "lr >= 0.001", "-v"),
    ("runs", "delete", "-y", "-Fo", "train", "1:3"),
    ("runs", "restore", "-y", "2"),
    ("runs", "purge", "-y", "-Se", "1:4"),
    ("runs", "delete", "-y", "--permanent", "-Fl", "-", "1"),
    ("runs", "purge", "--dry-run", "--json"),
    ("runs", "list", "-a", "--json"),
    ("runs", "list", "-a", "-c"),
    ("runs", "list", "-a", "--deleted", "-Sc"),
]


def test_list_delete_restore_purge_agree_with_the_sqlite_index(tmp_path, pg_url):
    lite = make_home(tmp_path / "lite", runs=40)
    pg = copy_home(lite, tmp_path / "pg")
    for step in STEPS:
        expected = CliRunner().invoke(app, ["-H", str(lite), "--now", NOW.isoformat(), *step])
        got = runq(pg, pg_url, *step)
        assert got.exit_code == expected.exit_code == 0, (step, got.output, expected.output)
        assert got.stdout.replace(str(pg), str(lite)) == expected.stdout, step
        for deleted in (0, 1):
            assert on_disk(pg, deleted) == on_disk(lite, deleted), step
    assert indexed(pg, pg_url, 0) == on_disk(pg, False) and indexed(pg, pg_url, 1) == on_disk(pg, True)


def test_purging_one_home_never_touches_another_with_the_same_runs(tmp_path, pg_url):
    first = make_home(tmp_path / "first")
    second = copy_home(first, tmp_path / "second")
    second_url = f"{pg_url}?home=second"
    assert runq(second, second_url, "index").exit_code == 0
    before = listed(second, second_url, "--deleted")
    purged = runq(first, pg_url, "runs", "purge", "-y")
    assert purged.exit_code == 0, purged.output
    assert on_disk(first, True) == [] and indexed(first, pg_url, 1) == []
    assert sorted(listed(second, second_url, "--deleted")) == sorted(before) == on_disk(second, True)
    assert indexed(second, second_url, 1) == on_disk(second, True) != []
    deleted = runq(second, second_url, "runs", "delete", "-y", "1:2")
    assert deleted.exit_code == 0, deleted.output
    assert indexed(first, pg_url, 0) == on_disk(first, False)
    assert len(indexed(first, pg_url, 0)) == len(indexed(second, second_url, 0)) + 2


KILLS = [  # (command after `runs`, kill point): the SQLite index's kill points, on PostgreSQL
    (("purge", "-y"), "moved#2"),
    (("purge", "-y"), "before-commit"),
    (("purge", "-y"), "committed"),
    (("purge", "-y", "--background"), "background-started"),
    (("delete", "-y"), "before-commit"),
    (("restore", "-y"), "before-commit"),
]


def test_a_command_killed_midway_is_finished_and_the_index_agrees_with_the_disk(tmp_path, pg_url):
    home = make_home(tmp_path / "home", runs=40)
    assert runq(home, pg_url, "index").exit_code == 0
    for argv, kill_at in KILLS:
        deleted = argv[0] in ("purge", "restore")
        chosen = on_disk(home, deleted)[:3]
        others = {False: set(on_disk(home, False)) - set(chosen), True: set(on_disk(home, True)) - set(chosen)}
        killed = runq_process(home, pg_url, "runs", *argv, *chosen, env={"RUNQ_TEST_KILL_AT": kill_at})
        assert killed.returncode == -9, (kill_at, killed.stderr)
        assert runq_process(home, pg_url, "runs", "list").returncode == 0  # the next command finishes the job
        _wait_for_unlinking(home, pg_url)
        assert indexed(home, pg_url, 0) == on_disk(home, False), (argv, kill_at)
        assert indexed(home, pg_url, 1) == on_disk(home, True), (argv, kill_at)
        for where in (False, True):  # no run outside the selection moved
            assert others[where] <= set(on_disk(home, where)), (argv, kill_at)


def _wait_for_unlinking(home, url):
    """A detached unlinker killed or still at work: the next commands finish its batch."""
    deadline = time.monotonic() + 30
    while (home / "trash" / "runq-purging").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
        runq_process(home, url, "runs", "list")
    assert not (home / "trash" / "runq-purging").exists()


def test_a_role_that_may_not_create_schemas_is_one_line(tmp_path, postgres, pg_url):
    database = pg_url.rsplit("/", 1)[1]
    postgres.psql("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'", database=database) \
        if not postgres.psql("SELECT 1 FROM pg_roles WHERE rolname = 'reader'", database=database).strip() else None
    url = f"postgresql://reader:reader-pw@127.0.0.1:{postgres.port}/{database}"
    home = make_home(tmp_path / "home", runs=2)
    result = runq(home, url, "runs", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("runq: cannot set up the index in postgresql://reader:***@")
    assert "permission denied" in result.stderr and "reader-pw" not in result.stderr


def test_ctrl_c_stops_runq_sql_on_postgresql(tmp_path, pg_url):
    import signal

    home = make_home(tmp_path / "home", runs=2)
    assert runq(home, pg_url, "index").exit_code == 0
    proc = subprocess.Popen([str(RUNQ_SCRIPT), "-H", str(home), "--index", pg_url, "sql", "SELECT pg_sleep(60)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    index = open_pg(home, pg_url)
    try:
        deadline = time.monotonic() + 30
        while not index.conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
                                     " AND state = 'active'").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        index.close()
    assert proc.returncode == 130
    assert err == "runq: interrupted\n"


def test_the_python_api_opens_a_postgresql_index(tmp_path, pg_url):
    import runq

    home = make_home(tmp_path / "home", runs=20)
    with runq.open(str(home), index=f"{pg_url}?home=api") as index:
        deleted = index.select(deleted=True)
        assert sorted(run.id for run in deleted) == on_disk(home, True)
        counts = index.sql("SELECT h.name, COUNT(*) FROM runs AS r JOIN homes AS h ON h.id = r.home"
                           " WHERE r.deleted = ? GROUP BY 1", [1]).rows
        assert counts == [("api", len(deleted))]
        chosen = index.select("1:2", deleted=True)
        outcome = index.purge(chosen)
        assert sorted(outcome.done) == sorted(run.id for run in chosen)
    assert indexed(home, f"{pg_url}?home=api", 1) == on_disk(home, True)


def test_a_large_first_build_leaves_event_files_to_the_first_scalar_selection(tmp_path, pg_url, monkeypatch):
    from runq.engine import indexer

    home = make_home(tmp_path / "home")
    monkeypatch.setattr(indexer, "LARGE_BUILD_RUNS", 1)  # every first build is a large one
    assert runq(home, pg_url, "index").exit_code == 0
    assert pending_runs(home, pg_url) > 0 and pg_rows(home, pg_url, "scalars") == []
    monkeypatch.setattr(indexer, "LARGE_BUILD_RUNS", 10**9)
    assert runq(home, str(tmp_path / "whole.db"), "index").exit_code == 0
    scalar_filter = ("-F", "loss < 0.5")
    assert listed(home, pg_url, *scalar_filter) == listed(home, str(tmp_path / "whole.db"), *scalar_filter)
    assert pending_runs(home, pg_url) == 0 and len(pg_rows(home, pg_url, "scalars")) > 0


def pending_runs(home, url):
    index = open_pg(home, url)
    try:
        return index.conn.execute("SELECT COUNT(*) FROM runs WHERE scalars_pending IS NOT NULL").fetchone()[0]
    finally:
        index.close()
