"""SIGKILL at seeded points of real purge, delete, restore and background
purge processes: whatever the moment, no run outside the selection
changes, nothing outside the run roots changes, the next command finishes
the interrupted work, and the index agrees with the disk.

The kill points are runq's own (`RUNQ_TEST_KILL_AT=<point>#<n>`, see
engine/purge.py); RUNQ_CRASH_TRIALS=N runs more trials, RUNQ_CRASH_SEED
another seed."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runq.commands.app import app
from runq.engine.samplehome import HomeSpec, generate_home

NOW = datetime(2026, 11, 29, 12, 0, 0)
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
TRIALS = int(os.environ.get("RUNQ_CRASH_TRIALS", "50"))
SEED = int(os.environ.get("RUNQ_CRASH_SEED", "20261130"))
ROOTS = {"runs": ("runs",), "trash": ("trash", "runs")}

# command -> (argv after `runs`, root selected from, root the selected runs go to, None: gone)
COMMANDS = {
    "purge": (["purge", "-y"], "trash", None),
    "purge --background": (["purge", "-y", "--background"], "trash", None),
    "delete": (["delete", "-y"], "runs", "trash"),
    "delete --permanent": (["delete", "-y", "--permanent"], "runs", None),
    "restore": (["restore", "-y"], "trash", "runs"),
}
# kill point -> the most times a command of n runs reaches it
POINTS = {
    "moved": lambda n: n,
    "before-commit": lambda n: 1,
    "committed": lambda n: 1,
    "unlinking": lambda n: 6 * n,
    "unlinked": lambda n: n,
    "background-started": lambda n: 1,
}
POINTS_OF = {
    "purge": ["moved", "before-commit", "committed", "unlinking", "unlinked"],
    "purge --background": ["moved", "before-commit", "committed", "background-started", "unlinking", "unlinked"],
    "delete": ["moved", "before-commit"],
    "delete --permanent": ["moved", "before-commit", "committed", "unlinking", "unlinked"],
    "restore": ["moved", "before-commit"],
}


def runq(home, *args):
    return CliRunner().invoke(app, ["-H", str(home), "--now", NOW.isoformat(), *args])


def tree(path):
    """{relative path: size, None for a directory or link target text} under path, links not followed."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                found[os.path.relpath(full, path)] = "-> " + os.readlink(full)
            else:
                found[os.path.relpath(full, path)] = None if os.path.isdir(full) else os.lstat(full).st_size
    return found


def runs_in(root, where):
    base = Path(root, *ROOTS[where])
    return {name: tree(base / name) for name in (os.listdir(base) if base.is_dir() else [])}


def indexed(root, deleted):
    result = runq(root, "--no-refresh", "sql", "--json", f"SELECT id FROM runs WHERE deleted = {deleted} ORDER BY id")
    assert result.exit_code == 0, result.stderr
    return [row["id"] for row in json.loads(result.stdout)]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A home of 60 runs whose runs link to data outside the run roots."""
    base = tmp_path_factory.mktemp("crash")
    root = base / "home"
    manifest = generate_home(root, HomeSpec(runs=60, seed=11, profile="fidelity", sourcecode_files=1), NOW)
    outside = base / "outside"
    (outside / "images").mkdir(parents=True)
    (outside / "images" / "0001.png").write_bytes(b"\x89PNG" * 64)
    (outside / "labels.csv").write_text("id,label\n1,cat\n")
    for record in manifest.runs[::3]:
        os.symlink(outside, record.run_dir(root) / "data")
        os.symlink(outside / "labels.csv", record.run_dir(root) / "labels.csv")
    (root / "notes.txt").write_text("the home holds more than runs")
    return root, outside


def _trial(template, root, rng):
    """One command killed at a seeded point, on the home at root (a copy of the
    template, made again when a root runs low); True when it was killed."""
    source, outside = template
    if not root.exists() or min(len(os.listdir(Path(root, *parts))) for parts in ROOTS.values()) < 10:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root, symlinks=True)
    command = rng.choice(sorted(COMMANDS))
    argv, origin, target = COMMANDS[command]
    candidates = _not_running(root, origin)
    chosen = rng.sample(candidates, min(len(candidates), rng.randint(1, 5)))
    point = rng.choice(POINTS_OF[command])
    kill_at = f"{point}#{rng.randint(1, POINTS[point](len(chosen)))}"
    before = {where: runs_in(root, where) for where in ROOTS}
    outside_before, home_files = tree(outside), sorted(os.listdir(root))
    env = {**os.environ, "RUNQ_TEST_KILL_AT": kill_at}
    proc = subprocess.run([str(RUNQ_SCRIPT), "-H", str(root), "runs", *argv, *chosen],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, -9), (command, kill_at, proc.stderr)
    _wait_for_background(root)
    assert runq(root, "runs", "list", "-a").exit_code == 0  # the next command
    _assert_consistent(root, before, chosen, origin, target)
    assert not os.path.lexists(root / "trash" / "runq-purging"), (command, kill_at)
    assert tree(outside) == outside_before
    assert sorted(os.listdir(root)) == home_files
    assert (root / "notes.txt").read_text() == "the home holds more than runs"
    return proc.returncode == -9


def _not_running(root, where):
    flags = ["--deleted"] if where == "trash" else []
    result = runq(root, "runs", "list", "--json", "--not-running", *flags)
    assert result.exit_code == 0, result.stderr
    return [run["id"] for run in json.loads(result.stdout)]


def _wait_for_background(root):
    """A detached unlinker may still be at work (or killed: the next command finishes its batch)."""
    area = root / "trash" / "runq-purging"
    deadline = time.monotonic() + 30
    while os.path.lexists(area) and time.monotonic() < deadline:
        if runq(root, "runs", "list").exit_code == 0 and not os.path.lexists(area):
            return
        time.sleep(0.05)


def _assert_consistent(root, before, chosen, origin, target):
    after = {where: runs_in(root, where) for where in ROOTS}
    for where in ROOTS:
        for run_id, contents in before[where].items():
            if run_id not in chosen:
                assert after[where].get(run_id) == contents, f"unselected run {run_id} changed in {where}"
    for run_id in chosen:
        original = before[origin][run_id]
        places = [where for where in ROOTS if run_id in after[where]]
        allowed = [origin] + ([target] if target else [])
        assert set(places) <= set(allowed) and len(places) <= 1, (run_id, places)
        if target is not None:
            assert places, f"run {run_id} vanished"
        for where in places:
            assert after[where][run_id] == original, f"run {run_id} changed"
    assert indexed(root, 1) == sorted(after["trash"])
    assert indexed(root, 0) == sorted(after["runs"])


def test_sigkill_at_seeded_points_never_harms_and_is_finished_by_the_next_command(template, tmp_path):
    rng = random.Random(SEED)
    killed = sum(_trial(template, tmp_path / "home", rng) for _ in range(TRIALS))
    assert killed >= TRIALS // 2  # most trials die at their point; the others must end well too
