"""Moving and removing run directories: purge, delete and restore.

Removal happens in two steps so that the index and the disk always agree,
even if the process dies: selected runs are first renamed out of their
root into a batch of the purge area inside the home's trash
(`trash/runq-purging/<batch>/`), which Guild does not read, and their index
rows are deleted in the same step; only then are the directories unlinked.
The process working on a batch holds a lock on it (flock on the batch
directory); whatever an interrupted purge left in an unlocked batch is
unlinked by the next runq command (`finish_pending`), and the purge area is
removed once empty. With `background`, a detached `python -m
runq.engine.purge` inherits the lock and does the unlinking, and the
command returns as soon as the renames are committed.

Only direct children of `runs/` or `trash/runs/` named like the selected
run are ever moved; a run directory that is a symbolic link is unlinked as
a link, never followed; unlinking never enters another file system (a
mount point inside a run is left in place and reported). The purge area
must be a real directory runq made: a link or a file there is refused,
never followed. Moves between file systems copy, verify, then remove.
"""

import errno
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from .errors import HomeError, RunqError
from .home import DELETED, LIVE
from .rundir import disk_path, pid_alive

KILL_AT_ENV = "RUNQ_TEST_KILL_AT"
UNLINK_THREADS = 4  # runs unlinked at once (4 halve the time of one on 2 cores)


@dataclass
class RemovalReport:
    removed: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # gone before they could be moved
    failed: List[tuple] = field(default_factory=list)  # (run id, why) left in place
    left: List[str] = field(default_factory=list)  # paths on other file systems, not entered
    in_place: bool = False  # the purge area is on another file system: unlinked where they were
    bytes_freed: int = 0


@dataclass
class MoveReport:
    moved: List[str] = field(default_factory=list)
    failed: List[tuple] = field(default_factory=list)  # (run id, why) left where they were


def kill_point(name):
    """A place where tests kill runq as a crash would: with
    RUNQ_TEST_KILL_AT=<name> (or <name>#<n>, the n-th time), SIGKILL."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    with _kill_lock:  # unlinking threads reach points at once
        _times_reached[name] = _times_reached.get(name, 0) + 1
        if _times_reached[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


_times_reached = {}
_kill_lock = threading.Lock()


def remove_runs(index, run_ids, deleted, progress=None, background=False):
    """Permanently removes runs of one root (trash for purge); returns a RemovalReport
    (without bytes freed when the unlinking goes on in the background)."""
    home = index.home
    area = purge_area(home, home.root_dir(deleted))
    if area is None:
        _remove_if_empty(home.purge_dir)
        return _remove_in_place(index, run_ids, deleted, progress)
    batch, lock = _new_batch(area)
    try:
        report = _move_into_batch(index, run_ids, deleted, batch)
        if background:
            unlink_in_background(batch, lock)
        else:
            report.bytes_freed, report.left = unlink_batch(batch, progress)
            _remove_if_empty(area)
    finally:
        os.close(lock)
    return report


def _move_into_batch(index, run_ids, deleted, batch):
    report = RemovalReport()
    index.conn.execute("BEGIN IMMEDIATE")
    try:
        for run_id in run_ids:
            _rename_into(_run_path(index.home, run_id, deleted), batch / run_id, run_id, report)
            kill_point("moved")
        index.delete_rows(report.removed + report.missing)
        kill_point("before-commit")
        index.conn.execute("COMMIT")
    except BaseException:
        index.conn.execute("ROLLBACK")
        raise
    kill_point("committed")
    return report


def _rename_into(src, dest, run_id, report):
    try:
        os.rename(src, dest)
    except FileNotFoundError:
        report.missing.append(run_id)
    except OSError as e:
        report.failed.append((run_id, e.strerror or str(e)))
    else:
        report.removed.append(run_id)


def _remove_in_place(index, run_ids, deleted, progress):
    """Without a purge area on the runs' file system: forget, then unlink each
    run where it is, its opref first so that a half-removed run is no run."""
    home = index.home
    report = RemovalReport(in_place=True)
    index.conn.execute("BEGIN IMMEDIATE")
    try:
        index.delete_rows(run_ids)
        index.conn.execute("COMMIT")
    except BaseException:
        index.conn.execute("ROLLBACK")
        raise
    for done, run_id in enumerate(run_ids, 1):
        _unlink_in_place(_run_path(home, run_id, deleted), run_id, report)
        if progress:
            progress(done, len(run_ids))
    return report


def _unlink_in_place(path, run_id, report):
    if not os.path.lexists(path):
        report.missing.append(run_id)
        return
    try:
        device = _device(path.parent)
        if _device(path) == device and not os.path.islink(path):
            _unlink_quietly(path / ".guild" / "opref")
        freed, left = _unlink_tree(path, device)
    except OSError as e:
        report.failed.append((run_id, e.strerror or str(e)))
        return
    report.removed.append(run_id)
    report.bytes_freed += freed
    report.left += left


def move_runs(index, run_ids, to_deleted):
    """Moves runs between runs/ and trash/runs/ (delete to trash, restore); returns a MoveReport."""
    home = index.home
    report = MoveReport()
    index.conn.execute("BEGIN IMMEDIATE")
    try:
        for run_id in run_ids:
            _move_one(_run_path(home, run_id, not to_deleted), _run_path(home, run_id, to_deleted), run_id, report)
            kill_point("moved")
        index.move_rows(report.moved, DELETED if to_deleted else LIVE)
        kill_point("before-commit")
        index.conn.execute("COMMIT")
    except BaseException:
        index.conn.execute("ROLLBACK")
        raise
    return report


def _move_one(src, dest, run_id, report):
    try:
        how = _move_run(src, dest)
    except OSError as e:
        report.failed.append((run_id, e.strerror or str(e)))
        return
    if how:
        report.moved.append(run_id)


def _move_run(src, dest):
    """Moves one run directory: "renamed", "copied" (across file systems), or
    None when it is gone (the next refresh forgets it)."""
    if not os.path.lexists(src):
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        _move_aside(dest)
    try:
        os.rename(src, dest)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        _copy_across(src, dest)
        return "copied"
    return "renamed"


def _copy_across(src, dest):
    """What rename cannot do across file systems (Guild's shutil.move):
    copy under a hidden name (opref last: no run until complete), verify,
    put in place, then remove the source."""
    partial = dest.with_name(f".{dest.name}.runq-copy")
    if os.path.lexists(partial):
        _unlink_tree(partial, _device(partial.parent))
    if os.path.islink(src):
        os.symlink(os.readlink(src), partial)
    else:
        shutil.copytree(src, partial, symlinks=True, ignore=_opref_at_top(src))
        opref = Path(src, ".guild", "opref")
        if opref.exists():
            shutil.copy2(opref, partial / ".guild" / "opref")
    kill_point("copied")
    if _contents(src) != _contents(partial):
        _unlink_tree(partial, _device(partial.parent))
        raise OSError(errno.EIO, "the copy on the other file system differs from the run; the run was left in place")
    os.rename(partial, dest)
    kill_point("copy-in-place")
    _unlink_tree(src, _device(src))


def _opref_at_top(src):
    guild_dir = os.path.join(src, ".guild")
    return lambda path, names: ["opref"] if os.path.abspath(path) == os.path.abspath(guild_dir) else []


def _contents(path):
    """{relative path: (kind, size or link target)} of everything under path, links not followed."""
    if os.path.islink(path):
        return {".": ("link", os.readlink(path))}
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[os.path.relpath(full, path)] = ("link", os.readlink(full))
            else:
                found[os.path.relpath(full, path)] = ("dir", 0) if stat.S_ISDIR(st.st_mode) else ("file", st.st_size)
    return found


def _move_aside(path):
    """Guild's rule when a destination exists: keep it under a backup name."""
    import tempfile  # rarely needed; every command imports this module

    fd, backup = tempfile.mkstemp(prefix=f"{path.name}_", dir=path.parent)
    os.close(fd)
    os.remove(backup)
    os.rename(path, backup)


def _run_path(home, run_id, deleted):
    if not run_id or run_id in (".", "..") or "/" in run_id or "\0" in run_id:
        raise RunqError(f"refusing to touch a run named {run_id!r}")
    return Path(disk_path(str(home.run_dir(run_id, deleted))))


def _device(path):
    return os.lstat(path).st_dev


# The purge area

KINDS = {stat.S_IFLNK: "a symbolic link", stat.S_IFREG: "a file"}


def purge_area(home, source_root):
    """The purge area (made if needed), or None when it is on another file
    system than source_root, where renaming into it is impossible.
    Anything but a real directory there is refused, never followed."""
    area = home.purge_dir
    area.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(area)
    except FileExistsError:
        pass
    st = os.lstat(area)
    if not stat.S_ISDIR(st.st_mode):
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "not a directory")
        raise HomeError(
            f"{area} is {kind}, not the directory runq keeps runs being purged in; nothing was changed",
            hint="move it away (runq never follows or empties it), then run the command again",
        )
    return area if st.st_dev == os.stat(source_root).st_dev else None


def _new_batch(area):
    """(batch dir, fd holding its lock). A batch is locked from its birth:
    one that another command removed before the lock was taken is made again."""
    for _ in range(10):
        batch = area / uuid.uuid4().hex
        try:
            os.mkdir(batch)
        except FileNotFoundError:  # the area was removed as empty meanwhile
            os.makedirs(area, exist_ok=True)
            continue
        lock = _locked(batch, block=True)
        if lock is not None:
            return batch, lock
    raise HomeError(f"cannot make a batch in {area}: it keeps vanishing")


def _locked(batch, block=False):
    """An fd holding batch's lock, or None when another process holds it or
    the batch is gone."""
    try:
        fd = os.open(batch, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        if os.fstat(fd).st_ino != os.lstat(batch).st_ino:
            raise FileNotFoundError(batch)
    except OSError:
        os.close(fd)
        return None
    return fd


def unlink_batch(batch, progress=None):
    """Unlinks every run in a purge batch, then the batch; returns (bytes
    freed, paths left because they are on another file system). Runs are
    unlinked by a few threads at once: the kernel's work for one directory
    does not wait for another's."""
    try:
        entries = sorted(os.listdir(batch))
        device = _device(batch)
    except FileNotFoundError:  # finished by another command
        return 0, []
    freed, left = 0, []
    paths = [batch / name for name in entries]
    for done, (run_freed, run_left) in enumerate(_each_unlinked(paths, device), 1):
        freed, left = freed + run_freed, left + run_left
        kill_point("unlinked")
        if progress:
            progress(done, len(entries))
    if not left:
        _rmdir_quietly(batch)
    return freed, left


def _each_unlinked(paths, device):
    """(bytes freed, paths left) of each run as it is unlinked, in the order they finish."""
    if len(paths) < 2:
        yield from (_unlink_tree(path, device) for path in paths)
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed  # only a purge needs them

    with ThreadPoolExecutor(UNLINK_THREADS) as pool:
        futures = [pool.submit(_unlink_tree, path, device) for path in paths]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # a failure stops the runs not yet begun; those begun finish
            for future in futures:
                future.cancel()


def _unlink_tree(path, device):
    """Removes a run directory (or the link standing for it) without leaving
    the file system `device`; returns (bytes freed, paths left)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, []
    if not stat.S_ISDIR(st.st_mode):  # a file, or a link (never followed)
        return (st.st_blocks * 512 if _unlink_quietly(path) else 0), []
    if st.st_dev != device:
        return 0, [str(path)]
    fd = _open_dir(path)
    if fd is None:  # gone, or no longer a directory: a link or file now, unlinked as such
        _unlink_quietly(path)
        return 0, []
    try:
        freed, left = _unlink_contents(fd, str(path), device)
    finally:
        os.close(fd)
    kill_point("unlinking")
    if not left:
        _rmdir_quietly(path)
    return freed + st.st_blocks * 512, left


def _unlink_contents(dir_fd, path, device):
    """Unlinks what the open directory `dir_fd` (at `path`) holds, by names
    relative to it: no path is looked up again from the root for each file."""
    freed, left = 0, []
    with os.scandir(dir_fd) as it:
        names = [entry.name for entry in it]
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            if _unlink_quietly(name, dir_fd):
                freed += st.st_blocks * 512
            continue
        if st.st_dev != device:
            left.append(os.path.join(path, name))
            continue
        sub_fd = _open_dir(name, dir_fd)
        if sub_fd is None:  # gone, or replaced by a link or file since its stat
            _unlink_quietly(name, dir_fd)
            continue
        try:
            sub_freed, sub_left = _unlink_contents(sub_fd, os.path.join(path, name), device)
        finally:
            os.close(sub_fd)
        kill_point("unlinking")
        freed, left = freed + sub_freed + st.st_blocks * 512, left + sub_left
        if not sub_left:
            _rmdir_quietly(name, dir_fd)
    return freed, left


def _open_dir(path, dir_fd=None):
    """An fd of the directory `path`, never through a link; None when it is
    gone or no longer a directory (a link there fails with ENOTDIR or ELOOP)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _unlink_quietly(path, dir_fd=None):
    """Unlinks a file; False when it was already gone (another command got there first)."""
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _rmdir_quietly(path, dir_fd=None):
    try:
        os.rmdir(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _remove_if_empty(area):
    try:
        os.rmdir(area)
    except OSError:  # not empty (another batch), or already gone
        pass


def finish_pending(home):
    """Unlinks what interrupted purges left in the purge area (not the batches
    other processes hold), then removes the area if empty; returns runs unlinked.
    Leaves alone a purge area that is not a real directory."""
    area = home.purge_dir
    try:
        if not stat.S_ISDIR(os.lstat(area).st_mode):
            return 0
        batches = os.listdir(area)
    except FileNotFoundError:
        return 0
    count = sum(_finish_batch(area / name) for name in batches)
    _remove_if_empty(area)
    return count


def _finish_batch(batch):
    if not batch.is_dir() or batch.is_symlink():
        _unlink_quietly(batch)
        return 0
    lock = _locked(batch)
    if lock is None:  # its purge is still running, or it is gone
        return 0
    try:
        count = len(os.listdir(batch))
        unlink_batch(batch)
    except FileNotFoundError:
        count = 0
    finally:
        os.close(lock)
    return count


def unlink_in_background(batch, lock):
    """Hands a batch to a detached process, which inherits its lock: other
    runq commands leave the batch alone while that process lives, and
    finish it if it dies."""
    child = subprocess.Popen(
        [sys.executable, "-m", "runq.engine.purge"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        pass_fds=(lock,),
    )
    child.stdin.write(os.fsencode(batch))
    child.stdin.close()
    kill_point("background-started")
    child.returncode = 0  # not waited for: it outlives this command


def _unlink_named_batch():
    """`python -m runq.engine.purge`: unlinks the batch whose path arrives on
    stdin, holding its lock (an inherited fd)."""
    path = Path(os.fsdecode(sys.stdin.buffer.read()))
    if path.name and path.is_dir():
        unlink_batch(path)
        _remove_if_empty(path.parent)


# Stopping runs before deleting them, as Guild does

# Guild writes a run's `started`, then starts its process (LOCK holds that
# pid): a process that started well after the run is not the run's, it has
# a pid reused since the run died.
PROCESS_START_SLACK_US = 30_000_000


def stop_run(pid, run_dir, run_id, started):
    """Asks a run's process to stop; never signals init, runq itself, or a
    process that is not the run's. Returns "stopped", "gone" or "not-ours"."""
    if pid is None or pid <= 1 or pid == os.getpid() or not pid_alive(pid):
        return "gone"
    if not process_is_runs(pid, run_dir, run_id, started):
        return "not-ours"
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return "gone"
    return "stopped"


def process_is_runs(pid, run_dir, run_id, started):
    """Whether process pid belongs to the run: its command line or working
    directory names the run, or it started no later than the run (with slack)."""
    if _names_run(pid, str(run_dir), run_id):
        return True
    began = process_start_us(pid)
    return began is not None and started is not None and began <= started + PROCESS_START_SLACK_US


def _names_run(pid, run_dir, run_id):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = os.fsdecode(f.read())
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return run_id in cmdline or run_dir in cmdline or cwd == run_dir


def process_start_us(pid):
    """When process pid started (µs since the epoch), from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
    except (OSError, IndexError, ValueError):
        return None
    boot = _boot_time()
    return None if boot is None else int((boot + ticks / os.sysconf("SC_CLK_TCK")) * 1e6)


def _boot_time():
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


if __name__ == "__main__":
    _unlink_named_batch()
