"""The SQLite index of a Guild home: creating it and keeping it fresh.

A refresh lists runs/ and trash/runs/, reads runs that are new, re-reads
runs whose stat signature changed, re-checks runs whose status hangs on a
live pid, and forgets runs whose directories are gone. A run moved between
runs/ and trash/runs/ keeps its rows. All changes of one refresh commit
together, so an interrupted refresh leaves the previous state.
"""

import contextlib
import functools
import fcntl
import os
import re
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

from . import rundir, watch
from .digest import sha256
from .errors import HomeError
from .executor import register_functions
from .home import DELETED, LIVE
from .values import storable_text

CHILD_TABLES = {
    "attrs": "run_key, name, kind, num, str, folded, json",
    "flags": "run_key, name, kind, num, str, folded, json",
    "scalars": "run_key, prefix, tag, preferred, first_val, first_step, last_val, last_step, "
    "min_val, min_step, max_val, max_step, avg_val, total, count, last_folded",
    "tags": "run_key, tag",
    "comments": "run_key, seq, user, host, body, time",
}
PARALLEL_MIN_RUNS = 200
# A refresh of an empty index reading at least this many runs is a large
# first build: it leaves reading the runs' event files (and, for finished
# runs, searching their directories for them) to the first command whose
# selection uses scalars (Index.read_pending_scalars),
# as Guild's own scalar cache waits for a filter that needs it (most
# commands never do), and it writes with bulk-load settings (_bulk_load).
LARGE_BUILD_RUNS = 1000
SOME_PENDING, NONE_PENDING = "some", "none"  # meta scalars_pending: whether any run's event files wait
CACHE_KIB = 32768  # SQLite's page cache: big refreshes touch pages across the index
BULK_CACHE_KIB_PER_RUN = 6  # about what a run's rows take in the index
BULK_CACHE_MAX_KIB = 65536  # peak memory of a 100,000-run build stays under 250 MB
PARALLEL_STAT_MIN = 4000
CHUNK_RUNS = 50
PIPE_BYTES = 1 << 20  # a reading worker's pipe (Linux's default limit for any user, fs.pipe-max-size)
APPLICATION_ID = 0x72756E71  # "runq": PRAGMA application_id of every index runq creates
SQLITE_MAGIC = b"SQLite format 3\0"
UNMARKED = "an SQLite database without runq's application id"
LOCK_WAIT_SECONDS = 120


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
    checked: int = 0  # runs whose stat signatures were compared
    watcher: bool = False  # a watcher said which runs changed
    seconds: float = 0.0
    problems: List[Tuple[str, str]] = field(default_factory=list)  # (run id, what)
    lost_workers: List[LostWorker] = field(default_factory=list)


class Index:
    """An open index database for one Guild home."""

    dialect = "sqlite"  # what selections on it are compiled for
    name_tables = {"attrs": "attr_names", "flags": "flag_names"}  # the names a selection joins on (schema.sql)

    def __init__(self, home, path=None, owned=None, lock_wait=None):
        """`owned`: runq chose the path (the default when no path is given),
        so a broken file there is its own and is rebuilt, never refused."""
        self.home = home
        self.path = Path(path) if path else home.default_index_path
        self.notices = []  # what the user should hear about (a corrupt index rebuilt)
        self.lock, self.conn = _open(self.path, path is None if owned is None else owned, self.notices, lock_wait)
        self.home_identity = home.identity()
        self.dir_prefix = f"{home.path}/"  # what makes the stored relative run dirs whole

    def close(self):
        self.conn.close()
        self.lock.close()

    @property
    def home_changed(self):
        """The index was built for another home, or this one moved, was copied or re-mounted."""
        return self.meta("home") != self.home_identity

    def absolute_dir(self, relative):
        return f"{self.dir_prefix}{relative}"

    @property
    def query_conn(self):
        """The connection compiled selections run on."""
        return self.conn

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
            changes = self._changes()
            if self.home_changed:  # another home's stamps, signatures and watcher tokens say nothing here
                self.set_meta(roots_stamp="", watch_token="")
                check = (LIVE, DELETED)
            self._refresh(set(check), report, progress, workers)
            report.seconds = time.perf_counter() - started
            # A refresh that found nothing writes nothing: its commit then costs no sync of the disk.
            if changes is None or self._changes() != changes or self.meta("last_refresh") is None:
                self.set_meta(last_refresh=time.time(), last_refresh_seconds=f"{report.seconds:.3f}",
                              home=self.home_identity)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLite ends it itself when the disk is full
                self.conn.execute("ROLLBACK")
            raise
        return report

    def _refresh(self, check, report, progress, workers):
        # Asked first: whatever changes after the watcher's answer is told
        # with the next token (see engine/watch.py).
        known_stamp, known_token = self.meta("roots_stamp"), self.meta("watch_token") or ""
        news = watch.ask(self.path, self.home.path, known_token)
        # runs/ and trash/runs/ change mtime whenever an entry comes, goes or
        # is renamed: unchanged, their listings cannot hold news.
        stamp = self._roots_stamp()
        first_build = self.conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is None
        new = self._follow_listings(report) if stamp != known_stamp else []
        if news and not news.full:
            changed = self._changed_watched_runs(check, workers, news, report)
        else:  # every run; both roots when a watcher answered: its token will stand for both
            changed = self._changed_runs({LIVE, DELETED} if news else check, workers, report)
        report.added, report.updated = len(new), len(changed)
        large = first_build and len(new) >= LARGE_BUILD_RUNS
        with self._bulk_load(len(new)) if large else contextlib.nullcontext():
            self._read_and_store(new + changed, report, progress, workers, rundir.LIST_EVENTS if large else True)
        if first_build:
            self.set_meta(scalars_pending=SOME_PENDING if large else NONE_PENDING)
        elif self.meta("scalars_pending") is None:  # an index older than this key: looked up once
            self.set_meta(scalars_pending=SOME_PENDING if self._any_scalars_pending() else NONE_PENDING)
        report.rechecked = self._recheck_pids(check, {item[1] for item in changed})
        token = news.token if news else ""
        if (stamp, token) != (known_stamp, known_token):
            self.set_meta(roots_stamp=stamp, watch_token=token)

    def _changes(self):
        """Rows written so far by this connection (None where the backend does not say)."""
        return getattr(self.conn, "total_changes", None)

    @contextlib.contextmanager
    def _bulk_load(self, runs):
        """Writing many runs into an empty index: keys follow the runs'
        timestamps, so rows land all over the tables; a page cache that
        holds them spares SQLite spilling and re-reading pages, and the
        secondary indexes are built once, at the end, rather than row by
        row (dropped and made in the refresh's transaction)."""
        indexes = secondary_indexes()
        cache_kib = min(BULK_CACHE_MAX_KIB, max(CACHE_KIB, BULK_CACHE_KIB_PER_RUN * runs))
        self.conn.execute(f"PRAGMA cache_size = -{cache_kib}")
        try:
            for name in indexes:
                self.conn.execute(f"DROP INDEX {name}")
            yield
            for create in indexes.values():
                self.conn.execute(create)
        finally:
            self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")

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
        moved = [(deleted, relative_dir(run_id, deleted), run_id) for run_id, (deleted, _, _) in on_disk.items()
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

    def _changed_runs(self, check, workers, report):
        """(dir, id, deleted, listing) of the checked roots' runs whose stat signature changed."""
        roots = ", ".join(str(int(root)) for root in sorted(check)) or "-1"
        prefix = self.dir_prefix
        candidates = self.conn.execute(
            f"SELECT ? || dir, watched, signature FROM runs INDEXED BY runs_signatures WHERE deleted IN ({roots})",
            (prefix,),
        ).fetchall()
        report.checked = len(candidates)
        changed = changed_signatures(candidates, workers or os.cpu_count() or 1)
        return [
            self.conn.execute(
                f"SELECT ? || dir, id, deleted, listing FROM runs WHERE deleted IN ({roots}) AND dir = ?",
                (prefix, path[len(prefix):]),
            ).fetchone()
            for path in changed
        ]

    def _changed_watched_runs(self, check, workers, news, report):
        """As _changed_runs, but only for the runs the watcher saw change (in
        either root: the new token covers both) and, in the checked roots,
        those it could not watch."""
        rows = []
        for chunk in _chunks(sorted(news.changed | news.unwatched), 10000):
            query = (f"SELECT ? || dir, watched, signature, id, deleted, listing FROM runs "
                     f"WHERE id IN ({', '.join('?' * len(chunk))})")
            rows += self.conn.execute(query, (self.dir_prefix, *chunk)).fetchall()
        rows = [row for row in rows if row[3] in news.changed or row[4] in check]
        report.checked, report.watcher = len(rows), True
        changed = set(changed_signatures([row[:3] for row in rows], workers or os.cpu_count() or 1))
        return [(path, run_id, deleted, listing) for path, _, _, run_id, deleted, listing in rows if path in changed]

    def _list_roots(self):
        """{run id: (deleted, listing position, dir)} for both roots."""
        found = {}
        for deleted in (DELETED, LIVE):
            root = str(self.home.root_dir(deleted))
            for position, name in enumerate(_listdir(root)):
                # Names that are not UTF-8 are kept escaped (rundir.disk_path reverses it).
                run_id = storable_text(name)
                found[run_id] = (deleted, position, storable_text(f"{root}/{name}"))
        return found

    def _read_and_store(self, to_read, report, progress, workers, events=True):
        total = len(to_read)
        done = 0
        for records in _read_runs(to_read, workers, events, report.lost_workers.append):
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

    def recheck(self, run_ids, events=True):
        """Reads these runs again from their files, whatever their signatures
        say (a signature can be fooled: a write that keeps the size, with its
        mtime put back), and forgets those that are gone; returns how many
        were read. Without `events`, their event files are not read and
        their scalars stay as indexed (for selections that use none)."""
        found = []
        for chunk in _chunks(list(run_ids), 10000):
            query = f"SELECT id, deleted, listing FROM runs WHERE id IN ({', '.join('?' * len(chunk))})"
            found += self.conn.execute(query, chunk).fetchall()
        to_read = [(str(self.home.run_dir(run_id, deleted)), run_id, deleted, listing)
                   for run_id, deleted, listing in found]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._read_and_store(to_read, RefreshReport(), None, None, events)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return len(to_read)

    def read_pending_scalars(self, workers=None):
        """Reads the event files a large first build left unread (in one
        transaction: interrupted, they stay pending); how many runs had some."""
        state = self.meta("scalars_pending")  # cheaper than looking through every run
        if state == NONE_PENDING or (state is None and not self._any_scalars_pending()):
            return 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            count = self._read_pending_scalars(workers)
            self.set_meta(scalars_pending=NONE_PENDING)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return count

    def _any_scalars_pending(self):
        return self.conn.execute("SELECT 1 FROM runs WHERE scalars_pending IS NOT NULL LIMIT 1").fetchone() is not None

    def _read_pending_scalars(self, workers):
        to_read = self.conn.execute(  # again, in the transaction: another process may have read them
            "SELECT ? || dir, key, scalars_pending, problems, watched, signature FROM runs"
            " WHERE scalars_pending IS NOT NULL ORDER BY key",
            (self.dir_prefix,),
        ).fetchall()
        columns = CHILD_TABLES["scalars"]
        insert = f"INSERT OR IGNORE INTO scalars ({columns}) VALUES ({', '.join('?' * len(columns.split(',')))})"
        for rows in _read_in_parallel(to_read, _read_pending_chunk, workers):
            self.conn.executemany(insert, [(key, *row) for key, row_list, *_ in rows for row in row_list])
            self.conn.executemany(
                "UPDATE runs SET scalars_pending = NULL, problems = ?, watched = ?, signature = ? WHERE key = ?",
                [(problems, watched, signature, key) for key, _, problems, watched, signature in rows],
            )
        return len(to_read)

    def decode_lazy(self, names, workers=None):
        """Reads and decodes the raw attributes a filter names, once (attrs_raw
        finds them: a name without raw rows costs one lookup), by forked
        readers when there are many, in one transaction a name."""
        raw = ("SELECT ? || r.dir, a.run_key, a.name FROM attrs AS a JOIN runs AS r ON r.key = a.run_key"
               " WHERE a.name = ? AND a.kind = 'raw'")
        for name in sorted(names):
            if not self.conn.execute(f"{raw} LIMIT 1", (self.dir_prefix, name)).fetchone():
                continue  # no write lock taken for a name with nothing to decode
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self.conn.execute(raw, (self.dir_prefix, name)).fetchall()  # again, in the transaction
                for decoded in _read_in_parallel(rows, _decode_chunk, workers):
                    self.conn.executemany(
                        "UPDATE attrs SET kind = ?, num = ?, str = ?, folded = ?, json = ? WHERE run_key = ? AND name = ?",
                        decoded,
                    )
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    # Writing rows

    def write_records(self, records):
        if not records:
            return
        for record in records:
            if record.scalars is None:  # event files not read: what the last whole read found stays
                kept = self._unread_parts(record.id)
                record.scalars, record.run["watched"], record.run["signature"], record.run["scalars_pending"] = kept
        self.delete_rows(self._indexed([r.id for r in records]))
        self._assign_keys(records)
        for record in records:  # the index stays valid when the home moves or is copied
            record.run["dir"] = relative_dir(record.id, record.run["deleted"])
        columns = rundir.RUN_FIELDS
        self.conn.executemany(
            f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(r.run[c] for c in columns) for r in records],
        )
        for table, rows in _child_rows(records).items():
            placeholders = ", ".join("?" * len(CHILD_TABLES[table].split(",")))
            self.conn.executemany(f"INSERT OR IGNORE INTO {table} ({CHILD_TABLES[table]}) VALUES ({placeholders})", rows)
            if table in self.name_tables and rows:
                names = [(name,) for name in {row[1] for row in rows}]
                self.conn.executemany(f"INSERT OR REPLACE INTO {self.name_tables[table]} (name) VALUES (?)", names)

    def _unread_parts(self, run_id):
        """(scalar rows, watched, signature, scalars pending) the index holds for a run."""
        columns = CHILD_TABLES["scalars"].split(", ", 1)[1]
        query = f"SELECT {columns} FROM scalars WHERE run_key = (SELECT key FROM runs WHERE id = ?)"
        scalars = self.conn.execute(query, (run_id,)).fetchall()
        query = "SELECT watched, signature, scalars_pending FROM runs WHERE id = ?"
        row = self.conn.execute(query, (run_id,)).fetchone()
        return (scalars, *(row or (None, None, None)))

    def _indexed(self, run_ids):
        """The ones of these runs the index holds."""
        query = f"SELECT id FROM runs WHERE id IN ({', '.join('?' * len(run_ids))})"
        return [row[0] for row in self.conn.execute(query, run_ids)] if run_ids else []

    def _assign_keys(self, records):
        """Keys after the runs' timestamps; a key already taken becomes one
        past every key in use (the keys next to it may be taken too)."""
        taken = set()
        wanted = [_key_for(r.run["timestamp"]) for r in records]
        for chunk in _chunks(sorted(set(wanted)), 10000):
            query = f"SELECT key FROM runs WHERE key IN ({', '.join('?' * len(chunk))})"
            taken.update(row[0] for row in self.conn.execute(query, chunk))
        next_free = None  # past every key in use: found at the first key taken
        for record, key in zip(records, wanted):
            if key in taken:
                if next_free is None:
                    next_free = max(self.conn.execute("SELECT COALESCE(MAX(key), 0) FROM runs").fetchone()[0], *taken) + 1
                while next_free in taken:
                    next_free += 1
                key = next_free
            taken.add(key)
            record.run["key"] = key

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
            [(deleted, relative_dir(run_id, deleted), run_id) for run_id in run_ids],
        )


def relative_dir(run_id, deleted):
    """A run's directory as the index stores it: relative to the home."""
    return f"trash/runs/{run_id}" if deleted else f"runs/{run_id}"


def _key_for(timestamp):
    # Far below 2**63 so that bumping past taken keys cannot overflow; a time
    # out of that range (or infinite) is a run like any other.
    return int(timestamp) if isinstance(timestamp, (int, float)) and 0 < timestamp < 2**62 else 1


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


def _read_runs(to_read, workers, events=True, on_lost_worker=None):
    """Yields lists of RunRecords (or the ids of dirs that are not runs), chunk by chunk, in order."""
    if events is rundir.LIST_EVENTS:
        read_chunk = _read_chunk_listing_events
    else:
        read_chunk = _read_chunk if events else _read_chunk_without_events
    yield from _read_in_parallel(to_read, read_chunk, workers, on_lost_worker)


def _read_in_parallel(to_read, read_chunk, workers, on_lost_worker=None):
    """Yields read_chunk(chunk) for the chunks of `to_read`, in order, read by forked workers when there are many."""
    chunks = _chunks(to_read, CHUNK_RUNS)
    workers = min(workers or os.cpu_count() or 1, len(chunks))
    if len(to_read) < PARALLEL_MIN_RUNS or workers < 2 or not hasattr(os, "fork"):
        yield from map(read_chunk, chunks)
        return
    try:
        pool = _ReaderPool(chunks, workers, read_chunk)
    except OSError:  # no process to spare (EAGAIN, ENOMEM): read them here
        yield from map(read_chunk, chunks)
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

    def __init__(self, chunks, workers, read_chunk):
        self.chunks = chunks
        self.read_chunk = read_chunk
        self.pids, self.pipes = [], []
        try:
            for first in range(workers):
                self._start(chunks[first::workers])
        except BaseException:
            self.close()
            raise

    def _start(self, chunks):
        read_fd, write_fd = os.pipe()
        _widen_pipe(write_fd)
        inherited = [pipe.fileno() for pipe in self.pipes]
        try:
            pid = _start_child(_serve_chunks, chunks, write_fd, self.read_chunk, close=[read_fd, *inherited])
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
                records = self.read_chunk(chunk)
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


def _widen_pipe(fd):
    """A worker's pipe made to hold a chunk of records or more, so that the
    worker reads on while this process writes rows (the default 64 KiB
    holds less than a chunk: the worker would wait for each read)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (AttributeError, OSError):  # not Linux, or over the system's limit: the default size
        pass


def _serve_chunks(chunks, write_fd, read_chunk):
    import pickle  # only reading in parallel needs it

    parent = os.getppid()
    with os.fdopen(write_fd, "wb") as out:
        for chunk in chunks:
            data = pickle.dumps(read_chunk(chunk), protocol=pickle.HIGHEST_PROTOCOL)
            if os.getppid() != parent:  # orphaned where no death signal is sent: stop
                return
            out.write(len(data).to_bytes(8, "little"))
            out.write(data)
            out.flush()


def _receive(pipe):
    """The next records a worker sent, or None when it died first."""
    import pickle

    size = pipe.read(8)
    if len(size) < 8:
        return None
    data = pipe.read(int.from_bytes(size, "little"))
    return pickle.loads(data) if len(data) == int.from_bytes(size, "little") else None


def _read_chunk_without_events(items):
    return _read_chunk(items, events=False)


def _read_chunk_listing_events(items):
    return _read_chunk(items, events=rundir.LIST_EVENTS)


def _decode_chunk(items):
    """(value columns..., key, name) of raw attributes: UPDATE attrs parameters."""
    return [(*rundir.read_attr_value(path, name), key, name) for path, key, name in items]


def _read_pending_chunk(items):
    """(key, scalar rows, problems, watched, signature) of runs whose event files were left unread."""
    return [(key, *_pending_scalars(path, pending, *rest)) for path, key, pending, *rest in items]


def _pending_scalars(path, pending, problems, watched, signature):
    """(scalar rows, problems text, watched, signature) of a run's pending
    event files: its problems joined by theirs; the event files its
    directories hold now, when they were searched now, watched too."""
    read_since = time.time_ns()
    try:
        rows, found, event_paths = rundir.read_pending_scalars(path, pending)
    except Exception as e:  # as a run that cannot be read: never fatal
        rows, found, event_paths = [], [f"cannot read the event files: {e}"], None
    if event_paths:
        # The signature covers the files read with the run; if one changed
        # since, the next refresh reads the whole run again (NULL).
        unchanged = rundir.signature(path, watched) == signature
        watched = "\n".join(filter(None, [watched, *event_paths]))
        signature = rundir.signature(path, watched, read_since) if unchanged else None
    joined = storable_text("; ".join(dict.fromkeys(found)))
    return rows, "; ".join(part for part in (problems, joined) if part) or None, watched, signature


def _read_chunk(items, events=True):
    records = []
    for path, run_id, deleted, listing in items:
        try:
            record = rundir.read_run(path, run_id, deleted, listing, events)
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
#
# runq's lock file beside the index is held shared by every process using
# the index and exclusively by one creating or replacing it: a replacement
# is built under a temporary name in the same directory and renamed into
# place, never removed under a reader, and never shares WAL files with the
# index it replaces.


def _open(path, owned, notices, lock_wait=None):
    """(lock, connection) of a usable index at `path`, created or rebuilt as needed."""
    _prepare_dir(path, owned)
    file_problem(path, owned)  # a file runq must not touch is refused before anything is created
    lock = IndexLock(path)
    try:
        lock.take(fcntl.LOCK_SH, lock_wait)
        if index_state(path, owned) != "ok":
            lock.take(fcntl.LOCK_EX, lock_wait)
            _make_usable(path, owned, notices)
            lock.take(fcntl.LOCK_SH, lock_wait)
        return lock, _connect(path, lock_wait)
    except BaseException:
        lock.close()
        raise


def _make_usable(path, owned, notices):
    state = index_state(path, owned)  # again: another process may have built it meanwhile
    if state == "ok" or state == "outdated" and _upgraded(path):
        return
    build_index_file(path)
    if state not in ("missing", "outdated"):
        notices.append(f"the index {path} was {state}; rebuilt it (it is a cache of the run directories)")


def _prepare_dir(path, owned):
    parent = path.parent
    if owned:
        _make_dirs(parent)
    elif not parent.is_dir():
        what = "is not a directory" if os.path.lexists(parent) else "does not exist"
        raise HomeError(f"cannot create the index {path}: {parent} {what}")


def _make_dirs(directory):
    for each in (*reversed(directory.parents), directory):
        if os.path.lexists(each) and not each.is_dir():
            raise HomeError(f"cannot keep the index in {directory}: {each} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HomeError(f"cannot create {directory}: {e.strerror}") from None


class IndexLock:
    """runq's own lock file for one index (flock: released by the kernel when
    the process dies). Each process holds one lock per index, however many
    Index objects use it: a process never waits for itself."""

    _held = {}  # lock path -> [fd, users]: the one lock of this process

    def __init__(self, index_path):
        self.path = lock_path(index_path)
        self.key = os.path.abspath(self.path)
        if self.key not in self._held:
            try:
                self._held[self.key] = [os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644), 0]
            except OSError as e:
                raise HomeError(f"cannot use the index lock {self.path}: {e.strerror}") from None
        self._held[self.key][1] += 1
        self.fd = self._held[self.key][0]

    def take(self, mode, lock_wait=None):
        """Shared or exclusive (a conversion may briefly let go), waiting for
        other processes as `lock_wait` says (announced after a slice)."""
        seconds = lock_wait.seconds if lock_wait else LOCK_WAIT_SECONDS
        started, announced = time.monotonic(), False
        while True:
            try:
                fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > seconds:
                    raise IndexLocked(
                        f"gave up after {seconds:g} s: the index {self.path.with_suffix('')} is being replaced "
                        "or used by another runq process",
                        hint="try again when it has finished, or wait longer with --lock-timeout SECONDS",
                    ) from None
                if not announced and waited >= LOCK_WAIT_SLICE and lock_wait and lock_wait.on_wait:
                    lock_wait.on_wait(self.path.with_suffix(""), seconds)
                    announced = True
                time.sleep(0.02)

    def close(self):
        if self.fd is None:
            return
        self.fd = None
        held = self._held[self.key]
        held[1] -= 1
        if held[1] == 0:
            del self._held[self.key]
            os.close(held[0])


def rebuild_index(path, owned):
    """Replaces the index with an empty one, which the next refresh fills."""
    _prepare_dir(path, owned)
    file_problem(path, owned)
    lock = IndexLock(path)
    try:
        lock.take(fcntl.LOCK_EX)
        build_index_file(path)
    finally:
        lock.close()


def kept_files(path, owned):
    """What runq keeps for the index at `path`: the database, its WAL files,
    its lock file and any replacement left half-built (refusing a file that
    is not an index)."""
    file_problem(path, owned)
    names = [f"{path.name}{suffix}" for suffix in ("", "-wal", "-shm", ".lock")]
    found = [path.parent / name for name in names if os.path.lexists(path.parent / name)]
    import glob

    leftovers = sorted(path.parent.glob(f".{glob.escape(path.name)}.*.new*")) if path.parent.is_dir() else []
    return found + leftovers


def drop_index(path, owned):
    """Removes kept_files(path), and runq's own directory for them when that leaves it empty."""
    file_problem(path, owned)
    lock = IndexLock(path)
    try:
        lock.take(fcntl.LOCK_EX)
        for each in kept_files(path, owned):
            _remove(each)
    except OSError as e:
        raise HomeError(f"cannot remove {e.filename}: {e.strerror}") from None
    finally:
        lock.close()
    if owned:
        try:
            path.parent.rmdir()
        except OSError:  # not empty: files that are not runq's stay, and so does their directory
            pass


def lock_path(index_path):
    return Path(f"{index_path}.lock")


def secondary_indexes():
    """{name: CREATE INDEX statement} of the indexes schema.sql makes on its tables."""
    found = re.finditer(r"^CREATE INDEX IF NOT EXISTS (\w+) ON [^;]*;", schema_text(), re.MULTILINE)
    return {match.group(1): match.group() for match in found}


def schema_version():
    return sha256(schema_text().encode()).hexdigest()[:16]


def index_state(path, owned):
    """"ok", "missing", "outdated" (an older schema) or what is broken; raises
    HomeError for a file runq must not touch or cannot use."""
    if not os.path.lexists(path):
        return "missing"
    return file_problem(path, owned) or _schema_state(path)


def file_problem(path, owned):
    """What is wrong with the file at `path` as an index (None when nothing
    is, or there is no file); raises HomeError when runq cannot use it or
    must leave it alone."""
    if not os.path.lexists(path):
        return None
    if os.path.isdir(path):
        raise HomeError(f"cannot use the index {path}: it is a directory")
    broken = _header_problem(path, _header(path))
    if broken == UNMARKED and owned:  # at runq's own path: an index of an older runq
        return "outdated"
    if broken and not owned:
        raise HomeError(
            f"{path} is not a runq index ({broken}); runq leaves it as it is",
            hint="give --index the path of a runq index, or of a file that does not exist yet",
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise HomeError(f"cannot use the index {path}: it is read-only", hint="runq updates its index on every command")
    return broken


def _header(path):
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except OSError as e:
        raise HomeError(f"cannot read the index {path}: {e.strerror}") from None


def _header_problem(path, header):
    """Why the first 100 bytes do not start a runq index, if they do not."""
    if not header:
        return "empty"
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        return "not an SQLite database"
    application_id = int.from_bytes(header[68:72], "big")
    if application_id == 0:
        return UNMARKED
    if application_id != APPLICATION_ID:
        return "an SQLite database of another application"
    page_size = int.from_bytes(header[16:18], "big")
    pages = int.from_bytes(header[28:32], "big")
    size_is_valid = header[92:96] == header[24:28]  # SQLite's rule for trusting the page count
    if size_is_valid and os.path.getsize(path) < (65536 if page_size == 1 else page_size) * pages:
        return "truncated"
    return None


def _schema_state(path):
    try:
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = _schema_version(conn) if "meta" in tables else None
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return f"unreadable ({e})"
    if not {"meta", "runs"} <= tables:
        return "missing its tables"
    return "ok" if version == schema_version() else "outdated"


# Schemas this one only adds to, by version: an index of one of them is
# brought up to date in place (the new tables filled from its rows), not
# rebuilt from every run directory.
_FILL_NAMES = """
    INSERT OR IGNORE INTO attr_names (name) SELECT DISTINCT name FROM attrs;
    INSERT OR IGNORE INTO flag_names (name) SELECT DISTINCT name FROM flags;
"""
ADDITIVE_UPGRADES = {
    "d4855c2d3c2ba808": _FILL_NAMES,  # before attr_names, flag_names and attrs_raw
    "9884974cdd6b4a15": "",  # before attrs_raw
}


def _upgraded(path):
    """Whether the index at `path`, of an earlier schema, is now up to date."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            fill = ADDITIVE_UPGRADES.get(_schema_version(conn))
            if fill is None:
                return False
            version = f"UPDATE meta SET value = '{schema_version()}' WHERE key = 'schema_version';"
            conn.executescript(f"BEGIN IMMEDIATE;\n{schema_text()}\n{fill}\nDELETE FROM compiled;\n{version}\nCOMMIT;")
        finally:
            conn.close()  # unfinished, the change is rolled back
    except sqlite3.Error:
        return False
    return True


def build_index_file(path):
    """A new empty index, built beside `path` and renamed over it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.new")
    remove_index_files(temp)
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            _create(conn, schema_text(), schema_version())
        finally:
            conn.close()
        for suffix in ("-wal", "-shm"):  # the old index's, which the new one must not read
            _remove(f"{path}{suffix}")
        os.replace(temp, path)
    except (OSError, sqlite3.Error) as e:
        remove_index_files(temp)
        raise HomeError(f"cannot create the index {path}: {getattr(e, 'strerror', None) or e}") from None


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
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    except sqlite3.Error as e:
        raise HomeError(f"cannot open the index {path}: {e}") from None
    register_functions(conn)
    return conn


# Waiting for another process's lock


LOCK_WAIT_SLICE = 0.5  # SQLite waits this long at a time, then runq says it waits


class LockWait(NamedTuple):
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
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.executescript(schema)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (version,))


def remove_index_files(path):
    for suffix in ("", "-wal", "-shm"):
        _remove(f"{path}{suffix}")


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []
