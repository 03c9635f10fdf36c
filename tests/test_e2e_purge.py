"""End to end: the real `guild runs purge|restore|delete -y ARGS` and the
installed `runq runs purge|restore|delete -y ARGS`, each on its own copy of
one generated home, leave the same run directories behind, and runq's index
afterwards agrees with the disk.

The real guild CLI reads the real clock, so `--started` ranges here are wide
absolute ones, far from any boundary, and no case reads `time`. Guild's
delete stops running runs by signalling the pid in their LOCK (generated
homes use pid 1 for live runs): delete runs only on a copy whose live and
remote locks were removed first, and that is checked before Guild starts.
"""

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from differential import NOW, guild_select_many
from oracle import run_guild
from typer.testing import CliRunner

from runq.commands.app import app
from runq.engine.samplehome import HomeSpec, generate_home

RUNQ = Path(sys.executable).parent / "runq"
ROOTS = ("runs", "trash/runs")
TIMEOUT = 120

# (arguments, whether Guild acts on at least one run)
PURGE_CASES = {
    "flag filter": (["-F", "lr > 0.001"], True),
    "flag or scalar filter": (["-F", "batch-size = 32 or scalar:acc > 0.8"], True),
    "status letters, unprefixed scalar": (["-Set", "-F", "loss < 0.5"], True),
    "not status, operation": (["--not-error", "--not-running", "-Fo", "train"], True),
    "operation patterns": (["-Fo", "^mnist", "-Fo", "*.py"], True),
    "no label": (["-Fl", "-"], True),
    "run range and index": (["2:4", "7"], True),
    "started after": (["--started", "after 2026-01-01"], True),
    "started before, unmarked": (["-Fs", "before 2026-01-01", "-Fn"], True),
    "started between, not running": (["-Fs", "between 2024-06-01 and 2026-11-01", "--not-running"], True),
    "tag, comment and digest": (["-Ft", "best", "-Fc", "-", "-Fd", "a"], True),
    "nothing": (["-F", "lr > 1000"], False),
}
RESTORE_CASES = {
    "status": (["-Se"], True),
    "range": (["1:3"], True),
    "flag filter": (["-F", "batch-size = 32"], True),
    "everything": ([], True),
}
DELETE_CASES = {
    "operation": (["-Fo", "train"], True),
    "permanent, scalar filter, range": (["--permanent", "-F", "acc > 0.5", "2:5"], True),
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e") / "home"
    generate_home(root, HomeSpec(runs=40, seed=5, profile="fidelity"), NOW)
    return root


@pytest.fixture(scope="module")
def quiet_source(source, tmp_path_factory):
    """The same home with no running run: live and remote locks removed."""
    root = tmp_path_factory.mktemp("e2e-quiet") / "home"
    shutil.copytree(source, root, symlinks=True)
    for lock in _locks(root):
        if lock.name == "LOCK.remote" or _pid_alive(lock):
            lock.unlink()
    return root


@pytest.mark.parametrize("name", PURGE_CASES)
def test_purge_leaves_what_guild_leaves(source, tmp_path, name):
    args, acts = PURGE_CASES[name]
    _check_same_result(source, tmp_path, "purge", args, acts)


@pytest.mark.parametrize("name", RESTORE_CASES)
def test_restore_leaves_what_guild_leaves(source, tmp_path, name):
    args, acts = RESTORE_CASES[name]
    _check_same_result(source, tmp_path, "restore", args, acts)


@pytest.mark.parametrize("name", DELETE_CASES)
def test_delete_leaves_what_guild_leaves(quiet_source, tmp_path, name):
    args, acts = DELETE_CASES[name]
    _check_same_result(quiet_source, tmp_path, "delete", args, acts)


def _check_same_result(source, tmp_path, command, args, acts):
    guild_home, runq_home = tmp_path / "guild", tmp_path / "runq"
    for copy in (guild_home, runq_home):
        shutil.copytree(source, copy, symlinks=True)
    before = _source_tree(source)
    guild, runq = _run_both(command, args, guild_home, runq_home)
    assert guild.returncode == 0, guild.stderr
    assert runq.returncode == 0, runq.stderr
    guild_tree, runq_tree = tree(guild_home), tree(runq_home)
    assert (guild_tree != before) == acts, f"guild {'did not act' if acts else 'acted'}: {guild.stderr}"
    assert runq_tree == guild_tree, tree_difference(guild_tree, runq_tree)
    _check_index_agrees_with_disk(runq_home, tmp_path / "fresh-index.db")


def _run_both(command, args, guild_home, runq_home):
    """Guild and runq side by side (two processes, one copy each)."""
    if command == "delete":
        _assert_nothing_running(guild_home)
    runq = subprocess.Popen(
        [str(RUNQ), "-H", str(runq_home), "runs", command, "-y", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        guild = run_guild(guild_home, ["runs", command, "-y", *args])
    finally:
        out, err = runq.communicate(timeout=TIMEOUT)
    return guild, subprocess.CompletedProcess(runq.args, runq.returncode, out, err)


# ---------------------------------------------------------------------------
# Directory trees
# ---------------------------------------------------------------------------


@functools.cache
def _source_tree(source):
    return tree(source)


def tree(home):
    """{path relative to home: what is there} for everything under the run roots."""
    entries = {}
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(Path(home, root)):
            directory = Path(dirpath)
            entries[str(directory.relative_to(home))] = ("dir",)
            for name in dirnames + filenames:
                path = directory / name
                if path.is_symlink() or path.is_file():
                    entries[str(path.relative_to(home))] = _entry(path)
    return entries


def _entry(path):
    if path.is_symlink():
        return ("link", os.readlink(path))
    data = path.read_bytes()
    return ("file", len(data), hashlib.sha256(data).hexdigest())


def tree_difference(guild_tree, runq_tree):
    """The run directories (root/id) whose contents differ, by where they are."""

    def runs(paths):
        depth = {"runs": 2, "trash": 3}
        return sorted({"/".join(Path(p).parts[: depth[Path(p).parts[0]]]) for p in paths})

    only_guild = runs(set(guild_tree) - set(runq_tree))
    only_runq = runs(set(runq_tree) - set(guild_tree))
    changed = runs(p for p in set(guild_tree) & set(runq_tree) if guild_tree[p] != runq_tree[p])
    return f"only after guild: {only_guild}\nonly after runq: {only_runq}\nchanged: {changed}"


def run_dirs(home, root):
    """Ids of the runs on disk under one root (directories with .guild/opref)."""
    base = Path(home, root)
    return sorted(p.name for p in base.iterdir() if (p / ".guild" / "opref").exists())


# ---------------------------------------------------------------------------
# runq's index after the action
# ---------------------------------------------------------------------------

INDEX_QUERIES = (
    "SELECT * FROM runs ORDER BY id",
    *(
        f"SELECT r.id AS run, t.* FROM {table} AS t JOIN runs AS r ON r.key = t.run_key ORDER BY r.id, {order}"
        for table, order in (
            ("attrs", "t.name"),
            ("flags", "t.name"),
            ("scalars", "t.prefix, t.tag"),
            ("tags", "t.tag"),
            ("comments", "t.seq"),
        )
    ),
)


def _check_index_agrees_with_disk(home, fresh_index):
    """The index runq left, read without a refresh, lists the runs on disk in
    the order Guild lists them, and holds what an index built from scratch
    holds (but for `listing`, which only orders runs with equal timestamps)."""
    guild_lists = guild_select_many(home, [("list", []), ("list", ["--deleted"])])
    for (root, extra), guild in zip((("runs", []), ("trash/runs", ["--deleted"])), guild_lists):
        listed = [run["id"] for run in _runq_json(home, ["--no-refresh", "runs", "list", "--json", *extra])]
        assert sorted(listed) == run_dirs(home, root)
        assert listed == guild.ids
    for query in INDEX_QUERIES:
        kept = _without_listing(_runq_json(home, ["--no-refresh", "sql", "--json", query]))
        rebuilt = _without_listing(_runq_json(home, ["--index", str(fresh_index), "sql", "--json", query]))
        assert kept == rebuilt, query


def _without_listing(rows):
    """Rows without where they are kept (keys) and `listing`."""
    return [{k: v for k, v in row.items() if k not in ("listing", "key", "run_key")} for row in rows]


def _runq_json(home, args):
    result = CliRunner().invoke(app, ["-H", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------
# Running runs: never let Guild signal a live process
# ---------------------------------------------------------------------------


def _locks(home):
    for root in ROOTS:
        yield from Path(home, root).glob("*/.guild/LOCK*")


def _pid_alive(lock):
    text = lock.read_text().strip()
    return text.isdigit() and Path("/proc", text).exists()


def _assert_nothing_running(home):
    running = [lock for lock in _locks(home) if lock.name == "LOCK.remote" or _pid_alive(lock)]
    assert not running, f"refusing to run `guild runs delete` on a home with running runs: {running[:3]}"
