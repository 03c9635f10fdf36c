"""A watcher of a Guild home: which runs changed since a token.

What git's core.fsmonitor does for a work tree: a daemon process watches
runs/, trash/runs/ and every directory of every run with Linux's inotify,
and a refresh asks it, over a Unix socket, which runs changed since the
token the index keeps; only those runs (and the ones it could not watch)
are checked against the disk, instead of every file of every run.

Correctness never rests on it. The refresh checks every run, as without a
watcher, whenever the answer cannot be trusted: no watcher, one that does
not answer in time, a token of another watcher (restarted) or of the time
before it watched everything it could (`runq watch start` refreshes once it watches),
events lost (the kernel's queue overflowed) or a root removed or created.
Runs it could not watch (past the inotify watch limit, or holding
symbolic links, which inotify does not follow) are checked every time.

The watcher answers a question only after reading every event the kernel
queued before it: a change that completed before the command asked is in
the answer, one after it goes with the next token. It never writes the
index (commands do, under the index lock): it only reads the disk.

Files beside the index: `<index>.watch.pid` (locked with flock by the one
watcher of the index while it runs) and `<index>.watch.log`. The socket is
in Linux's abstract namespace (no file to go stale, no path length limit),
named after the index's real path; a command trusts only a watcher running
as its own user.

Test hooks: SIGUSR1 makes the watcher act as on a lost-events overflow;
RUNQ_WATCH_MAX_WATCHES caps its inotify watches (as a low limit would).
"""

import errno
import fcntl
import gc
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

from .digest import sha256
from .errors import HomeError
from .values import storable_text

ASK_TIMEOUT = 10.0  # seconds a command waits for an answer before checking every run itself
START_TIMEOUT = 600.0  # watching a million directories takes a while
POLL_SECONDS = 1.0  # how often the watcher checks that its home and index are still there
MAX_DEPTH = 200  # as rundir's walks for event files
LIMIT_FILE = "/proc/sys/fs/inotify/max_user_watches"
NOT_INSTALLED = "runq watch needs the inotify_simple package"
INSTALL_HINT = "pip install 'runq[watch]'"


# Where things are


def pid_path(index_path):
    return Path(f"{index_path}.watch.pid")


def log_path(index_path):
    return Path(f"{index_path}.watch.log")


def socket_address(index_path):
    """An abstract socket name (a leading NUL) for the index's real path."""
    real = os.path.realpath(index_path)
    return "\0runq-watch/" + sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def available():
    """Whether this system and installation can watch (Linux, inotify_simple)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import inotify_simple  # noqa: F401
    except ImportError:
        return False
    return True


# Asking (the command's side)


class Answer(NamedTuple):
    """What changed since a token. `full`: the token cannot be trusted, every
    run must be checked; otherwise `changed` (run ids, in either root) and
    `unwatched` (run ids to check every time) are what to check."""

    token: str
    full: bool
    changed: frozenset = frozenset()
    unwatched: frozenset = frozenset()


def ask(index_path, home_path, since, timeout=ASK_TIMEOUT):
    """The watcher's Answer for the runs changed since the token `since`, or
    None when no watcher of this index and home answers (check every run)."""
    reply = _request(index_path, {"since": since or ""}, timeout)
    if not reply or reply.get("home") != os.path.realpath(home_path):
        return None
    try:
        return Answer(
            str(reply["token"]),
            bool(reply["full"]),
            frozenset(reply.get("changed", ())),
            frozenset(reply.get("unwatched", ())),
        )
    except (KeyError, TypeError):
        return None


def status(index_path, timeout=ASK_TIMEOUT):
    """The running watcher's state (a dict), or None when none answers."""
    return _request(index_path, {"status": True}, timeout)


