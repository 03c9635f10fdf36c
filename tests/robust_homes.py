"""Guild homes for the robustness tests: many small runs, made quickly.

A few dozen generated runs are repeated under new run ids with hard links
(no file is copied), so that a cold build of a few thousand runs is long
enough to interrupt and uses the pool of readers, at little cost in time
and disk.
"""

import os
import random
from datetime import datetime
from pathlib import Path

from runq.engine.samplehome import HomeSpec, generate_home

NOW = datetime(2026, 11, 29, 12, 0, 0)


def many_runs_home(root, runs, seed=7, models=60):
    """A home at `root` with `runs` runs (half of them deleted), `models` of them generated."""
    root = Path(root)
    generate_home(root, HomeSpec(runs=models, seed=seed, profile="realistic", sourcecode_files=0), NOW)
    rng = random.Random(seed)
    originals = [root / "runs" / name for name in sorted(os.listdir(root / "runs"))]
    originals += [root / "trash" / "runs" / name for name in sorted(os.listdir(root / "trash" / "runs"))]
    for number in range(runs - len(originals)):
        source = originals[number % len(originals)]
        target = source.parent / f"{rng.getrandbits(128):032x}"
        _link_tree(source, target)
        _shift_times(target / ".guild" / "attrs", number + 1)
    return root


def _shift_times(attrs, microseconds):
    """A copy starts a little after its original: runs rarely share a time."""
    for name in ("initialized", "started"):
        path = attrs / name
        if path.exists():
            value = int(path.read_text()) + microseconds
            path.unlink()  # a hard link: the original keeps its time
            path.write_text(f"{value}\n")


def _link_tree(source, target):
    for dirpath, _, filenames in os.walk(source):
        relative = os.path.relpath(dirpath, source)
        os.makedirs(os.path.join(target, relative), exist_ok=True)
        for name in filenames:
            os.link(os.path.join(dirpath, name), os.path.join(target, relative, name))


def children_of(pid):
    """Pids of a process's children (Linux /proc)."""
    found = []
    for task in _listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


def alive(pid):
    """True while the process runs (a zombie, dead but not yet reaped, is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []
