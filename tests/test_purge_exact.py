"""What the index says is what the disk holds, whenever a command acts:
writes that race a refresh are read again, in-place edits of any attribute
are seen, and purge re-reads every chosen run after confirmation, however
stale its signature."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
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
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"


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


def _scalar_count(root, run_id):
    query = f"SELECT count(*) AS n FROM scalars WHERE run_key = (SELECT key FROM runs WHERE id = '{run_id}')"
    result = runq(root, "--no-refresh", "sql", "--json", query)
    return json.loads(result.stdout)[0]["n"]


def test_a_re_check_reads_event_files_only_for_selections_that_use_scalars(home, monkeypatch):
    root, manifest = home
    live = next(r for r in manifest.live if r.scalars and r.status != "running")
    trashed = [r for r in manifest.deleted if r.scalars][:2]
    for record in [live, *trashed]:
        attr_path(record.run_dir(root), "label").write_text(encode_attr("tidy-up"))
    settle()
    listed(root)
    scalars_before = _scalar_count(root, live.id)
    events_read = []
    real_read_scalars = rundir.read_scalars
    monkeypatch.setattr(rundir, "read_scalars", lambda path, problems: events_read.append(Path(path).name) or real_read_scalars(path, problems))
    assert runq(root, "runs", "delete", "-y", "-Fl", "tidy-up").exit_code == 0
    assert events_read == []
    assert scalars_before and _scalar_count(root, live.id) == scalars_before  # kept as indexed
    listed(root, "--deleted")
    assert events_read == []  # nothing changed since the last whole read: its signature still says so
    assert runq(root, "runs", "purge", "-y", "-Fl", "tidy-up", trashed[0].id).exit_code == 0
    assert events_read == []
    result = runq(root, "runs", "purge", "-y", "-Fl", "tidy-up", "-F", f"id = '{trashed[1].id}'")
    assert result.exit_code == 0 and "Permanently deleted 1 run(s)" in result.stderr, result.stderr
    assert events_read == []
    result = runq(root, "runs", "restore", "-y", "-F", "loss > -1000", live.id)
    assert result.exit_code == 0, result.stderr
    assert events_read == [live.id]  # this selection may read scalars: read them


def test_a_scalar_changed_behind_a_stale_signature_is_seen_by_the_re_check(home):
    root, manifest = home
    record = manifest.deleted[3]
    events = record.run_dir(root) / "events.out.tfevents.1.probe"
    write_event_file(events, [("zzz_probe", 1.0, 1)], wall_time=1e9)
    assert listed(root, "--deleted", "-F", "zzz_probe < 2") == [record.id]
    before = os.stat(events)
    write_event_file(events, [("zzz_probe", 5.0, 1)], wall_time=1e9)
    os.utime(events, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(events).st_size == before.st_size
    result = runq(root, "--no-refresh", "runs", "purge", "-y", "-F", "zzz_probe < 2")
    assert result.exit_code == 0, result.stderr
    assert f"skipped 1 run(s) that changed or vanished since they were selected: {record.id[:8]}" in result.stderr
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


# 4. The purge area and file systems


def tree(path):
    """{relative path: size, None for a directory} of everything under path, links not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), path)] = None
        for name in filenames:
            full = os.path.join(dirpath, name)
            found[os.path.relpath(full, path)] = os.lstat(full).st_size
    return found


