"""What the index says is what the disk holds, whenever a command acts:
writes that race a refresh are read again, in-place edits of any attribute
are seen, and purge re-reads every chosen run after confirmation, however
stale its signature."""

import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runq.commands.app import app
from runq.engine import rundir
from runq.engine.home import GuildHome
from runq.engine.indexer import Index
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home
from runq.engine.tfevents import write_event_file

NOW = datetime(2026, 11, 29, 12, 0, 0)


def make_home(root, runs=16, seed=3):
    return generate_home(root, HomeSpec(runs=runs, seed=seed, profile="fidelity", sourcecode_files=1), NOW)


def runq(home, *args, input=None):
    return CliRunner().invoke(app, ["-H", str(home), "--now", NOW.isoformat(), *args], input=input)


def listed(home, *args):
    result = runq(home, "runs", "list", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [run["id"] for run in json.loads(result.stdout)]


def attr_path(run_dir, name):
    return Path(run_dir) / ".guild" / "attrs" / name


def rewrite_in_place(path, value, keep_times=False):
    """Rewrites an attribute file in the same inode (as Guild and editors
    that write in place do); with keep_times, its mtime is put back."""
    before = os.stat(path)
    with open(path, "r+") as f:
        f.write(encode_attr(value))
        f.truncate()
    if keep_times:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def settle():
    time.sleep(rundir.RACY_WINDOW_NS / 1e9)


def indexed_row(index, run_id):
    row = index.conn.execute("SELECT label, status, exit_status FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row


def disk_row(run_dir, run_id):
    run = rundir.read_run(str(run_dir), run_id, True).run
    return (run["label"], run["status"], run["exit_status"])


def big_event_file(run_dir, steps=5000):
    """A large event file: reading the run takes long enough for writes to land in between."""
    write_event_file(Path(run_dir) / "events.out.tfevents.1.big", [("loss", 1.0 / (step + 1), step) for step in range(steps)])


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "home"
    return root, make_home(root)


# 1. A write that races the read of its run


def test_a_write_during_the_read_of_a_run_is_read_by_the_next_refresh(home, monkeypatch):
    root, manifest = home
    record = manifest.deleted[0]
    run_dir = record.run_dir(root)
    index = Index(GuildHome(root))
    index.refresh()
    attr_path(run_dir, "label").write_text(encode_attr("before"))
    real_read_scalars = rundir.read_scalars

    def read_scalars_while_written(path, problems):
        # The attributes are read; the run finishes and is relabelled now.
        if Path(path) == run_dir:
            attr_path(run_dir, "label").write_text(encode_attr("written while read"))
            attr_path(run_dir, "exit_status").write_text("0\n")
        return real_read_scalars(path, problems)

    monkeypatch.setattr(rundir, "read_scalars", read_scalars_while_written)
    index.refresh()
    monkeypatch.setattr(rundir, "read_scalars", real_read_scalars)
    index.refresh()
    assert indexed_row(index, record.id) == ("written while read", "completed", 0)
    assert indexed_row(index, record.id) == disk_row(run_dir, record.id)


def test_a_writer_racing_refreshes_leaves_an_index_that_matches_the_disk(home):
    root, manifest = home
    record = manifest.deleted[1]
    run_dir = record.run_dir(root)
    big_event_file(run_dir)
    index = Index(GuildHome(root))
    index.refresh()
    for burst in range(int(os.environ.get("RUNQ_RACE_ROUNDS", "3"))):
        _race(index, run_dir, burst, writes=40)
        index.refresh()  # the writer has stopped: this refresh must see its last write
        assert indexed_row(index, record.id) == disk_row(run_dir, record.id)
        assert indexed_row(index, record.id)[0] == f"burst {burst} write 39"


def _race(index, run_dir, burst, writes):
    """Refreshes again and again while a thread relabels the run and rewrites its exit status."""
    done = threading.Event()

    def writer():
        for n in range(writes):
            attr_path(run_dir, "exit_status").write_text(f"{(n + burst) % 3}\n")
            attr_path(run_dir, "label").write_text(encode_attr(f"burst {burst} write {n}"))
            time.sleep(0.001)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        index.refresh()
    thread.join()


# 2. The re-check after confirmation reads the disk, not signatures


def _label_runs(root, manifest, count, label):
    chosen = manifest.deleted[:count]
    for record in chosen:
        attr_path(record.run_dir(root), "label").write_text(encode_attr(label))
    return chosen


@pytest.mark.parametrize("refresh", [[], ["--no-refresh"]], ids=["refreshed", "no-refresh"])
def test_purge_never_deletes_a_run_relabelled_behind_a_stale_signature(home, refresh):
    root, manifest = home
    chosen = _label_runs(root, manifest, 3, "keep-me-NO")
    assert sorted(listed(root, "--deleted", "-Fl", "keep-me-NO")) == sorted(r.id for r in chosen)
    changed = chosen[0]
    # Same size, mtime put back: only the file's contents (and ctime) tell.
    rewrite_in_place(attr_path(changed.run_dir(root), "label"), "DELETE-ME!", keep_times=True)
    result = runq(root, *refresh, "runs", "purge", "-y", "-Fl", "keep-me-NO")
    assert result.exit_code == 0, result.stderr
    assert changed.run_dir(root).is_dir()
    assert not any(r.run_dir(root).exists() for r in chosen[1:])
    assert listed(root, "--deleted", "-Fl", "DELETE-ME!") == [changed.id]
    if refresh:  # the index still said keep-me-NO: the re-check found the truth
        assert f"skipped 1 run(s) that changed or vanished since they were selected: {changed.id[:8]}" in result.stderr


def test_delete_and_restore_re_read_chosen_runs_from_disk(home):
    root, manifest = home
    record = manifest.live[0]
    attr_path(record.run_dir(root), "label").write_text(encode_attr("move-me-ok"))
    listed(root)
    rewrite_in_place(attr_path(record.run_dir(root), "label"), "stay-here!", keep_times=True)
    result = runq(root, "--no-refresh", "runs", "delete", "-y", "-Fl", "move-me-ok")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 run(s)" in result.stderr
    assert record.run_dir(root).is_dir()


# 3. In-place edits of any attribute


@pytest.mark.parametrize(
    "name, value, selection",
    [
        ("flags", {"lr": 0.123456}, ["-F", "lr = 0.123456"]),
        ("started", 1700000000000000, ["-F", "started = '2023-11-14 22:13:20'"]),
        ("sourcecode_digest", "feedfacefeedfacefeedfacefeedface", ["-Fd", "feedface"]),
    ],
)
@pytest.mark.parametrize("keep_times", [False, True], ids=["in-place", "mtime-put-back"])
def test_an_attribute_rewritten_in_place_is_seen_by_the_next_command(home, monkeypatch, name, value, selection, keep_times):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        root, manifest = home
        record = next(r for r in manifest.deleted if r.started and r.sourcecode_digest and r.flags)
        path = attr_path(record.run_dir(root), name)
        assert path.exists()
        assert record.id not in listed(root, "--deleted", *selection)
        attrs_dir = os.stat(path.parent).st_mtime_ns
        rewrite_in_place(path, value, keep_times)
        assert os.stat(path.parent).st_mtime_ns == attrs_dir  # no directory tells
        assert listed(root, "--deleted", *selection) == [record.id]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
