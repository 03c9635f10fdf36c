"""The SQLite index of a Guild home: creating it and keeping it fresh.

A refresh lists runs/ and trash/runs/, reads runs that are new, re-reads
runs whose stat signature changed, re-checks runs whose status hangs on a
live pid, and forgets runs whose directories are gone. A run moved between
runs/ and trash/runs/ keeps its rows. All changes of one refresh commit
together, so an interrupted refresh leaves the previous state.
"""

import functools
import hashlib
import os
import pickle
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

from . import rundir
from .errors import HomeError
from .executor import register_functions
from .home import DELETED, LIVE

CHILD_TABLES = {
    "attrs": "run_key, name, kind, num, str, folded, json",
    "flags": "run_key, name, kind, num, str, folded, json",
    "scalars": "run_key, prefix, tag, preferred, first_val, first_step, last_val, last_step, "
    "min_val, min_step, max_val, max_step, avg_val, total, count, last_folded",
    "tags": "run_key, tag",
    "comments": "run_key, seq, user, host, body, time",
}
PARALLEL_MIN_RUNS = 200
PARALLEL_STAT_MIN = 4000
CHUNK_RUNS = 50


def schema_text():
    here = Path(__file__).resolve().parent
    for path in (here / "schema.sql", here.parent / "schema.sql"):
        if path.exists():
            return path.read_text()
    raise HomeError("runq is installed without its schema.sql")


class LostWorker(NamedTuple):
    """A process reading runs that died (its runs were read again)."""

    pid: int
    signal: Optional[int]  # what killed it, if a signal did


@dataclass
class RefreshReport:
    added: int = 0
    updated: int = 0
    removed: int = 0
    moved: int = 0
    rechecked: int = 0
    seconds: float = 0.0
    problems: List[Tuple[str, str]] = field(default_factory=list)  # (run id, what)
    lost_workers: List[LostWorker] = field(default_factory=list)