def names(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def index_matches_disk(root):
    for flags, where in (([], root / "runs"), (["--deleted"], root / "trash" / "runs")):
        assert sorted(listed(root, *flags)) == [n for n in names(where) if (where / n / ".guild" / "opref").exists()]


@contextmanager
def tmpfs(path):
    """A tmpfs mounted at path (another file system); skips the test where mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)  # moved along, maybe


@pytest.mark.parametrize("kind", ["link", "file"])
def test_a_purge_area_that_is_not_runqs_directory_is_refused_and_never_followed(home, tmp_path, kind):
    root, manifest = home
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    area = root / "trash" / "runq-purging"
    if kind == "link":
        os.symlink(target, area)
    else:
        area.write_text("not a directory")
    before = tree(root / "trash" / "runs")
    result = runq(root, "runs", "purge", "-y")
    assert result.exit_code != 0
    assert result.stderr.startswith("runq: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert tree(root / "trash" / "runs") == before
    assert tree(target) == {"thesis.tex": len("years of work")}
    assert listed(root, "--deleted")  # other commands leave it alone and work
    assert os.path.islink(area) if kind == "link" else area.read_text() == "not a directory"


def test_the_purge_area_is_removed_once_empty(home):
    root, manifest = home
    assert runq(root, "runs", "purge", "-y", "1:2").exit_code == 0
    assert not os.path.lexists(root / "trash" / "runq-purging")
    assert runq(root, "runs", "delete", "-y", "-p", "1").exit_code == 0
    assert not os.path.lexists(root / "trash" / "runq-purging")


def test_a_mount_point_inside_a_trashed_run_is_left_in_place_and_reported(home):
    root, manifest = home
    record = manifest.deleted[0]
    with tmpfs(record.run_dir(root) / "data") as mount:
        (mount / "dataset.bin").write_bytes(b"\0" * 4096)
        result = runq(root, "runs", "purge", "-y", record.id)
        assert result.exit_code == 1, result.stderr
        left = [line for line in result.stderr.splitlines() if "another file system is mounted there" in line]
        assert len(left) == 1 and left[0].startswith("runq: left ")
        kept = Path(left[0].split()[2])
        assert kept.name == "data" and (kept / "dataset.bin").stat().st_size == 4096
        assert record.id not in listed(root, "--deleted")
        assert not (record.run_dir(root)).exists()
        assert listed(root, "--deleted") and (kept / "dataset.bin").exists()  # finishing leaves it too
        subprocess.run(["umount", "-l", str(kept)], check=True)
    listed(root)  # unmounted: the next command finishes the run
    assert not os.path.lexists(root / "trash" / "runq-purging")


INTERRUPTED = "999999999-interrupted"  # a batch nobody holds


def test_commands_started_together_finish_an_interrupted_batch_once(tmp_path):
    root = tmp_path / "home"
    make_home(root, runs=60, seed=4)
    listed(root)
    batch = root / "trash" / "runq-purging" / INTERRUPTED
    batch.mkdir(parents=True)
    for run_id in names(root / "trash" / "runs")[:25]:
        os.rename(root / "trash" / "runs" / run_id, batch / run_id)
    live = tree(root / "runs")
    procs = [
        subprocess.Popen([str(RUNQ_SCRIPT), "-H", str(root), "runs", "list", "-d"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    results = [(proc.wait(timeout=120), proc.stderr.read()) for proc in procs]
    assert results == [(0, "")] * 8
    assert not os.path.lexists(root / "trash" / "runq-purging")
    assert tree(root / "runs") == live
    index_matches_disk(root)


def test_the_purge_area_on_another_file_system_than_the_runs_unlinks_in_place(tmp_path):
    root = tmp_path / "home"
    manifest = make_home(root, runs=12, seed=6)
    deleted = [r.id for r in manifest.deleted]
    with tmpfs(root / "trash" / "runq-purging"):
        result = runq(root, "runs", "purge", "-y", *deleted[:2])
        assert result.exit_code == 0, result.stderr
        assert "on another file system than the runs" in result.stderr
        assert result.stderr.splitlines()[-1].startswith("Permanently deleted 2 run(s)")
        assert names(root / "trash" / "runs") == sorted(deleted[2:])
        assert names(root / "trash" / "runq-purging") == []
        index_matches_disk(root)


# 5. Other file systems


def test_delete_and_restore_across_file_systems_copy_verify_and_remove(tmp_path):
    root = tmp_path / "home"
    make_home(root, runs=10, seed=7)
    order = listed(root, "--not-running")[:3]
    contents = {run_id: tree(root / "runs" / run_id) for run_id in order}
    trashed = {run_id: tree(root / "trash" / "runs" / run_id) for run_id in names(root / "trash" / "runs")}
    shutil.move(str(root / "trash"), str(tmp_path / "old-trash"))
    with tmpfs(root / "trash"):
        shutil.copytree(tmp_path / "old-trash", root / "trash", dirs_exist_ok=True, symlinks=True)
        result = runq(root, "runs", "delete", "-y", *order)
        assert result.exit_code == 0, result.stderr
        assert result.stderr.splitlines()[-1] == "Deleted 3 run(s)"
        for run_id in order:
            assert not (root / "runs" / run_id).exists()
            assert tree(root / "trash" / "runs" / run_id) == contents[run_id]
        assert not [n for n in names(root / "trash" / "runs") if n.startswith(".")]
        index_matches_disk(root)
        back = sorted(trashed)[:2]
        result = runq(root, "runs", "restore", "-y", *back)
        assert result.exit_code == 0, result.stderr
        for run_id in back:
            assert tree(root / "runs" / run_id) == trashed[run_id]
            assert not (root / "trash" / "runs" / run_id).exists()
        index_matches_disk(root)
        result = runq(root, "runs", "delete", "-y", "-p", back[0])
        assert result.exit_code == 0, result.stderr
        assert not (root / "runs" / back[0]).exists()
        index_matches_disk(root)


def test_a_run_that_cannot_be_moved_is_reported_and_the_purge_exits_non_zero(home):
    root, manifest = home
    stuck, other = manifest.deleted[0], manifest.deleted[1]
    saved = tree(stuck.run_dir(root))
    shutil.copytree(stuck.run_dir(root), root / "saved", symlinks=True)
    with tmpfs(stuck.run_dir(root)):  # a mount point cannot be renamed (EBUSY)
        shutil.copytree(root / "saved", stuck.run_dir(root), dirs_exist_ok=True, symlinks=True)
        result = runq(root, "runs", "purge", "-y", stuck.id, other.id)
        assert result.exit_code == 1
        assert f"runq: could not remove {stuck.id[:8]}: " in result.stderr
        assert result.stderr.splitlines()[-1].startswith("Permanently deleted 1 run(s)")
        assert tree(stuck.run_dir(root)) == saved
        result = runq(root, "runs", "purge", "-y", stuck.id)
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1].startswith("Permanently deleted 0 run(s)")
        assert stuck.id in listed(root, "--deleted")
    assert not other.run_dir(root).exists()


# 6. Only a run's own process is stopped


def _lock_run(run_dir, pid, started_us):
    guild = Path(run_dir) / ".guild"
    for marker in ("PENDING", "STAGED", "LOCK.remote", "attrs/exit_status"):
        if (guild / marker).exists():
            os.remove(guild / marker)
    (guild / "LOCK").write_text(str(pid))
    (guild / "attrs" / "started").write_text(f"{started_us}\n")


@pytest.mark.parametrize("run_started, signalled", [(0, True), (-3600, False)], ids=["after-the-process", "an-hour-before"])
def test_delete_signals_a_locked_pid_only_when_it_is_the_runs_process(home, run_started, signalled):
    root, manifest = home
    record = manifest.live[0]
    child = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.05)
        _lock_run(record.run_dir(root), child.pid, int((time.time() + run_started) * 1e6))
        assert record.id in listed(root, "-Sr")
        result = runq(root, "runs", "delete", "-y", record.id)
        assert result.exit_code == 0, result.stderr
        assert record.id in names(root / "trash" / "runs")
        if signalled:
            assert child.wait(timeout=10) == -signal.SIGTERM
        else:
            time.sleep(0.2)
            assert child.poll() is None
            assert f"runq: did not stop pid {child.pid} of {record.id[:8]}" in result.stderr
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("pid, alive", [(0, False), (-1, False), (os.getpid(), True), (2**22 + 12345, False)])
def test_pid_alive_as_guild_decides(pid, alive):
    assert rundir.pid_alive(pid) is alive


# 7. Destructive previews name the home


@pytest.mark.parametrize("command, flags", [("purge", []), ("restore", []), ("delete", []), ("delete", ["-p"])])
def test_previews_and_dry_runs_name_the_guild_home_but_json_does_not(home, command, flags):
    root, manifest = home
    dry = runq(root, "runs", command, *flags, "--dry-run", "1")
    assert f"\nGuild home: {root}\n" in dry.stderr
    asked = runq(root, "runs", command, *flags, "1", input="n\n")
    assert asked.exit_code == 4 and f"\nGuild home: {root}\n" in asked.stderr
    as_json = runq(root, "runs", command, *flags, "--dry-run", "--json", "1")
    assert "Guild home" not in as_json.stdout + as_json.stderr
