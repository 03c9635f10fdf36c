"""Moving and removing run directories: purge, delete and restore.

Removal happens in two steps so that the index and the disk always agree,
even if the process dies: selected runs are first renamed out of their
root into a purge area inside the home's trash (`trash/runq-purging/`),
which Guild does not read, and their index rows are deleted in the same
step; only then are the directories unlinked. Whatever is left in the
purge area by an interrupted run is unlinked by the next runq command
(`finish_pending`); a batch whose purge is still running is left to it.
With `background`, a detached `python -m runq.engine.purge` does the unlinking
and the command returns as soon as the renames are committed.

Only direct children of `runs/` or `trash/runs/` named like the selected
run are ever moved; a run directory that is a symbolic link is unlinked as
a link, never followed.
"""

import os
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from .errors import RunqError
from .home import DELETED, LIVE
from .rundir import disk_path, pid_alive


@dataclass
class RemovalReport:
    removed: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # gone before they could be moved
    failed: List[tuple] = field(default_factory=list)  # (run id, why) left in place
    bytes_freed: int = 0


def remove_runs(index, run_ids, deleted, progress=None, background=False):
    """Permanently removes runs of one root (trash for purge); returns a RemovalReport
    (without bytes freed when the unlinking goes on in the background)."""
    home = index.home
    batch = _new_batch_dir(home)
    report = RemovalReport()
    index.conn.execute("BEGIN IMMEDIATE")
    try:
        for run_id in run_ids:
            src = _run_path(home, run_id, deleted)
            try:
                os.rename(src, batch / run_id)
            except FileNotFoundError:
                report.missing.append(run_id)
            except OSError as e:
                report.failed.append((run_id, e.strerror or str(e)))
            else:
                report.removed.append(run_id)
        index.delete_rows(report.removed + report.missing)
        index.conn.execute("COMMIT")
    except BaseException:
        index.conn.execute("ROLLBACK")
        raise
    if background:
        unlink_in_background(batch)
    else:
        report.bytes_freed = unlink_batch(batch, progress)
    return report


def move_runs(index, run_ids, to_deleted):
    """Moves runs between runs/ and trash/runs/ (delete to trash, restore)."""
    home = index.home
    moved = []
    index.conn.execute("BEGIN IMMEDIATE")
    try:
        for run_id in run_ids:
            if _move_run(_run_path(home, run_id, not to_deleted), _run_path(home, run_id, to_deleted)):
                moved.append(run_id)
        index.move_rows(moved, DELETED if to_deleted else LIVE)
        index.conn.execute("COMMIT")
    except BaseException:
        index.conn.execute("ROLLBACK")
        raise
    return moved


def _move_run(src, dest):
    """Moves one run directory; False when it is gone (the next refresh forgets it)."""
    if not os.path.lexists(src):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        _move_aside(dest)
    try:
        os.rename(src, dest)
    except FileNotFoundError:
        return False
    return True


def _move_aside(path):
    """Guild's rule when a destination exists: keep it under a backup name."""
    fd, backup = tempfile.mkstemp(prefix=f"{path.name}_", dir=path.parent)
    os.close(fd)
    os.remove(backup)
    os.rename(path, backup)


def _run_path(home, run_id, deleted):
    if not run_id or run_id in (".", "..") or "/" in run_id or "\0" in run_id:
        raise RunqError(f"refusing to touch a run named {run_id!r}")
    return Path(disk_path(str(home.root_dir(deleted) / run_id)))


# The purge area


def _new_batch_dir(home):
    # Named after the purging process, so that other runq commands leave the
    # batch to it while it is alive (see finish_pending).
    batch = home.purge_dir / f"{os.getpid()}-{uuid.uuid4().hex}"
    batch.mkdir(parents=True)
    return batch


def _purge_in_progress(batch_name):
    """Whether another live process is still unlinking this batch."""
    pid = batch_name.split("-", 1)[0]
    return pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))


def unlink_batch(batch, progress=None):
    """Unlinks every run in a purge batch, then the batch; returns bytes freed."""
    entries = sorted(os.listdir(batch))
    freed = 0
    for done, name in enumerate(entries, 1):
        freed += _unlink_tree(batch / name)
        if progress:
            progress(done, len(entries))
    os.rmdir(batch)
    return freed


def _unlink_tree(path):
    """Removes a run directory (or the link standing for it); returns bytes freed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(st.st_mode):  # a file, or a link (never followed)
        os.unlink(path)
        return st.st_blocks * 512
    freed = 0
    for entry in os.scandir(path):
        freed += _unlink_entry(entry)
    os.rmdir(path)
    return freed + st.st_blocks * 512


def _unlink_entry(entry):
    if entry.is_dir(follow_symlinks=False):
        return _unlink_tree(Path(entry.path))
    try:
        size = entry.stat(follow_symlinks=False).st_blocks * 512
        os.unlink(entry.path)
    except FileNotFoundError:
        return 0
    return size


def finish_pending(home):
    """Unlinks what interrupted purges left in the purge area (not the batches
    of purges still running); returns runs unlinked."""
    try:
        batches = os.listdir(home.purge_dir)
    except FileNotFoundError:
        return 0
    count = 0
    for name in batches:
        if _purge_in_progress(name):
            continue
        batch = home.purge_dir / name
        count += len(os.listdir(batch)) if batch.is_dir() else 0
        if batch.is_dir() and not batch.is_symlink():
            unlink_batch(batch)
        else:
            os.unlink(batch)
    return count


def unlink_in_background(batch):
    """Hands a batch to a detached process. The batch is renamed after that
    process before it starts, so other runq commands leave it alone while it
    lives, and finish it if it dies."""
    child = subprocess.Popen(
        [sys.executable, "-m", "runq.engine.purge"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    claimed = batch.with_name(f"{child.pid}-{batch.name.split('-', 1)[-1]}")
    os.rename(batch, claimed)
    child.stdin.write(os.fsencode(claimed))
    child.stdin.close()
    child.returncode = 0  # not waited for: it outlives this command


def _unlink_named_batch():
    """`python -m runq.engine.purge`: unlinks the batch whose path arrives on stdin."""
    path = Path(os.fsdecode(sys.stdin.buffer.read()))
    if path.name and path.is_dir():
        unlink_batch(path)


# Stopping runs before deleting them, as Guild does


def stop_run(pid):
    """Asks a run's process to stop. Never signals init or runq itself."""
    if pid is None or pid <= 1 or pid == os.getpid() or not pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True


if __name__ == "__main__":
    _unlink_named_batch()
