"""The indexer on real generated run directories: a cold build reads what was
written, and refreshes re-read exactly what changed."""

import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime

import pytest

from runq.engine import indexer, rundir
from runq.engine.home import GuildHome
from runq.engine.indexer import Index
from runq.engine.samplehome import HomeSpec, generate_home, mutate_home

NOW = datetime(2026, 11, 29, 12, 0, 0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexer") / "home"
    manifest = generate_home(root, HomeSpec(runs=120, profile="fidelity", seed=5), NOW)
    index = Index(GuildHome(root))
    settle()
    report = index.refresh()
    return manifest, index, report


@pytest.fixture
def fresh(tmp_path):
    """A small home of its own, indexed, for tests that change the disk."""
    root = tmp_path / "home"
    manifest = generate_home(root, HomeSpec(runs=40, profile="fidelity", seed=9), NOW)
    index = Index(GuildHome(root))
    settle()
    index.refresh()
    return manifest, index


def settle():
    """Waits until files just written are older than the window in which a
    refresh reads them again (a write may race the read that saw them)."""
    time.sleep(rundir.RACY_WINDOW_NS / 1e9)


def rows(index, sql, *params):
    return index.conn.execute(sql, params).fetchall()


def test_cold_build_indexes_every_run(built):
    manifest, index, report = built
    assert report.added == len(manifest.runs)
    assert index.counts() == (len(manifest.live), len(manifest.deleted))


def test_runs_table_matches_what_was_written(built):
    manifest, index, _ = built
    indexed = {r[0]: r[1:] for r in rows(index, "SELECT id, deleted, operation, status, started, initialized, stopped, exit_status, timestamp FROM runs")}
    for run in manifest.runs:
        deleted, operation, status, started, initialized, stopped, exit_status, timestamp = indexed[run.id]
        assert (deleted, operation, status) == (int(run.deleted), run.operation, run.status), run.id
        assert (started, initialized, stopped) == (run.started, run.initialized, run.stopped), run.id
        assert exit_status == run.exit_status and timestamp == run.sort_timestamp, run.id


def test_user_fields_match(built):
    manifest, index, _ = built
    indexed = {r[0]: r[1:] for r in rows(index, "SELECT id, label, marked, sourcecode_digest FROM runs")}
    tags = {}
    for run_id, tag in rows(index, "SELECT r.id, t.tag FROM tags t JOIN runs r ON r.key = t.run_key"):
        tags.setdefault(run_id, set()).add(tag)
    for run in manifest.runs:
        label, marked, digest = indexed[run.id]
        assert label == (None if run.label is None else str(run.label)), run.id
        assert marked == int(bool(run.marked)) and digest == run.sourcecode_digest, run.id
        assert tags.get(run.id, set()) == {t for t in run.tags or [] if isinstance(t, str)}, run.id


def test_flags_keep_their_kind(built):
    manifest, index, _ = built
    stored = {(r[0], r[1]): r[2:] for r in rows(index, "SELECT r.id, f.name, f.kind, f.num, f.str FROM flags f JOIN runs r ON r.key = f.run_key")}
    checked = 0
    for run in manifest.runs:
        for name, value in run.flags.items():
            kind, num, text = stored[(run.id, name)]
            expected_kind = {bool: "bool", int: "int", float: "float", str: "str", list: "list", type(None): "null"}[type(value)]
            assert kind == expected_kind, (run.id, name)
            if expected_kind in ("bool", "int", "float") and not (isinstance(value, float) and math.isnan(value)):
                assert num == value
            if expected_kind == "str":
                assert text == value
            checked += 1
    assert checked > 500


def test_scalars_last_values_per_prefix(built):
    manifest, index, _ = built
    stored = {(r[0], r[1], r[2]): r[3] for r in rows(index, "SELECT r.id, s.prefix, s.tag, s.last_val FROM scalars s JOIN runs r ON r.key = s.run_key")}
    checked = 0
    for run in manifest.runs:
        for (prefix, tag), value in run.scalars.items():
            last = stored[(run.id, prefix, tag)]
            if isinstance(value, float) and math.isnan(value):
                assert last is None
            else:
                assert last == pytest.approx(value, rel=1e-6), (run.id, prefix, tag)
            checked += 1
    assert checked > 100


def test_preferred_scalar_prefix_is_the_least(built):
    _, index, _ = built
    for run_id, tag, prefixes, preferred in rows(
        index,
        "SELECT run_key, tag, group_concat(prefix, '|'), max(CASE WHEN preferred THEN prefix END)"
        " FROM scalars GROUP BY run_key, tag HAVING count(*) > 1",
    ):
        assert preferred == min(prefixes.split("|")), (run_id, tag)


def test_large_attributes_stay_raw_until_named(built):
    _, index, _ = built
    kinds = {r[0] for r in rows(index, "SELECT kind FROM attrs WHERE name = 'pip_freeze'")}
    assert kinds == {"raw"}


@pytest.mark.parametrize("name", ["host", "cmd", "user_flags"])
def test_raw_attributes_read_by_forked_readers_are_those_read_here(fresh, tmp_path, monkeypatch, name):
    manifest, index = fresh
    other = Index(GuildHome(manifest.root), tmp_path / "other.db", owned=False)
    other.refresh()
    raw = "SELECT run_key FROM attrs WHERE name = ? AND kind = 'raw' ORDER BY run_key"
    assert rows(index, raw, name) and rows(other, raw, name) == rows(index, raw, name)
    index.decode_lazy({name}, workers=1)
    monkeypatch.setattr(indexer, "PARALLEL_MIN_RUNS", 1)
    monkeypatch.setattr(indexer, "CHUNK_RUNS", 5)
    pools, real_pool = [], indexer._ReaderPool
    monkeypatch.setattr(indexer, "_ReaderPool", lambda *args: pools.append(args) or real_pool(*args))
    other.decode_lazy({name}, workers=2)
    assert pools  # read by forked readers
    assert rows(index, raw, name) == [] and rows(other, raw, name) == []
    decoded = "SELECT * FROM attrs WHERE name = ? ORDER BY run_key"
    assert rows(other, decoded, name) == rows(index, decoded, name)
    other.close()


def test_raw_attributes_decoded_by_another_process_meanwhile_are_left_as_it_wrote_them(fresh, monkeypatch):
    """Between finding raw rows and taking the write lock, another process
    may decode them (or read their runs again): the rows are found again
    under the lock."""
    _, index = fresh
    real_execute = indexer._WaitingConnection.execute

    def execute(conn, sql, *args):
        if sql == "BEGIN IMMEDIATE":
            other = sqlite3.connect(index.path, isolation_level=None)
            other.execute("UPDATE attrs SET kind = 'str', str = 'elsewhere' WHERE name = 'host'")
            other.close()
        return real_execute(conn, sql, *args)

    monkeypatch.setattr(indexer._WaitingConnection, "execute", execute)
    index.decode_lazy({"host"})
    assert {row for row in rows(index, "SELECT kind, str FROM attrs WHERE name = 'host'")} == {("str", "elsewhere")}


def test_wal_mode(built):
    _, index, _ = built
    assert rows(index, "PRAGMA journal_mode")[0][0] == "wal"


def test_nothing_changed_means_nothing_read(built):
    _, index, _ = built
    report = index.refresh()
    assert (report.added, report.updated, report.removed, report.moved) == (0, 0, 0, 0)


def test_mutations_are_re_read(fresh):
    manifest, index = fresh
    changed = set(mutate_home(manifest.root, 0.25, seed=1, now=NOW))
    settle()
    report = index.refresh()
    assert report.updated == len(changed)
    for run_id, path, label in rows(index, "SELECT id, dir, label FROM runs"):
        on_disk = rundir.read_run(index.absolute_dir(path), run_id, path.startswith("trash/")).run["label"]
        assert label == on_disk, run_id


def test_a_moved_run_keeps_its_rows(fresh):
    manifest, index = fresh
    run = manifest.live[0]
    src = run.run_dir(manifest.root)
    attrs_of = "SELECT name, kind FROM attrs WHERE run_key = (SELECT key FROM runs WHERE id = ?) ORDER BY name"
    before = rows(index, attrs_of, run.id)
    os.rename(src, manifest.root / "trash" / "runs" / run.id)
    report = index.refresh()
    assert (report.moved, report.updated, report.added) == (1, 0, 0)
    assert rows(index, "SELECT deleted FROM runs WHERE id = ?", run.id) == [(1,)]
    assert rows(index, attrs_of, run.id) == before


def test_new_and_vanished_runs(fresh):
    manifest, index = fresh
    gone, copied = manifest.deleted[0], manifest.deleted[1]
    shutil.rmtree(gone.run_dir(manifest.root))
    new_id = "f" * 32
    shutil.copytree(copied.run_dir(manifest.root), manifest.root / "runs" / new_id)
    (manifest.root / "runs" / "not-a-run").mkdir()
    report = index.refresh()
    assert (report.added, report.removed) == (1, 1)
    assert rows(index, "SELECT count(*) FROM runs WHERE id IN (?, ?)", gone.id, new_id) == [(1,)]
    assert rows(index, "SELECT count(*) FROM attrs WHERE run_key NOT IN (SELECT key FROM runs)") == [(0,)]


def test_status_follows_a_live_pid(fresh):
    manifest, index = fresh
    run = next(r for r in manifest.live if r.status_kind in ("error-no-exit", "error-dead-pid"))
    guild_dir = run.run_dir(manifest.root) / ".guild"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (guild_dir / "LOCK").write_text(str(child.pid))
        settle()
        index.refresh()
        assert rows(index, "SELECT status FROM runs WHERE id = ?", run.id) == [("running",)]
    finally:
        child.kill()
        child.wait()
    report = index.refresh()
    assert report.rechecked == 1 and report.updated == 0
    assert rows(index, "SELECT status FROM runs WHERE id = ?", run.id) == [("error",)]


def test_unreadable_files_are_reported_not_fatal(fresh):
    manifest, index = fresh
    broken, truncated = manifest.live[1], manifest.live[2]
    (broken.run_dir(manifest.root) / ".guild" / "attrs" / "label").write_text("a: [unclosed\n")
    events = next(p for p in truncated.run_dir(manifest.root).rglob("*tfevents*") if p.stat().st_size > 40)
    events.write_bytes(events.read_bytes()[:-7])
    report = index.refresh()
    problem_ids = {run_id for run_id, _ in report.problems}
    assert {broken.id, truncated.id} <= problem_ids
    assert index.counts() == (len(manifest.live), len(manifest.deleted))


def test_interrupted_refresh_leaves_the_previous_state(fresh, monkeypatch):
    manifest, index = fresh
    before = rows(index, "SELECT id, label FROM runs ORDER BY id")
    mutate_home(manifest.root, 0.5, seed=2, now=NOW)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "read_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        index.refresh(workers=1)
    assert rows(index, "SELECT id, label FROM runs ORDER BY id") == before
    monkeypatch.undo()
    assert index.refresh().updated > 0


def test_a_refresh_that_finds_nothing_writes_nothing(fresh):
    manifest, index = fresh
    found = index.meta("last_refresh")
    written = index.conn.total_changes
    assert index.refresh().updated == 0
    assert index.conn.total_changes == written  # nothing written: the commit syncs nothing
    assert index.meta("last_refresh") == found
    mutate_home(manifest.root, 0.25, seed=1, now=NOW)
    settle()
    assert index.refresh().updated > 0
    assert index.conn.total_changes > written and float(index.meta("last_refresh")) > float(found)