def _request(index_path, question, timeout):
    # The pid file's lock first: without a watcher, a command does not even
    # import the socket module (start-up time).
    if not sys.platform.startswith("linux") or running_pid(index_path) is None:
        return None
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(socket_address(index_path))
            if _peer_uid(conn) != os.getuid():  # anyone may take an abstract name: trust only our own
                return None
            conn.sendall(json.dumps(question).encode() + b"\n")
            reply = json.loads(_read_to_end(conn))
    except (OSError, ValueError):  # refused (no watcher), timed out, cut short
        return None
    return reply if isinstance(reply, dict) else None


def _peer_uid(conn):
    import socket
    import struct

    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


def _read_to_end(conn):
    parts = []
    while True:
        data = conn.recv(1 << 20)
        if not data:
            return b"".join(parts)
        parts.append(data)


def running_pid(index_path):
    """The pid of the watcher holding the index's pid file, or None (a pid
    file left by a killed watcher is not locked)."""
    try:
        fd = os.open(pid_path(index_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid_in(fd)
    finally:
        os.close(fd)
    return None


def _pid_in(fd):
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


# Starting and stopping


class WatchError(HomeError):
    """The watcher cannot be started or stopped."""


def start(home_path, index_path, wait=True):
    """Starts a detached watcher of the home for the index; with `wait`,
    returns once it watches (its status), else at once (None)."""
    if not available():
        raise WatchError(NOT_INSTALLED if sys.platform.startswith("linux") else "runq watch needs Linux's inotify",
                         hint=INSTALL_HINT if sys.platform.startswith("linux") else None)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        _detach_and_watch(str(home_path), str(index_path), write_fd)
    os.close(write_fd)
    os.waitpid(child, 0)  # the first child only forks the watcher and exits
    with os.fdopen(read_fd, "rb") as pipe:
        if not wait:
            return None
        message = _read_with_timeout(pipe, START_TIMEOUT).decode("utf-8", "replace").strip()
    if message != "ready":
        raise WatchError(f"the watcher did not start: {message or 'it ended without a word'}",
                         hint=f"see {log_path(index_path)}")
    return status(index_path)


def _read_with_timeout(pipe, seconds):
    import select

    deadline = time.monotonic() + seconds
    parts = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(pipe.fileno(), 4096)
        if not data:
            break
        parts.append(data)
    return b"".join(parts)


def stop(index_path, timeout=10.0):
    """Stops the index's watcher (SIGTERM); its pid, or None when none ran."""
    pid = running_pid(index_path)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    deadline = time.monotonic() + timeout
    while running_pid(index_path) == pid:
        if time.monotonic() > deadline:
            raise WatchError(f"the watcher (pid {pid}) did not stop within {timeout:g} s",
                             hint=f"kill -9 {pid} stops it for good")
        time.sleep(0.02)
    return pid


def watch_limit():
    """The kernel's per-user inotify watch limit, or None where unknown."""
    try:
        return int(Path(LIMIT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


# The daemon


def _detach_and_watch(home_path, index_path, ready_fd):
    """In the first child: a new session, a second fork (the watcher can
    never take a terminal back), then the watcher itself. Never returns."""
    status = 1
    try:
        # What the command left for the garbage collector is collected now,
        # before its descriptors are closed and their numbers reused; the
        # rest is never collected (it would close descriptors it no longer owns).
        gc.collect()
        gc.freeze()
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _become_daemon(index_path, ready_fd)
        status = _watch_until_stopped(home_path, index_path, ready_fd)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def _become_daemon(index_path, ready_fd):
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # Every descriptor the command had goes: above all its index lock, which
    # a watcher holding it would keep from `runq index --rebuild` for ever.
    os.closerange(3, ready_fd)
    os.closerange(ready_fd + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    log = os.open(log_path(index_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd, target in ((0, null), (1, log), (2, log)):
        os.dup2(target, fd)
    os.close(null)
    os.close(log)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)


def _say(text):
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {text}", flush=True)


def _tell(ready_fd, text):
    try:
        os.write(ready_fd, text.encode() + b"\n")
        os.close(ready_fd)
    except OSError:  # nobody waits (a start that did not wait)
        pass


def _watch_until_stopped(home_path, index_path, ready_fd):
    lock_fd = os.open(pid_path(index_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _tell(ready_fd, "ready")  # another watcher of this index is running: it answers
        return 0
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
    try:
        signal.signal(signal.SIGTERM, _stop)
        _watch(home_path, index_path, ready_fd)
    except _Stopping:
        _say("stopping: asked to (SIGTERM)")
    os.ftruncate(lock_fd, 0)  # a pid file never names a watcher that is gone
    if not os.path.exists(index_path):  # the index was dropped: so is what runq kept beside it
        for path in (pid_path(index_path), log_path(index_path)):
            _remove(path)
    return 0


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class _Stopping(Exception):
    """SIGTERM: raised wherever the watcher is, which holds nothing to undo."""


def _stop(signum, frame):
    raise _Stopping()


def _watch(home_path, index_path, ready_fd):
    import socket

    limit = os.environ.get("RUNQ_WATCH_MAX_WATCHES", "")
    watcher = Watcher(home_path, index_path, int(limit) if limit.isdigit() else None)
    signal.signal(signal.SIGUSR1, lambda *_: watcher.lose("SIGUSR1 (a simulated overflow)"))
    began = time.perf_counter()
    watcher.scan()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(socket_address(index_path))
    except OSError as e:
        _tell(ready_fd, f"cannot listen: {e.strerror}")
        return
    server.listen(64)
    _say(f"watching {home_path} for {index_path}: {watcher.counts_text()} "
         f"in {time.perf_counter() - began:.1f} s")
    _tell(ready_fd, "ready")
    watcher.serve(server)


def _inotify_flags():
    from inotify_simple import flags

    return flags


class Watcher:
    """The watches of one home and what they saw, per token."""

    def __init__(self, home_path, index_path, max_watches=None):
        from inotify_simple import INotify

        flags = self.flags = _inotify_flags()
        moves = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO
        self.root_mask = moves | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR
        self.run_mask = self.root_mask | flags.MODIFY | flags.ATTRIB | flags.CLOSE_WRITE
        self.home = os.path.realpath(home_path)
        self.index_path = index_path
        self.inotify = INotify(nonblocking=True)
        self.instance = os.urandom(8).hex()
        self.max_watches = max_watches
        self.seq = 0  # tokens are instance:seq, a new seq for an answer with news
        self.valid_from = 1  # an older token may have missed events
        self.changed_at = {}  # run id -> the seq of the answer that first told its latest change
        self.pending = set()  # run ids changed since the last answer
        self.parents = {}  # wd -> path: the home and trash/, where the roots appear and vanish
        self.roots = {}  # wd -> root path (runs/ or trash/runs/)
        self.dirs = {}  # wd -> (run id, path relative to the run)
        self.run_root = {}  # run id (as on disk) -> its root path
        self.unwatched = set()
        self.limit_met = False
        self.blind = None  # why no answer can be trusted (a root that could not be watched)
        self.lost_why = None  # why events may have been missed: the next answer starts over
        self.overflows = 0
        self.started = time.time()

    # Watching

    def scan(self):
        """Watches the roots and every run in them; each directory is watched
        before it is listed, so whatever comes after the listing is an event."""
        self.limit_met, self.blind = False, None
        for path, kind in self._roots_and_parents():
            try:
                wd = self._add(path, self.root_mask, must=True)
            except OSError as e:  # with a root unseen, no answer can be trusted
                self.blind = f"cannot watch {path}: {e.strerror}"
                continue
            if wd is not None:
                kind[wd] = path
        for root in list(self.roots.values()):
            for name in _listdir(root):
                self._watch_run(root, name, scanning=True)

    def _roots_and_parents(self):
        """First of all, before any run takes a watch: where runs come and go."""
        return ((self.home, self.parents), (f"{self.home}/trash", self.parents),
                (f"{self.home}/runs", self.roots), (f"{self.home}/trash/runs", self.roots))

    def _watch_run(self, root, name, scanning=False):
        self.run_root[name] = root
        self.unwatched.discard(name)
        if scanning and self.limit_met:  # no room left: do not try each of the remaining runs
            self.unwatched.add(name)
            return
        if not self._watch_tree(name, ""):
            self.unwatched.add(name)

    def _watch_tree(self, run_name, rel):
        """Watches a run's directory `rel` and every directory below it;
        False when some could not be watched."""
        base = f"{self.run_root[run_name]}/{run_name}"
        todo = [rel]
        while todo:
            rel = todo.pop()
            path = f"{base}/{rel}" if rel else base
            try:
                wd = self._add(path, self.run_mask, must=True)
            except OSError:
                return False
            if wd is None:
                continue  # gone meanwhile: its removal is an event
            self.dirs[wd] = (run_name, rel)
            subdirs = _subdirs(path, rel)
            if subdirs is None or rel.count("/") >= MAX_DEPTH:
                return False  # a link (inotify would not see through it), or unlistable, or too deep
            todo += [f"{rel}/{name}" if rel else name for name in subdirs]
        return True

    def _add(self, path, mask, must=False):
        """The watch descriptor of `path`, None when it is gone or not a
        directory; OSError (with `must`) when it could not be watched."""
        if self.max_watches is not None and self.watch_count() >= self.max_watches:
            self.limit_met = True
            if must:
                raise OSError(errno.ENOSPC, "watch limit reached")
            return None
        try:
            return self.inotify.add_watch(path, mask)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            if e.errno == errno.ENOSPC:
                self.limit_met = True
            if must:
                raise
            return None

    def watch_count(self):
        return len(self.dirs) + len(self.roots) + len(self.parents)

    # Events

    def drain(self):
        """Takes in every event the kernel has queued."""
        while True:
            events = self.inotify.read(timeout=0)
            if not events:
                return
            for event in events:
                self._take(event)

    def _take(self, event):
        flags = self.flags
        if event.mask & flags.Q_OVERFLOW:
            self.lose("the kernel's event queue overflowed")
        elif event.wd in self.dirs:
            self._run_event(event)
        elif event.wd in self.roots:
            self._root_event(event)
        elif event.wd in self.parents:
            self._parent_event(event)

    def _run_event(self, event):
        flags = self.flags
        run_name, rel = self.dirs[event.wd]
        self.pending.add(run_name)
        if event.mask & flags.IGNORED:
            del self.dirs[event.wd]
        elif event.mask & flags.ISDIR and event.mask & (flags.CREATE | flags.MOVED_TO) and run_name in self.run_root:
            # Watched from now on; what was written in it before is read, as
            # this run is reported changed after its watch began.
            if not self._watch_tree(run_name, f"{rel}/{event.name}" if rel else event.name):
                self.unwatched.add(run_name)

    def _root_event(self, event):
        flags = self.flags
        root = self.roots[event.wd]
        if event.mask & (flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF):
            del self.roots[event.wd]
            self.lose(f"{root} was removed or moved")
            return
        self.pending.add(event.name)
        if event.mask & (flags.CREATE | flags.MOVED_TO):
            self._watch_run(root, event.name)
        elif self.run_root.get(event.name) == root:  # gone from here (moved: it comes in the other root)
            del self.run_root[event.name]
            self.unwatched.discard(event.name)

    def _parent_event(self, event):
        flags = self.flags
        if event.mask & (flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF):
            self.lose(f"{self.parents.pop(event.wd)} was removed or moved")
        elif event.name in ("runs", "trash"):
            self.lose(f"{event.name} appeared or vanished in {self.parents[event.wd]}")

    def lose(self, why):
        """Events may have been missed: the next answer is a new start."""
        self.lost_why = why

    # Answers

    def answer(self, since):
        """The reply to a command asking what changed since the token `since`."""
        self.drain()
        if self.lost_why:
            self._start_over()
        if self.pending or self.seq < self.valid_from:  # else the last token still says it all
            self.seq += 1
        for name in self.pending:
            self.changed_at[name] = self.seq
        self.pending = set()
        reply = {"home": self.home, "token": f"{self.instance}:{self.seq}", "full": not self._trusts(since)}
        if not reply["full"]:
            since_seq = int(since.partition(":")[2])
            reply["changed"] = [storable_text(n) for n, seq in self.changed_at.items() if seq > since_seq]
            reply["unwatched"] = [storable_text(n) for n in self.unwatched]
        return reply

    def _trusts(self, since):
        instance, _, number = (since or "").partition(":")
        return not self.blind and instance == self.instance and number.isdigit() and self.valid_from <= int(number) <= self.seq

    def _start_over(self):
        """After lost events: watches whatever is there again; tokens given
        before are refused (their commands check every run)."""
        _say(f"events may have been missed ({self.lost_why}): watching everything again")
        self.overflows += self.lost_why.startswith(("the kernel", "SIGUSR1"))
        self.lost_why = None
        self.unwatched = set()
        self.scan()
        self.drain()
        self.valid_from = self.seq + 1
        self.changed_at = {}

    def state(self):
        self.drain()
        if self.lost_why:
            self._start_over()
        return {
            "home": self.home,
            "index": str(self.index_path),
            "pid": os.getpid(),
            "started": self.started,
            "runs": len(self.run_root),
            "unwatched": len(self.unwatched),
            "watches": self.watch_count(),
            "limit": self.max_watches or watch_limit(),
            "limit_from": "RUNQ_WATCH_MAX_WATCHES" if self.max_watches else "fs.inotify.max_user_watches",
            "overflows": self.overflows,
            "lost": self.lost_why,
            "blind": self.blind,
        }

    def counts_text(self):
        return (f"{len(self.run_root) - len(self.unwatched)} of {len(self.run_root)} runs watched, "
                f"{self.watch_count()} inotify watches")

    # Serving

    def serve(self, server):
        """Answers commands and keeps up with events until the home or the
        index is gone (or SIGTERM)."""
        import select

        while True:
            readable, _, _ = select.select([self.inotify, server], [], [], POLL_SECONDS)
            if self.inotify in readable:
                self.drain()  # the kernel's queue stays short, and new directories are watched at once
            if server in readable:
                self._serve_one(server)
            gone = self._gone()
            if gone:
                _say(f"stopping: {gone}")
                return

    def _serve_one(self, server):
        conn, _ = server.accept()
        with conn:
            try:
                conn.settimeout(5.0)
                question = json.loads(_read_line(conn))
                reply = self.state() if question.get("status") else self.answer(str(question.get("since", "")))
                conn.sendall(json.dumps(reply).encode())
            except (OSError, ValueError, AttributeError) as e:
                _say(f"a question went unanswered: {e}")

    def _gone(self):
        for path, what in ((self.index_path, "the index"), (self.home, "the Guild home")):
            if not os.path.exists(path):
                return f"{what} {path} is gone"
        return None


def _read_line(conn, limit=65536):
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _subdirs(path, rel):
    """Names of the directories in a run's directory `path` (`rel` in the
    run); None when it cannot be listed or holds a symbolic link that runq
    reads through (inotify does not see what changes behind a link)."""
    names = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_symlink():
                    if _read_through(entry, rel):
                        return None
                elif entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
    except OSError:
        return None
    return names


def _read_through(link, rel):
    """Whether runq reads what this link points to: a directory (walked for
    event files), an event file, or anything under .guild (attributes,
    opref, markers). Links to other files (Guild's resolved resources) it
    never reads."""
    in_guild_dir = rel == ".guild" or rel.startswith(".guild/") or (not rel and link.name == ".guild")
    return in_guild_dir or ".tfevents." in link.name or link.is_dir()
