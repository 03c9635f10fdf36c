"""`runq watch`: a real watcher process tells each refresh which runs
changed; whatever happens to it (never started, killed, restarted, events
lost, the watch limit met), every change made by another process between
two commands is seen."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runq.commands.app import app
from runq.engine import api, indexer, watch
from runq.engine.samplehome import HomeSpec, generate_home

pytestmark = pytest.mark.skipif(not watch.available(), reason="needs Linux and inotify_simple")

NOW = datetime(2026, 11, 29, 12, 0, 0)
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
RUNS = 16


def runq(home, *args, env=None):
    return CliRunner().invoke(app, ["-H", str(home), *args], env=env)


def index_path(home):
    return home / "cache" / "runq" / "index.db"


def refresh(home):
    """One command's refresh (through the Python API); its report and a
    {run id: (deleted, label, scalar count)} view of the index after it."""
    opened = api.open(home)
    try:
        rows = opened.sql(
            "SELECT r.id, r.deleted, r.label, (SELECT COALESCE(SUM(count), 0) FROM scalars WHERE run_key = r.key)"
            " FROM runs AS r"
        ).rows
    finally:
        opened.close()
    return opened.refresh_report, {run_id: tuple(rest) for run_id, *rest in rows}


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "home"
    manifest = generate_home(root, HomeSpec(runs=RUNS, seed=3, sourcecode_files=1), NOW)
    yield root, manifest
    pid = watch.running_pid(index_path(root))
    if pid:  # never leave a watcher behind
        os.kill(pid, signal.SIGKILL)


def start_watcher(home, env=None):
    result = runq(home, "watch", "start", env=env)
    assert result.exit_code == 0, result.output
    pid = watch.running_pid(index_path(home))
    assert pid
    return pid


def kill_watcher(home):
    """SIGKILL: nothing cleaned up, the pid file left naming a dead process."""
    pid = watch.running_pid(index_path(home))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: watch.running_pid(index_path(home)) is None)
    assert pid_file_text(home) == f"{pid}\n"


def pid_file_text(home):
    return watch.pid_path(index_path(home)).read_text()


# Changes made by another process


def edit_label_in_place(run_dir):
    """As Guild relabels: the same file rewritten, no directory touched."""
    subprocess.run([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'r+'); f.truncate(0); f.write('edited')",
                    str(run_dir / ".guild" / "attrs" / "label")], check=True)


def add_event_file(run_dir):
    guild_dir = run_dir / ".guild"
    existing = next(p for p in guild_dir.iterdir() if ".tfevents." in p.name)
    shutil.copy(existing, guild_dir / "events.out.tfevents.1.other.1.0")


def a_live_run(manifest, home):
    """A live run with a label and an event file in .guild."""
    for run in manifest.live:
        run_dir = run.run_dir(home)
        if (run_dir / ".guild" / "attrs" / "label").exists() and any(
            ".tfevents." in p.name for p in (run_dir / ".guild").iterdir()
        ):
            return run
    raise AssertionError("no live run with a label and events")


def change(kind, home, manifest):
    """Makes one change; returns the run id and what the index must say of it after."""
    run = a_live_run(manifest, home)
    run_dir = run.run_dir(home)
    if kind == "label edited in place":
        edit_label_in_place(run_dir)
        return run.id, lambda view: view[run.id][1] == "edited"
    if kind == "new run":
        new_id = "f" * 32
        subprocess.run(["cp", "-a", str(run_dir), str(home / "runs" / new_id)], check=True)
        return new_id, lambda view: new_id in view and view[new_id][0] == 0
    if kind == "moved to trash":
        os.rename(run_dir, home / "trash" / "runs" / run.id)
        return run.id, lambda view: view[run.id][0] == 1
    if kind == "removed":
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        return run.id, lambda view: run.id not in view
    if kind == "new event file":
        before = refresh_view_of(home, run.id)
        add_event_file(run_dir)
        return run.id, lambda view: view[run.id][2] > before
    raise AssertionError(kind)


def refresh_view_of(home, run_id):
    return refresh(home)[1][run_id][2]


CHANGES = ["label edited in place", "new run", "moved to trash", "removed", "new event file"]
WATCHERS = ["watching", "no watcher", "killed with SIGKILL"]


@pytest.mark.parametrize("watcher", WATCHERS)
@pytest.mark.parametrize("kind", CHANGES)
def test_a_change_between_two_commands_is_seen(home, kind, watcher):
    root, manifest = home
    refresh(root)
    if watcher != "no watcher":
        start_watcher(root)
    report, _ = refresh(root)
    assert report.watcher == (watcher != "no watcher")
    if watcher == "killed with SIGKILL":
        kill_watcher(root)
    _, seen = change(kind, root, manifest)
    report, view = refresh(root)
    assert seen(view), view
    assert report.watcher == (watcher == "watching")
    report, view = refresh(root)  # and it stays seen
    assert seen(view)


def test_with_a_watcher_a_refresh_checks_only_what_changed(home):
    root, manifest = home
    refresh(root)
    start_watcher(root)
    first, _ = refresh(root)
    assert (first.watcher, first.checked) == (True, 0)  # `watch start` checked every run once it watched
    quiet, _ = refresh(root)
    assert (quiet.watcher, quiet.checked, quiet.updated) == (True, 0, 0)
    run = a_live_run(manifest, root)
    edit_label_in_place(run.run_dir(root))
    report, view = refresh(root)
    assert (report.watcher, report.checked, report.updated) == (True, 1, 1)
    assert view[run.id][1] == "edited"


def index_file_stamps(home):
    files = [index_path(home), index_path(home).with_name("index.db-wal")]
    return [(p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in files]


def test_with_a_watcher_a_refresh_that_finds_nothing_writes_nothing(home):
    root, manifest = home
    refresh(root)
    start_watcher(root)
    refresh(root)
    before = index_file_stamps(root)
    quiet, _ = refresh(root)
    assert quiet.watcher and index_file_stamps(root) == before  # the watcher's token is the same
    edit_label_in_place(a_live_run(manifest, root).run_dir(root))
    report, _ = refresh(root)
    assert report.updated == 1 and index_file_stamps(root) != before
    after = index_file_stamps(root)
    quiet, _ = refresh(root)
    assert quiet.watcher and index_file_stamps(root) == after


def test_the_token_of_a_restarted_watcher_is_refused(home):
    root, manifest = home
    refresh(root)
    start_watcher(root)
    refresh(root)
    assert runq(root, "watch", "stop").exit_code == 0
    run = a_live_run(manifest, root)
    edit_label_in_place(run.run_dir(root))  # while no watcher watched
    watch.start(str(root), index_path(root))  # the engine's start: no refresh of its own, as RUNQ_WATCH=1's
    report, view = refresh(root)
    assert (report.watcher, report.checked) == (False, RUNS)
    assert view[run.id][1] == "edited"


def test_watch_start_checks_what_changed_before_it_watched(home):
    root, manifest = home
    refresh(root)
    run = a_live_run(manifest, root)
    edit_label_in_place(run.run_dir(root))  # no watcher yet
    start_watcher(root)
    report, view = refresh(root)
    assert (report.watcher, report.checked) == (True, 0)
    assert view[run.id][1] == "edited"


def test_watch_start_checks_every_run_once_and_not_with_no_refresh(home, monkeypatch):
    root, _ = home
    refresh(root)
    checks = []
    real_refresh = indexer.Index.refresh
    monkeypatch.setattr(indexer.Index, "refresh", lambda index, *a, **kw: checks.append(1) or real_refresh(index, *a, **kw))
    start_watcher(root)
    assert len(checks) == 1  # after the watcher watches; a check before it would say nothing more
    assert runq(root, "watch", "stop").exit_code == 0
    assert runq(root, "--no-refresh", "watch", "start").exit_code == 0
    assert len(checks) == 1


def test_lost_events_make_the_next_refresh_check_every_run(home):
    """SIGUSR1 is the watcher's test hook: it acts as on an inotify queue overflow."""
    root, manifest = home
    refresh(root)
    pid = start_watcher(root)
    refresh(root)
    assert refresh(root)[0].watcher
    os.kill(pid, signal.SIGUSR1)
    status = runq(root, "watch", "status")
    assert "events lost: 1 time(s)" in status.stdout
    run = a_live_run(manifest, root)
    edit_label_in_place(run.run_dir(root))
    report, view = refresh(root)
    assert (report.watcher, report.checked) == (False, RUNS)
    assert view[run.id][1] == "edited"
    assert refresh(root)[0].watcher  # and the watcher is trusted again


def test_past_the_watch_limit_the_runs_not_watched_are_checked(home):
    root, manifest = home
    refresh(root)
    start_watcher(root, env={"RUNQ_WATCH_MAX_WATCHES": "20"})
    status = runq(root, "watch", "status")
    assert status.exit_code == 0
    assert "limit 20 from RUNQ_WATCH_MAX_WATCHES" in status.stdout
    unwatched = int(status.stdout.split("not watched: ")[1].split()[0])
    assert 0 < unwatched < RUNS
    refresh(root)
    quiet, _ = refresh(root)
    assert quiet.watcher and quiet.checked == unwatched
    for run in manifest.live:
        label = run.run_dir(root) / ".guild" / "attrs" / "label"
        if label.exists():
            edit_label_in_place(run.run_dir(root))
    report, view = refresh(root)
    assert report.watcher
    assert all(view[run.id][1] == "edited" for run in manifest.live if (run.run_dir(root) / ".guild/attrs/label").exists())


def test_status_names_the_sysctl_that_raises_the_limit():
    from runq.commands.watch import _raise_text

    state = {"limit": 1000, "limit_from": "fs.inotify.max_user_watches", "watches": 400, "unwatched": 100}
    assert "sudo sysctl fs.inotify.max_user_watches=1400" in _raise_text(state, 100)


def test_status_and_stop_without_a_watcher_say_so_in_one_line(home):
    root, _ = home
    refresh(root)
    status = runq(root, "watch", "status")
    assert (status.exit_code, status.stdout) == (3, f"no watcher for {index_path(root)}\n")
    stop = runq(root, "watch", "stop")
    assert (stop.exit_code, stop.stdout) == (0, f"no watcher was running for {index_path(root)}\n")