class Index:
    """An open index database for one Guild home."""

    def __init__(self, home, path=None, lock_wait=None):
        self.home = home
        self.path = Path(path) if path else home.default_index_path
        self.conn = _open(self.path, lock_wait)

    def close(self):
        self.conn.close()

    # State

    def meta(self, key, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, **values):
        self.conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [(k, str(v)) for k, v in values.items()]
        )

    def counts(self):
        rows = self.conn.execute("SELECT deleted, COUNT(*) FROM runs GROUP BY deleted").fetchall()
        by_root = dict(rows)
        return by_root.get(LIVE, 0), by_root.get(DELETED, 0)

    # Refresh

    def refresh(self, check=(LIVE, DELETED), progress=None, workers=None):
        """Brings the index up to date with the disk; returns a RefreshReport.

        Signatures are compared only for runs in the roots named by `check`
        (a selection reads one root); new, vanished and moved runs are found
        in both.
        """
        started = time.perf_counter()
        report = RefreshReport()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._refresh(set(check), report, progress, workers)
            report.seconds = time.perf_counter() - started
            self.set_meta(last_refresh=time.time(), last_refresh_seconds=f"{report.seconds:.3f}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return report

    def _refresh(self, check, report, progress, workers):
        # runs/ and trash/runs/ change mtime whenever an entry comes, goes or
        # is renamed: unchanged, their listings cannot hold news.
        stamp = self._roots_stamp()
        new = self._follow_listings(report) if stamp != self.meta("roots_stamp") else []
        changed = self._changed_runs(check, workers)
        report.added, report.updated = len(new), len(changed)
        self._read_and_store(new + changed, report, progress, workers)
        report.rechecked = self._recheck_pids(check, {item[1] for item in changed})
        self.set_meta(roots_stamp=stamp)

    def _roots_stamp(self):
        parts = []
        for deleted in (LIVE, DELETED):
            try:
                st = os.stat(self.home.root_dir(deleted))
            except OSError:
                parts.append("-")
            else:
                parts.append(f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}")
        return " ".join(parts)

    def _follow_listings(self, report):
        """Forgets vanished runs, follows moved ones (their rows stay) and
        listing positions; returns the new run directories to read."""
        known = {row[0]: row[1:] for row in self.conn.execute("SELECT id, deleted, listing FROM runs")}
        on_disk = self._list_roots()
        gone = [run_id for run_id in known if run_id not in on_disk]
        self.delete_rows(gone)
        report.removed = len(gone)
        moved = [(deleted, path, run_id) for run_id, (deleted, _, path) in on_disk.items()
                 if run_id in known and known[run_id][0] != deleted]
        self.conn.executemany("UPDATE runs SET deleted = ?, dir = ? WHERE id = ?", moved)
        report.moved = len(moved)
        self.conn.executemany(
            "UPDATE runs SET listing = ? WHERE id = ?",
            [(listing, run_id) for run_id, (_, listing, _) in on_disk.items()
             if run_id in known and known[run_id][1] != listing],
        )
        return [(path, run_id, deleted, listing) for run_id, (deleted, listing, path) in on_disk.items()
                if run_id not in known and rundir.is_run_dir(path)]

    def _changed_runs(self, check, workers):
        """(dir, id, deleted, listing) of the checked roots' runs whose stat signature changed."""
        roots = ", ".join(str(int(root)) for root in sorted(check)) or "-1"
        candidates = self.conn.execute(
            f"SELECT dir, watched, signature FROM runs INDEXED BY runs_signatures WHERE deleted IN ({roots})"
        ).fetchall()
        changed = changed_signatures(candidates, workers or os.cpu_count() or 1)
        return [
            self.conn.execute(f"SELECT dir, id, deleted, listing FROM runs WHERE deleted IN ({roots}) AND dir = ?", (path,)).fetchone()
            for path in changed
        ]

    def _list_roots(self):
        """{run id: (deleted, listing position, dir)} for both roots."""
        found = {}
        for deleted in (DELETED, LIVE):
            root = str(self.home.root_dir(deleted))
            for position, name in enumerate(_listdir(root)):
                found[name] = (deleted, position, f"{root}/{name}")
        return found

    def _read_and_store(self, to_read, report, progress, workers):
        total = len(to_read)
        done = 0
        for records in _read_runs(to_read, workers, report.lost_workers.append):
            gone = [item for item in records if isinstance(item, str)]
            self.delete_rows(gone)
            records = [r for r in records if not isinstance(r, str)]
            self.write_records(records)
            report.problems += [(r.id, r.run["problems"]) for r in records if r.run["problems"]]
            done += len(records) + len(gone)
            if progress:
                progress(done, total)

    def _recheck_pids(self, check, just_read):
        """Runs whose status hangs on a live pid: running until the pid dies."""
        rows = self.conn.execute("SELECT id, deleted, pid, status FROM runs WHERE pid IS NOT NULL").fetchall()
        changed = 0
        for run_id, deleted, pid, status in rows:
            if run_id in just_read or deleted not in check:
                continue
            current = "running" if rundir.pid_alive(pid) else "error"
            if current != status:
                self.conn.execute("UPDATE runs SET status = ? WHERE id = ?", (current, run_id))
                changed += 1
        return changed

    def recheck(self, run_ids):
        """Re-reads any of these runs whose files changed; forgets vanished ones."""
        rows = {}
        for chunk in _chunks(list(run_ids), 10000):
            query = f"SELECT dir, id, deleted, listing, watched, signature FROM runs WHERE id IN ({', '.join('?' * len(chunk))})"
            rows.update((row[0], row) for row in self.conn.execute(query, chunk))
        candidates = [(path, watched, old) for path, _, _, _, watched, old in rows.values()]
        changed = [rows[path][:4] for path in changed_signatures(candidates, os.cpu_count() or 1)]
        if changed:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self._read_and_store(changed, RefreshReport(), None, None)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return len(changed)

    def decode_lazy(self, names):
        """Reads and decodes the large attributes a filter names, once."""
        for name in sorted(names):
            rows = self.conn.execute(
                "SELECT a.run_key, r.dir FROM attrs AS a JOIN runs AS r ON r.key = a.run_key"
                " WHERE a.name = ? AND a.kind = 'raw'",
                (name,),
            ).fetchall()
            if not rows:
                continue
            decoded = [(*rundir.read_attr_value(path, name), key, name) for key, path in rows]
            with self.conn:
                self.conn.executemany(
                    "UPDATE attrs SET kind = ?, num = ?, str = ?, folded = ?, json = ? WHERE run_key = ? AND name = ?",
                    decoded,
                )

    # Writing rows

    def write_records(self, records):
        if not records:
            return
        self.delete_rows(self._indexed([r.id for r in records]))
        self._assign_keys(records)
        columns = rundir.RUN_FIELDS
        self.conn.executemany(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(r.run[c] for c in columns) for r in records],
        )
        for table, rows in _child_rows(records).items():
            placeholders = ", ".join("?" * len(CHILD_TABLES[table].split(",")))
            self.conn.executemany(f"INSERT OR IGNORE INTO {table} ({CHILD_TABLES[table]}) VALUES ({placeholders})", rows)

    def _indexed(self, run_ids):
        """The ones of these runs the index holds."""
        query = f"SELECT id FROM runs WHERE id IN ({', '.join('?' * len(run_ids))})"
        return [row[0] for row in self.conn.execute(query, run_ids)] if run_ids else []

    def _assign_keys(self, records):
        """Keys after the runs' timestamps, bumped past keys already taken."""
        taken = set()
        wanted = [_key_for(r.run["timestamp"]) for r in records]
        for chunk in _chunks(sorted(set(wanted)), 10000):
            query = f"SELECT key FROM runs WHERE key IN ({', '.join('?' * len(chunk))})"
            taken.update(row[0] for row in self.conn.execute(query, chunk))
        for record, key in zip(records, wanted):
            first = key
            while key in taken or (key != first and self._key_used(key)):  # bumped keys were not looked up
                key += 1
            taken.add(key)
            record.run["key"] = key

    def _key_used(self, key):
        return self.conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is not None

    def delete_rows(self, run_ids):
        ids = [(run_id,) for run_id in run_ids]
        if not ids:
            return
        for table in CHILD_TABLES:
            self.conn.executemany(f"DELETE FROM {table} WHERE run_key = (SELECT key FROM runs WHERE id = ?)", ids)
        self.conn.executemany("DELETE FROM runs WHERE id = ?", ids)

    def move_rows(self, run_ids, deleted):
        self.conn.executemany(
            "UPDATE runs SET deleted = ?, dir = ? WHERE id = ?",
            [(deleted, str(self.home.run_dir(run_id, deleted)), run_id) for run_id in run_ids],
        )


