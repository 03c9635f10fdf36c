"""A large first build finds event files but leaves reading them to the first
command whose selection uses scalars: what that command sees, and what the
index then holds, is what a build that read them at once holds."""

import json
import sqlite3

import pytest

from runq.engine import indexer, rundir
from runq.engine.home import GuildHome
from runq.engine.indexer import Index
from test_cli import make_home, runq
from test_indexer import settle


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("deferred")
    make_home(root, runs=70, seed=11, deleted_fraction=0.4)
    settle()
    return root


@pytest.fixture
def deferring(monkeypatch):
    monkeypatch.setattr(indexer, "LARGE_BUILD_RUNS", 1)


def build(home, path, workers=None):
    index = Index(GuildHome(home), path, owned=False)
    index.refresh(workers=workers)
    return index


def scalars_by_run(index):
    return sorted(index.conn.execute(
        "SELECT r.id, s.prefix, s.tag, s.preferred, s.first_val, s.first_step, s.last_val, s.last_step, s.min_val,"
        " s.min_step, s.max_val, s.max_step, s.avg_val, s.total, s.count, s.last_folded"
        " FROM scalars AS s JOIN runs AS r ON r.key = s.run_key"
    ).fetchall(), key=repr)


def pending_runs(index_path):
    with sqlite3.connect(index_path) as conn:
        return conn.execute("SELECT COUNT(*) FROM runs WHERE scalars_pending IS NOT NULL").fetchone()[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_pending_scalars_read_later_are_those_read_at_once(home, tmp_path, deferring, workers):
    indexer.LARGE_BUILD_RUNS = 71  # the home has 70 runs: read at once
    whole = build(home, tmp_path / "whole.db", workers)
    assert pending_runs(tmp_path / "whole.db") == 0
    indexer.LARGE_BUILD_RUNS = 70
    deferred = build(home, tmp_path / "deferred.db", workers)
    assert scalars_by_run(whole) and not scalars_by_run(deferred)
    assert pending_runs(tmp_path / "deferred.db") > 0
    assert deferred.read_pending_scalars(workers) > 0
    assert scalars_by_run(deferred) == scalars_by_run(whole)
    assert pending_runs(tmp_path / "deferred.db") == 0
    kept = "SELECT id, problems, watched, signature FROM runs ORDER BY id"  # event files now watched too
    assert deferred.conn.execute(kept).fetchall() == whole.conn.execute(kept).fetchall()
    assert deferred.read_pending_scalars() == 0


def test_a_refresh_keeps_pending_scalars_pending_and_reads_no_run_again(home, tmp_path, deferring):
    index = build(home, tmp_path / "index.db")
    pending = pending_runs(tmp_path / "index.db")
    report = index.refresh()
    assert (report.added, report.updated) == (0, 0)
    assert pending_runs(tmp_path / "index.db") == pending
    index.read_pending_scalars()
    report = index.refresh()
    assert (report.added, report.updated) == (0, 0)
    assert pending_runs(tmp_path / "index.db") == 0


def test_a_re_check_without_events_keeps_them_pending(home, tmp_path, deferring):
    index = build(home, tmp_path / "index.db")
    run_ids = [row[0] for row in index.conn.execute("SELECT id FROM runs WHERE scalars_pending IS NOT NULL")]
    index.recheck(run_ids, events=False)
    assert pending_runs(tmp_path / "index.db") == len(run_ids)


SCALAR_SELECTIONS = [
    ["-F", "loss < 0.5"],
    ["-F", "scalar:loss > 0.1 or acc >= 0.5"],
    ["-F", "loss is undefined"],
]


@pytest.mark.parametrize("selection", SCALAR_SELECTIONS)
def test_a_selection_using_scalars_sees_them_all(home, tmp_path, deferring, selection):
    indexer.LARGE_BUILD_RUNS = 10**9
    listing = ["runs", "list", "-a", "--deleted", "--json", *selection]
    expected = runq(home, "--index", str(tmp_path / "whole.db"), *listing)
    indexer.LARGE_BUILD_RUNS = 1
    index_path = tmp_path / "deferred.db"
    listed = runq(home, "--index", str(index_path), "runs", "list", "-a", "--json", "-Fo", "train")
    assert listed.exit_code == 0, listed.stderr
    assert pending_runs(index_path) > 0  # a selection without scalars leaves them unread
    got = runq(home, "--index", str(index_path), *listing)
    assert got.exit_code == 0 and expected.exit_code == 0, got.stderr + expected.stderr
    assert json.loads(got.stdout) == json.loads(expected.stdout)
    assert pending_runs(index_path) == 0


def test_sql_reads_pending_scalars_first(home, tmp_path, deferring):
    query = "SELECT COUNT(*), SUM(count) FROM scalars"
    indexer.LARGE_BUILD_RUNS = 10**9
    expected = runq(home, "--index", str(tmp_path / "whole.db"), "sql", query, "--json")
    indexer.LARGE_BUILD_RUNS = 1
    runq(home, "--index", str(tmp_path / "deferred.db"), "index")
    assert pending_runs(tmp_path / "deferred.db") > 0
    got = runq(home, "--index", str(tmp_path / "deferred.db"), "sql", query, "--json")
    assert got.exit_code == 0, got.stderr
    assert got.stdout == expected.stdout


def _scalar(index, run_id, tag):
    return index.conn.execute(
        "SELECT s.last_val FROM scalars AS s JOIN runs AS r ON r.key = s.run_key WHERE r.id = ? AND s.tag = ?",
        (run_id, tag),
    ).fetchall()


def _small_home_built(tmp_path):
    """(home, its index after a large first build, a run left unsearched, one of its event files)."""
    root = tmp_path / "home"
    make_home(root, runs=12, seed=3)
    settle()
    index = build(root, tmp_path / "index.db")
    return (root, index, *_unsearched_run_with_events(index, root))


def _unsearched_run_with_events(index, root):
    """(id, an event file) of a finished live run whose directories a large build left unsearched."""
    for run_id, pending in index.conn.execute("SELECT id, scalars_pending FROM runs WHERE deleted = 0 ORDER BY id"):
        found = rundir.list_event_files(str(root / "runs" / run_id), [])
        if pending == rundir.UNSEARCHED and found:
            return run_id, root / "runs" / run_id / found[0]
    raise AssertionError("no such run")


def test_event_files_of_a_run_still_in_progress_are_found_and_watched_at_once(home, tmp_path, deferring):
    index = build(home, tmp_path / "index.db")
    rows = index.conn.execute("SELECT status, pid, scalars_pending, watched FROM runs").fetchall()
    unfinished = [row for row in rows if row[0] not in rundir.FINISHED or row[1] is not None]
    assert unfinished and all(row[2] != rundir.UNSEARCHED for row in unfinished)
    for _status, _pid, pending, watched in unfinished:
        assert set((pending or "").split("\n")) - {""} <= set(watched.split("\n"))
    finished = [row for row in rows if row not in unfinished]
    assert finished and all(row[2] == rundir.UNSEARCHED for row in finished)


def test_a_finished_run_s_event_files_are_read_as_they_are_when_scalars_are_first_read(tmp_path, deferring):
    _, index, run_id, event_file = _small_home_built(tmp_path)
    from runq.engine import tfevents

    tfevents.append_events(event_file, [("fresh_tag", 123.0, 10**6)])
    settle()
    assert index.refresh().updated == 0  # not watched before it is searched: nothing was read from it
    index.read_pending_scalars()
    assert _scalar(index, run_id, "fresh_tag") == [(123.0,)]
    tfevents.append_events(event_file, [("fresh_tag", 456.0, 10**6 + 1)])  # watched now
    settle()
    assert index.refresh().updated == 1
    assert _scalar(index, run_id, "fresh_tag") == [(456.0,)]


def test_a_run_changed_before_its_scalars_are_read_is_read_whole_by_the_next_refresh(tmp_path, deferring):
    root, index, run_id, _ = _small_home_built(tmp_path)
    (root / "runs" / run_id / ".guild" / "attrs" / "label").write_text("changed meanwhile\n")
    settle()
    index.read_pending_scalars()  # no refresh between: the run's signature no longer holds
    assert index.conn.execute("SELECT signature FROM runs WHERE id = ?", (run_id,)).fetchone() == (None,)
    assert index.refresh().updated == 1
    assert index.conn.execute("SELECT label, signature IS NOT NULL FROM runs WHERE id = ?", (run_id,)).fetchone() == (
        "changed meanwhile", 1)


def test_listing_events_finds_the_files_a_whole_read_reads(home):
    for run_dir in sorted((home / "runs").iterdir())[:20]:
        whole = rundir.read_run(str(run_dir), run_dir.name, False)
        listed = rundir.read_run(str(run_dir), run_dir.name, False, events=rundir.LIST_EVENTS)
        assert listed.scalars == []
        if whole.scalars:
            rows, _, _ = rundir.read_pending_scalars(str(run_dir), listed.run["scalars_pending"])
            assert repr(rows) == repr(whole.scalars)  # NaNs compare by repr


def index_names(index):
    query = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    return sorted(row[0] for row in index.conn.execute(query))


def test_a_large_first_build_ends_with_the_schemas_indexes_and_cache(home, tmp_path, deferring):
    index = build(home, tmp_path / "index.db")
    assert index_names(index) == sorted(indexer.secondary_indexes())
    assert index.conn.execute("PRAGMA cache_size").fetchone() == (-indexer.CACHE_KIB,)
    assert index.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_an_interrupted_large_first_build_leaves_the_empty_index_as_it_was(home, tmp_path, deferring):
    index = Index(GuildHome(home), tmp_path / "index.db", owned=False)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        index.refresh(progress=interrupt)
    assert index.counts() == (0, 0)
    assert index_names(index) == sorted(indexer.secondary_indexes())
    assert index.conn.execute("PRAGMA cache_size").fetchone() == (-indexer.CACHE_KIB,)
    index.refresh()
    assert sum(index.counts()) == 70


def test_the_python_apis_sql_reads_pending_scalars_first(home, tmp_path, deferring):
    import runq as runq_api

    query = "SELECT COUNT(*), SUM(count) FROM scalars"
    indexer.LARGE_BUILD_RUNS = 10**9
    with runq_api.open(home, tmp_path / "whole.db") as whole:
        expected = whole.sql(query).rows
    indexer.LARGE_BUILD_RUNS = 1
    with runq_api.open(home, tmp_path / "deferred.db") as deferred:
        assert pending_runs(tmp_path / "deferred.db") > 0
        assert deferred.sql(query).rows == expected


def meta_pending(index_path):
    with sqlite3.connect(index_path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'scalars_pending'").fetchone()
    return row and row[0]


def test_the_index_notes_whether_event_files_wait(home, tmp_path, deferring):
    """A note in meta spares selections looking through every run for pending event files."""
    index = build(home, tmp_path / "index.db")
    assert meta_pending(tmp_path / "index.db") == "some"
    index.read_pending_scalars()
    assert meta_pending(tmp_path / "index.db") == "none" and pending_runs(tmp_path / "index.db") == 0
    indexer.LARGE_BUILD_RUNS = 71
    build(home, tmp_path / "whole.db")
    assert meta_pending(tmp_path / "whole.db") == "none"


def test_an_index_without_the_note_is_looked_through(home, tmp_path, deferring):
    """An index written before the note: pending event files are still read, and the note is made."""
    index = build(home, tmp_path / "index.db")
    index.conn.execute("DELETE FROM meta WHERE key = 'scalars_pending'")
    assert index.read_pending_scalars() > 0 and pending_runs(tmp_path / "index.db") == 0
    index.conn.execute("DELETE FROM meta WHERE key = 'scalars_pending'")
    index.refresh()
    assert meta_pending(tmp_path / "index.db") == "none"
    other = build(home, tmp_path / "other.db")
    other.conn.execute("DELETE FROM meta WHERE key = 'scalars_pending'")
    other.refresh()
    assert meta_pending(tmp_path / "other.db") == "some" and other.read_pending_scalars() > 0