def test_a_stale_pid_file_names_no_watcher_and_its_process_is_not_signalled(home):
    root, _ = home
    refresh(root)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        watch.pid_path(index_path(root)).write_text(f"{bystander.pid}\n")
        assert runq(root, "watch", "status").exit_code == 3
        assert runq(root, "watch", "stop").exit_code == 0
        assert bystander.poll() is None
        start_watcher(root)  # the stale file does not stop a new watcher
        assert pid_file_text(root) != f"{bystander.pid}\n"
    finally:
        bystander.kill()
        bystander.wait()


def test_one_watcher_per_index(home):
    root, _ = home
    pid = start_watcher(root)
    again = runq(root, "watch", "start")
    assert (again.exit_code, again.stdout) == (0, f"already watching (pid {pid})\n")
    assert watch.start(root, index_path(root)) is not None  # a second daemon finds the lock taken and ends
    assert watch.running_pid(index_path(root)) == pid


def test_stop_ends_the_watcher(home):
    root, _ = home
    pid = start_watcher(root)
    result = runq(root, "watch", "stop")
    assert (result.exit_code, result.stdout) == (0, f"stopped the watcher (pid {pid})\n")
    assert watch.running_pid(index_path(root)) is None
    assert "stopping: asked to (SIGTERM)" in watch.log_path(index_path(root)).read_text()


def test_the_watcher_ends_when_its_index_is_dropped(home):
    root, _ = home
    start_watcher(root)
    assert runq(root, "index", "--drop").exit_code == 0
    wait_for(lambda: not (root / "cache" / "runq").exists() or not os.listdir(root / "cache" / "runq"))
    assert watch.running_pid(index_path(root)) is None


def test_the_watcher_never_holds_the_index_lock(home):
    root, _ = home
    start_watcher(root)
    result = runq(root, "--lock-timeout", "1", "index", "--rebuild")
    assert result.exit_code == 0, result.output


def test_an_environment_variable_starts_the_watcher_with_the_first_command(home):
    root, _ = home
    result = runq(root, "runs", "list", env={"RUNQ_WATCH": "1"})
    assert result.exit_code == 0, result.output
    wait_for(lambda: watch.status(index_path(root)) is not None)
    refresh(root)
    assert refresh(root)[0].watcher


def test_the_installed_script_uses_the_watcher(home):
    root, manifest = home
    env = {**os.environ, "GUILD_HOME": str(root)}
    script = lambda *args: subprocess.run([str(RUNQ_SCRIPT), *args], env=env, capture_output=True, text=True)
    started = script("watch", "start")
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith(f"watching {root}")
    script("runs", "list")
    run = a_live_run(manifest, root)
    edit_label_in_place(run.run_dir(root))
    listed = json.loads(script("runs", "list", "--json", "-a").stdout)
    assert [r["label"] for r in listed if r["id"] == run.id] == ["edited"]
    stopped = script("watch", "stop")
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped the watcher")


def test_after_lost_events_a_listing_of_live_runs_checks_the_trash_too(home):
    """Its token stands for both roots: a change in the trash while events
    were lost must not wait for ever."""
    root, manifest = home
    refresh(root)
    pid = start_watcher(root)
    refresh(root)
    deleted = next(run for run in manifest.deleted if (run.run_dir(root) / ".guild/attrs/label").exists())
    edit_label_in_place(deleted.run_dir(root))
    os.kill(pid, signal.SIGUSR1)
    assert "events lost: 1" in runq(root, "watch", "status").stdout
    assert runq(root, "runs", "list").exit_code == 0  # live runs only
    listed = json.loads(runq(root, "runs", "list", "--deleted", "--json", "-a").stdout)
    assert [r["label"] for r in listed if r["id"] == deleted.id] == ["edited"]


def test_a_directory_made_in_a_run_is_watched_from_then_on(home):
    root, manifest = home
    refresh(root)
    start_watcher(root)
    refresh(root)
    run_dir = a_live_run(manifest, root).run_dir(root)
    (run_dir / "eval").mkdir()
    assert refresh(root)[0].checked == 1
    assert refresh(root)[0].checked == 0
    (run_dir / "eval" / "deeper").mkdir()
    (run_dir / "eval" / "deeper" / "events.out.tfevents.2.x.1.0").write_bytes(b"")
    report, _ = refresh(root)
    assert (report.watcher, report.checked) == (True, 1)


def test_a_root_that_cannot_be_watched_makes_every_answer_a_full_check(home):
    root, manifest = home
    refresh(root)
    start_watcher(root, env={"RUNQ_WATCH_MAX_WATCHES": "3"})  # the home, trash/ and runs/: not trash/runs/
    assert "not trusted: cannot watch" in runq(root, "watch", "status").stdout
    refresh(root)
    deleted = next(run for run in manifest.deleted if (run.run_dir(root) / ".guild/attrs/label").exists())
    edit_label_in_place(deleted.run_dir(root))
    report, view = refresh(root)
    assert (report.watcher, report.checked) == (False, RUNS)
    assert view[deleted.id][1] == "edited"