def _key_for(timestamp):
    return int(timestamp) if isinstance(timestamp, (int, float)) and timestamp > 0 else 1


def _child_rows(records):
    rows = {table: [] for table in CHILD_TABLES}
    for record in records:
        key = record.run["key"]
        rows["attrs"] += [(key, *row) for row in record.attrs]
        rows["flags"] += [(key, *row) for row in record.flags]
        rows["scalars"] += [(key, *row) for row in record.scalars]
        rows["tags"] += [(key, tag) for tag in record.tags]
        rows["comments"] += [(key, *row) for row in record.comments]
    return rows


# Reading runs, in parallel when there are many


def changed_signatures(candidates, workers):
    """Paths of the (path, watched, old signature) candidates whose signature
    changed. The stat calls are split with a forked child: they are most of a
    refresh, and threads do not help (the GIL is held between calls)."""
    if workers < 2 or len(candidates) < PARALLEL_STAT_MIN or not hasattr(os, "fork"):
        return _changed(candidates)
    half = len(candidates) // 2
    child = _fork_changed(candidates[half:])
    try:
        mine = _changed(candidates[:half])
        theirs = _collect(child)
    except BaseException:
        _stop_children([child[0]])
        raise
    return mine + (_changed(candidates[half:]) if theirs is None else theirs)


def _changed(candidates):
    signature = rundir.signature
    return [path for path, watched, old in candidates if signature(path, watched) != old]


def _fork_changed(candidates):
    """Starts a child that writes the changed paths to a pipe; (pid, read end)."""
    read_fd, write_fd = os.pipe()
    pid = _start_child(_write_changed, candidates, write_fd, close=[read_fd])
    os.close(write_fd)
    return pid, read_fd


def _write_changed(candidates, write_fd):
    with os.fdopen(write_fd, "wb") as out:
        out.write("\0".join(_changed(candidates)).encode("utf-8", "surrogateescape"))


def _collect(child):
    """The child's changed paths, or None when it failed."""
    pid, read_fd = child
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return None
    text = data.decode("utf-8", "surrogateescape")
    return text.split("\0") if text else []


def _chunks(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


def _read_runs(to_read, workers, on_lost_worker=None):
    """Yields lists of RunRecords (or the ids of dirs that are not runs), chunk by chunk, in order."""
    chunks = _chunks(to_read, CHUNK_RUNS)
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    if len(to_read) < PARALLEL_MIN_RUNS or workers < 2 or not hasattr(os, "fork"):
        yield from map(_read_chunk, chunks)
        return
    try:
        pool = _ReaderPool(chunks, workers)
    except OSError:  # no process to spare (EAGAIN, ENOMEM): read them here
        yield from map(_read_chunk, chunks)
        return
    try:
        yield from pool.results(on_lost_worker or (lambda lost: None))
    finally:
        pool.close()


class _ReaderPool:
    """Forked workers reading runs: worker k reads chunks k, k + n, k + 2n...
    and sends each as it is read, so chunk i is read from worker i % n's pipe
    in turn. A worker that dies (the OOM killer, a kill) only costs time:
    this process reads the chunks it did not send."""

    def __init__(self, chunks, workers):
        self.chunks = chunks
        self.pids, self.pipes = [], []
        try:
            for first in range(workers):
                self._start(chunks[first::workers])
        except BaseException:
            self.close()
            raise

    def _start(self, chunks):
        read_fd, write_fd = os.pipe()
        inherited = [pipe.fileno() for pipe in self.pipes]
        try:
            pid = _start_child(_serve_chunks, chunks, write_fd, close=[read_fd, *inherited])
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.pids.append(pid)
        self.pipes.append(os.fdopen(read_fd, "rb"))

    def results(self, on_lost_worker):
        workers = len(self.pipes)
        for number, chunk in enumerate(self.chunks):
            worker = number % workers
            records = _receive(self.pipes[worker]) if self.pipes[worker] else None
            if records is None:
                records = _read_chunk(chunk)
                if self.pipes[worker]:
                    on_lost_worker(self._lose(worker))
            yield records

    def _lose(self, worker):
        """Forgets a worker that stopped sending; what ended it."""
        self.pipes[worker].close()
        self.pipes[worker] = None
        pid, self.pids[worker] = self.pids[worker], None
        status = _stop_children([pid]).get(pid, 0)
        return LostWorker(pid, os.WTERMSIG(status) if os.WIFSIGNALED(status) else None)

    def close(self):
        for pipe in self.pipes:
            if pipe:
                pipe.close()  # a worker still writing gets EPIPE and ends
        _stop_children([pid for pid in self.pids if pid])


def _serve_chunks(chunks, write_fd):
    parent = os.getppid()
    with os.fdopen(write_fd, "wb") as out:
        for chunk in chunks:
            data = pickle.dumps(_read_chunk(chunk), protocol=pickle.HIGHEST_PROTOCOL)
            if os.getppid() != parent:  # orphaned where no death signal is sent: stop
                return
            out.write(len(data).to_bytes(8, "little"))
            out.write(data)
            out.flush()


def _receive(pipe):
    """The next records a worker sent, or None when it died first."""
    size = pipe.read(8)
    if len(size) < 8:
        return None
    data = pipe.read(int.from_bytes(size, "little"))
    return pickle.loads(data) if len(data) == int.from_bytes(size, "little") else None


def _read_chunk(items):
    records = []
    for path, run_id, deleted, listing in items:
        try:
            record = rundir.read_run(path, run_id, deleted, listing)
        except Exception as e:  # an unreadable run is indexed, never fatal
            record = rundir.unreadable_run(path, run_id, deleted, listing, e)
        records.append(record if record is not None else run_id)
    return records


# Forked children: they die with this process and never hold its output


STOPPING_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PR_SET_PDEATHSIG = 1


def _start_child(body, *args, close=()):
    """Forks a child that runs body(*args) and exits; returns its pid.

    The child is killed when this process dies, even by SIGKILL (Linux's
    parent-death signal; elsewhere it ends when its pipe breaks), leaves
    Ctrl-C to this process, and writes nothing to the caller's terminal or
    pipes, so that `runq ... | cat` ends when runq ends."""
    parent = os.getpid()
    set_death_signal = _death_signal_setter()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING_SIGNALS)  # none may reach the child before it is set up
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING_SIGNALS)
        raise
    if pid == 0:
        status = 1
        try:
            _become_child(parent, set_death_signal, close)
            body(*args)
            status = 0
        finally:
            os._exit(status)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING_SIGNALS)
    return pid


def _become_child(parent, set_death_signal, close):
    set_death_signal()
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING_SIGNALS)
    for fd in close:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


@functools.cache
def _death_signal_setter():
    """A function asking the kernel to SIGKILL the calling child when its parent dies (Linux)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # not Linux: children watch their pipes and parent pid
        return lambda: None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _stop_children(pids):
    """Kills and reaps children (already gone ones are only reaped); {pid: wait status}."""
    statuses = {}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            statuses[pid] = os.waitpid(pid, 0)[1]
        except ChildProcessError:
            pass
    return statuses


# The database file


def _open(path, lock_wait=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = schema_text()
    version = hashlib.sha256(schema.encode()).hexdigest()[:16]
    conn = _connect(path, lock_wait)
    if _schema_version(conn) != version:
        conn.close()
        remove_index_files(path)
        conn = _connect(path, lock_wait)
        _create(conn, schema, version)
    return conn


def _connect(path, lock_wait=None):
    lock_wait = lock_wait or LockWait()
    try:
        conn = sqlite3.connect(
            path,
            timeout=min(LOCK_WAIT_SLICE, lock_wait.seconds),
            isolation_level=None,
            check_same_thread=False,
            factory=_WaitingConnection,
        )
        conn.wait_for_lock(path, lock_wait)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MB: big refreshes touch pages across the index
    except sqlite3.Error as e:
        raise HomeError(f"cannot open the index {path}: {e}") from None
    register_functions(conn)
    return conn


# Waiting for another process's lock


LOCK_WAIT_SLICE = 0.5  # SQLite waits this long at a time, then runq says it waits


@dataclass(frozen=True)
class LockWait:
    """How long to wait for another process holding the index's write lock,
    and whom to tell (called once, with the index path and the limit)."""

    seconds: float = 60.0
    on_wait: Optional[object] = None


class IndexLocked(HomeError):
    """Another process kept the index locked longer than runq would wait."""


class _WaitingConnection(sqlite3.Connection):
    """Retries a statement that found the database locked, SQLite waiting a
    slice at a time, until the limit: so a wait is announced early, and
    ends with one clear error rather than a long silence."""

    def wait_for_lock(self, path, lock_wait):
        self.path, self.lock_wait = path, lock_wait

    def execute(self, *args):
        return self._waiting(super().execute, args)

    def executemany(self, sql, rows):
        if not isinstance(rows, (list, tuple)):  # an iterator cannot be replayed
            return super().executemany(sql, rows)
        return self._waiting(super().executemany, (sql, rows))

    def _waiting(self, call, args):
        started = announced = None
        while True:
            try:
                return call(*args)
            except sqlite3.OperationalError as e:
                if not str(e).startswith("database is locked"):
                    raise
                started = started or time.monotonic() - min(LOCK_WAIT_SLICE, self.lock_wait.seconds)
                if time.monotonic() - started >= self.lock_wait.seconds:
                    raise self._locked() from None
                announced = announced or self._announce()

    def _announce(self):
        if self.lock_wait.on_wait:
            self.lock_wait.on_wait(self.path, self.lock_wait.seconds)
        return True

    def _locked(self):
        return IndexLocked(
            f"gave up after {self.lock_wait.seconds:g} s: another process still holds the index {self.path}",
            hint="wait longer with --lock-timeout SECONDS or RUNQ_LOCK_TIMEOUT",
        )


def _schema_version(conn):
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _create(conn, schema, version):
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    db.executescript(schema)
    db["meta"].insert({"key": "schema_version", "value": version}, replace=True)


def remove_index_files(path):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(f"{path}{suffix}")
        except FileNotFoundError:
            pass


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []
