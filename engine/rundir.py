"""Reads one Guild run directory into the rows the index stores.

Pure file reading: no database here. Everything Guild would compute from
the directory (status, formatted operation, sort timestamp, scalar
summaries) is computed once, when the run is read, except what depends on
a live process, which the indexer re-checks on every refresh.
"""

import os
import re
import shlex
import time
from dataclasses import dataclass, field
from stat import S_ISDIR
from typing import Dict, List

from .attrs import decode_attr, is_lazy
from .files import ATTR_MAX_BYTES, MARKER_MAX_BYTES, OPREF_MAX_BYTES, error_text, read_regular
from .opspec import split_opspec
from .values import storable_text, stored_number, stored_value

MARKERS = ("LOCK", "LOCK.remote", "PENDING", "STAGED")
RUN_FIELDS = (
    "key id deleted dir pkg_type pkg_name pkg_version model op operation opspec_pkg "
    "opspec_model opspec_op pkg_desc op_dir initialized started stopped timestamp "
    "exit_status status pid remote label marked sourcecode_digest comments_text "
    "listing watched signature problems scalars_pending"
).split()
# read_run's `events` that leaves reading event files to
# Index.read_pending_scalars. A run still in progress has its event files
# found now (they and their directories are watched: new ones come); a
# finished one has its directories searched then too (UNSEARCHED).
LIST_EVENTS = "list"
# scalars_pending of a run whose directories are not searched yet (no event
# file is named `*`: each has .tfevents. in its name).
UNSEARCHED = "*"


@dataclass
class RunRecord:
    run: Dict[str, object]  # RUN_FIELDS
    attrs: List[tuple] = field(default_factory=list)  # (name, kind, num, str, folded, json)
    flags: List[tuple] = field(default_factory=list)  # (name, kind, num, str, folded, json)
    scalars: List[tuple] = field(default_factory=list)  # (prefix, tag, preferred, first_val, ...)
    tags: List[str] = field(default_factory=list)
    comments: List[tuple] = field(default_factory=list)  # (seq, user, host, body, time)

    @property
    def id(self):
        return self.run["id"]


def is_run_dir(path):
    return os.path.exists(os.path.join(disk_path(path), ".guild", "opref"))


def read_run(run_dir, run_id, deleted, listing=None, events=True):
    """The RunRecord of a run directory (its path as stored: `storable_text`),
    or None when it is not a run.

    Without `events`, event files are not read: the record's scalars,
    watched files and signature are None, for the indexer to keep the ones
    of the run's last whole read (the signature still tells a refresh
    whether anything changed since). With LIST_EVENTS they are not read:
    no scalars, and scalars_pending holds their paths (found and watched),
    or UNSEARCHED for a finished run (see read_pending_scalars)."""
    guild_dir = os.path.join(disk_path(run_dir), ".guild")
    read_since = time.time_ns()
    opref_path = os.path.join(guild_dir, "opref")
    if not os.path.exists(opref_path):  # Guild's test of a run directory
        return None
    problems = []
    opref_text = _read_text(opref_path, problems, OPREF_MAX_BYTES)
    attrs, values = read_attrs(os.path.join(guild_dir, "attrs"), problems)
    markers = _markers(guild_dir)
    record = RunRecord(run=dict.fromkeys(RUN_FIELDS), attrs=attrs)
    run = record.run
    run.update(id=run_id, deleted=int(deleted), dir=str(run_dir), listing=listing)
    run.update(describe_operation(opref_text, guild_dir, problems))
    run.update(_times(values, problems))
    run.update(run_status(guild_dir, values.get("exit_status"), markers))
    run.update(_user_fields(values))
    problems += _wrong_types(values)
    record.flags = _flags(values.get("flags"))
    record.tags = _tags(values.get("tags"))
    record.comments, run["comments_text"] = _comments(values.get("comments"))
    if events:
        record.scalars, event_paths = _read_events(disk_path(run_dir), events, run, problems)
        run["watched"] = "\n".join(watched_paths([row[0] for row in attrs], event_paths, is_finished(run)))
        run["signature"] = signature(run_dir, run["watched"], read_since)
    else:
        record.scalars = None
    run["problems"] = storable_text("; ".join(dict.fromkeys(problems))) or None  # once each (walks list .guild too)
    return record


def _read_events(run_dir, events, run, problems):
    """(scalar rows, event file paths); with LIST_EVENTS no rows, and what is pending in `run`."""
    if events is not LIST_EVENTS:
        return read_scalars(run_dir, problems)
    if is_finished(run):  # searched, read and watched when scalars are first read
        run["scalars_pending"] = UNSEARCHED
        return [], []
    event_paths = list_event_files(run_dir, problems)
    run["scalars_pending"] = "\n".join(event_paths) or None
    return [], event_paths


def unreadable_run(run_dir, run_id, deleted, listing, error):
    """The record of a run that could not be read: listed, with an error status."""
    run = dict.fromkeys(RUN_FIELDS)
    run.update(id=run_id, deleted=int(deleted), dir=str(run_dir), listing=listing, status="error",
               marked=0, comments_text="", watched=".guild",
               problems=storable_text(f"cannot read the run: {error}"))
    run["signature"] = signature(run_dir, run["watched"])
    return RunRecord(run=run)


# Attributes


def read_attrs(attrs_dir, problems):
    """(attrs rows, {name: decoded value}) for every attribute file."""
    rows, values = [], {}
    for name in sorted(_listdir(attrs_dir, problems)):
        if not _is_text(name):  # no filter can name it, and SQLite cannot store it
            problems.append(f"attribute name {storable_text(name)} is not UTF-8")
            continue
        if is_lazy(name):  # read and decoded only when a filter names it
            rows.append((name, "raw", None, None, None, None))
            continue
        text = _read_text(os.path.join(attrs_dir, name), problems)
        if text is None:
            continue
        value, row = _decoded(text, name, problems)
        values[name] = value
        rows.append((name, *row))
    return rows, values


def _decoded(text, name, problems):
    """(value, stored columns) of an attribute's text; a value that cannot be
    decoded or stored (too deep, lone surrogates) reads as null."""
    try:
        value = decode_attr(text)
        return value, stored_value(value)
    except Exception as e:  # any failure of one attribute is that attribute's problem
        problems.append(f"attribute {name}: {(str(e).splitlines() or [type(e).__name__])[0]}")
        return None, stored_value(None)


def read_attr_value(run_dir, name):
    """The stored value columns of one attribute file (None when unreadable)."""
    text = _read_text(os.path.join(disk_path(run_dir), ".guild", "attrs", name))
    return stored_value(None) if text is None else _decoded(text, name, [])[1]


EXPECTED_TYPES = {"flags": dict, "tags": list, "comments": list}


def _wrong_types(values):
    """Special attributes of a type Guild never writes: read as absent."""
    return [
        f"attribute {name} is not a {kind.__name__}"
        for name, kind in EXPECTED_TYPES.items()
        if values.get(name) is not None and not isinstance(values[name], kind)
    ]


def _flags(flags):
    if not isinstance(flags, dict):
        return []
    return [(storable_text(name), *stored_value(value)) for name, value in flags.items() if isinstance(name, str)]


def _tags(tags):
    if not isinstance(tags, list):
        return []
    return list(dict.fromkeys(storable_text(tag) for tag in tags if isinstance(tag, str)))


def _comments(comments):
    """Comment rows and Guild's --comment search text (lower-cased)."""
    if not isinstance(comments, list):
        return [], ""
    rows, texts = [], []
    for seq, comment in enumerate(c for c in comments if isinstance(c, dict)):
        fields = [comment.get(k) for k in ("user", "host", "body")]
        rows.append((seq, *[_text_or_none(f) for f in fields], _storable_number(comment.get("time"))))
        texts.append("\n".join(str(f or "").lower() for f in fields))
    return rows, storable_text("\n".join(texts))


def _user_fields(values):
    label = values.get("label")
    digest = values.get("sourcecode_digest")
    return {
        "label": _text_or_none(label),
        "marked": int(bool(values.get("marked"))),
        "sourcecode_digest": storable_text(digest) if isinstance(digest, str) else None,
    }


def _times(values, problems):
    times = {name: _timestamp(values.get(name), name, problems) for name in ("initialized", "started", "stopped")}
    started, initialized = times["started"], times["initialized"]
    times["timestamp"] = started if started is not None else initialized
    return times


def _timestamp(value, name, problems):
    """A time as stored: out-of-range numbers keep their order (as Guild sorts
    them) and NaN, which no order places, is no time."""
    if value is None:
        return None
    if _number_or_none(value) is None:
        problems.append(f"attribute {name} is not a number")
    return _storable_number(value)


# Status


def run_status(guild_dir, exit_status, markers):
    """Guild's status: markers first, then exit status, then a live LOCK pid."""
    fields = {"status": None, "pid": None, "remote": None, "exit_status": _storable_number(exit_status)}
    if "LOCK.remote" in markers:
        fields["remote"] = (_read_text(os.path.join(guild_dir, "LOCK.remote"), None, MARKER_MAX_BYTES) or "").strip() or None
        return {**fields, "status": "running"}
    for marker, status in (("PENDING", "pending"), ("STAGED", "staged")):
        if marker in markers:
            return {**fields, "status": status}
    if exit_status is not None:
        return {**fields, "status": status_for_exit(exit_status)}
    pid = _lock_pid(guild_dir) if "LOCK" in markers else None
    status = "running" if pid is not None and pid_alive(pid) else "error"
    return {**fields, "status": status, "pid": pid}


def status_for_exit(exit_status):
    try:
        return "completed" if exit_status == 0 else ("terminated" if exit_status < 0 else "error")
    except TypeError:
        return "error"


def _lock_pid(guild_dir):
    try:
        return int(read_regular(os.path.join(guild_dir, "LOCK"), MARKER_MAX_BYTES)[:10])
    except (OSError, ValueError):
        return None


def pid_alive(pid):
    """Whether a process has this pid, as Guild decides: /proc/<pid> where
    /proc exists, else whether the pid can be signalled (EPERM: it exists)."""
    if not isinstance(pid, int) or pid <= 0:  # 0 and negatives name process groups
        return False
    if os.path.isdir("/proc"):
        return os.path.exists(f"/proc/{pid}")
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _markers(guild_dir):
    return set(_listdir(guild_dir)).intersection(MARKERS)


# Operation


def describe_operation(opref_text, guild_dir, problems, seen=None):
    """Opref parts and what Guild derives from them (formatted operation, ...)."""
    opref = parse_opref(opref_text)
    if opref is None:
        if opref_text is not None:  # else reading it was the problem
            problems.append("cannot parse .guild/opref")
        return {}
    pkg_type, pkg_name, pkg_version, model, op = opref
    operation = format_operation(opref)
    proto = _batch_proto(guild_dir, seen or set())
    if proto:
        operation = proto["operation"] + ("" if operation.startswith("+") else "+") + operation
    pkg, model_part, op_part = split_opspec(operation)
    return {
        "pkg_type": pkg_type,
        "pkg_name": pkg_name,
        "pkg_version": pkg_version,
        "model": model,
        "op": op,
        "operation": operation,
        "opspec_pkg": pkg,
        "opspec_model": model_part,
        "opspec_op": op_part,
        "pkg_desc": format_pkg(opref),
        "op_dir": proto["op_dir"] if proto else op_dir(opref),
    }


def parse_opref(text):
    text = text or ""
    try:  # Guild's shlex split; plain words need none of shlex's (slow) care
        parts = shlex.split(text, posix=True) if any(c in text for c in "'\"\\") else text.split()
    except ValueError:
        return None
    if len(parts) != 4 or ":" not in parts[0]:
        return None
    pkg_type, pkg_name = parts[0].split(":", 1)
    return pkg_type, pkg_name, parts[1], parts[2], parts[3]


def _full_op(model, op):
    return f"{model}:{op}" if model else op


OPERATION_FORMATS = {
    "guildfile": lambda pkg, model, op: _full_op(model, op),
    "script": lambda pkg, model, op: _full_op(model, op),
    "builtin": lambda pkg, model, op: _full_op(model, op),
    "import": lambda pkg, model, op: _full_op(model, op),
    "test": lambda pkg, model, op: _full_op(model, op),
    "package": lambda pkg, model, op: f"{pkg}/{model}:{op}" if model else f"{pkg}/{op}",
    "pending": lambda pkg, model, op: op,
    "func": lambda pkg, model, op: f"{op}()",
}


def format_operation(opref):
    pkg_type, pkg_name, _version, model, op = opref
    fmt = OPERATION_FORMATS.get(pkg_type)
    return fmt(pkg_name, model, op) if fmt else "?"


def format_pkg(opref):
    """Guild's `from`: the guildfile or script directory, or the package."""
    pkg_type, pkg_name, version = opref[:3]
    if pkg_type in ("guildfile", "script"):
        return _user_dir(pkg_name)
    if pkg_type == "package":
        return f"{pkg_name}=={version}"
    return pkg_name


def _user_dir(path):
    path = os.path.abspath(path)
    home = os.path.expanduser("~")
    return os.path.join("~", path[len(home) + 1 :]) if path.startswith(home) else path


def op_dir(opref):
    pkg_type, pkg_name = opref[:2]
    if pkg_type in ("guildfile", "import"):
        return os.path.dirname(pkg_name)
    if pkg_type == "script":
        return pkg_name
    return None


def _batch_proto(guild_dir, seen):
    proto_dir = os.path.join(guild_dir, "proto")
    proto_guild_dir = os.path.join(proto_dir, ".guild")
    text = _read_text(os.path.join(proto_guild_dir, "opref"), None, OPREF_MAX_BYTES)
    if text is None:  # most runs: no proto, and no realpath to pay for
        return None
    real_dir = os.path.realpath(proto_dir)  # a link may lead back: each real proto once
    if real_dir in seen:
        return None
    seen.add(real_dir)
    return describe_operation(text, proto_guild_dir, [], seen) or None


# Scalars


def read_scalars(run_dir, problems):
    """Scalar summary rows per (prefix, tag), and the event files read."""
    summaries, event_paths = {}, []
    for prefix, dir_path in event_dirs(run_dir, problems):
        for path in _event_files(dir_path, problems):
            event_paths.append(_event_path(prefix, path))
            if _add_event_file(summaries, prefix, path, event_paths[-1], problems):
                break  # Guild stops reading this directory's other files here
    return _summary_rows(summaries), event_paths


def list_event_files(run_dir, problems):
    """The event files read_scalars starts reading (all of each directory's), unread."""
    return [_event_path(prefix, path) for prefix, dir_path in event_dirs(run_dir, problems)
            for path in _event_files(dir_path, problems)]


def _event_path(prefix, path):
    """An event file's path relative to the run directory."""
    return f"{prefix}/{path.name}" if prefix else path.name


def read_pending_scalars(run_dir, pending):
    """(scalar rows, problems, event file paths found now) of what a
    LIST_EVENTS read left pending: the event files it found (their paths as
    it stored them; no paths found now: None), or UNSEARCHED, read as
    read_scalars reads them."""
    if pending == UNSEARCHED:
        problems = []
        rows, event_paths = read_scalars(disk_path(run_dir), problems)
        return rows, problems, event_paths
    summaries, problems, aborted = {}, [], None
    for rel in pending.split("\n"):
        prefix = rel.rpartition("/")[0]
        if prefix != aborted and _add_event_file(summaries, prefix, f"{disk_path(run_dir)}/{rel}", rel, problems):
            aborted = prefix  # the files after it in its directory are not read
    return _summary_rows(summaries), problems, None


def _add_event_file(summaries, prefix, path, rel, problems):
    """Adds an event file's scalars to the summaries; whether Guild would stop reading its directory."""
    from . import tfevents  # only runs being read need it

    read = tfevents.read_scalars(path)
    for tag, value, step in read.scalars:
        summaries.setdefault((prefix, tag), Summary()).add(value, step)
    if read.problem:
        problems.append(f"{rel}: {read.problem}")
    return read.aborts_dir


def _summary_rows(summaries):
    preferred = _preferred_prefixes(summaries)
    return [
        (prefix, tag, int(preferred[tag] == prefix), *summary.row())
        for (prefix, tag), summary in sorted(summaries.items())
    ]


# Guild walks a run following the links that lead to runs (a batch links
# its trials); a link back to the run or between two runs would have it walk
# forever. runq enters the run each link leads to once, MAX_WALK_DEPTH deep.
MAX_WALK_DEPTH = 200


def event_dirs(run_dir, problems=None):
    """(prefix, dir) of each directory holding event files, as Guild walks them.

    The walk is os.walk's (top-down, links followed, a directory that cannot
    be listed noted and skipped) on os.scandir's entries, whose types and
    link bits cost no further stat: most of a run's directories hold source
    code, not event files."""
    entered = set()
    _first_visit(run_dir, entered)
    yield from _event_dirs_from(run_dir, ".", run_dir, entered, problems)


def _event_dirs_from(root, rel, run_dir, entered, problems):
    try:
        with os.scandir(root) as listing:
            entries = list(listing)
    except OSError as e:
        _note(problems, f"cannot list {_relative(e.filename, run_dir)}: {error_text(e)}")
        return
    if _too_deep(rel, problems):
        return
    dirs, others = [], []
    for entry in entries:
        (dirs if _is_dir(entry) else others).append(entry)
    subdirs = [entry for entry in dirs if _may_enter(entry, entered)]
    if any(".tfevents." in entry.name for entry in others):  # Guild's rule (tfevents.is_event_file)
        if _is_text(rel):
            yield ("" if rel == "." else rel.replace(os.sep, "/")), root
        else:
            _note(problems, f"event directory {storable_text(rel)}: name is not UTF-8, not read")
    for entry in subdirs:
        yield from _event_dirs_from(entry.path, entry.name if rel == "." else f"{rel}{os.sep}{entry.name}",
                                    run_dir, entered, problems)


def _is_dir(entry):
    try:
        return entry.is_dir()
    except OSError:  # as os.walk takes it
        return False


def _may_enter(entry, entered):
    try:
        if not entry.is_symlink():
            return True
    except OSError:  # as os.path.islink takes it
        return True
    return is_run_dir(entry.path) and _first_visit(entry.path, entered)


def _first_visit(path, visited):
    try:
        st = os.stat(path)
    except OSError:
        return False
    identity = (st.st_dev, st.st_ino)
    if identity in visited:
        return False
    visited.add(identity)
    return True


def _too_deep(rel, problems):
    if rel.count(os.sep) < MAX_WALK_DEPTH:
        return False
    _note(problems, f"directories more than {MAX_WALK_DEPTH} deep are not searched for event files")
    return True


def _event_files(dir_path, problems):
    """The event files of a directory Guild reads, those with UTF-8 names."""
    from . import tfevents

    try:
        paths = tfevents.loaded_event_files(dir_path)
    except OSError as e:
        _note(problems, f"cannot list {storable_text(os.path.basename(dir_path))}: {error_text(e)}")
        return []
    for path in paths:
        if not _is_text(path.name):
            _note(problems, f"event file {storable_text(path.name)}: name is not UTF-8, not read")
    return [path for path in paths if _is_text(path.name)]


def _preferred_prefixes(summaries):
    """The prefix an unprefixed tag reads: Guild reads its scalar rows in
    (prefix, tag) index order and takes the first, so the least prefix by
    code point ('' for the run root sorts before '.guild')."""
    preferred = {}
    for prefix, tag in summaries:
        if tag not in preferred or prefix < preferred[tag]:
            preferred[tag] = prefix
    return preferred


class Summary:
    """Guild's per-tag summary: the last value is the one at the highest step."""

    __slots__ = ("first", "last", "min", "max", "total", "count")

    def __init__(self):
        self.first = self.last = self.min = self.max = None
        self.total = 0.0
        self.count = 0

    def add(self, value, step):
        if self.first is None or step < self.first[1]:
            self.first = (value, step)
        if self.last is None or step >= self.last[1]:
            self.last = (value, step)
        if self.min is None or value < self.min[0]:
            self.min = (value, step)
        if self.max is None or value > self.max[0]:
            self.max = (value, step)
        self.total += value
        self.count += 1

    def row(self):
        last = self.last[0]
        return (
            *self.first,
            *self.last,
            *self.min,
            *self.max,
            self.total / self.count,
            self.total,
            self.count,
            str(last).lower() if last and last == last else None,  # NaN: undefined
        )


# Signature


def watched_paths(attr_names, event_paths, finished):
    """Files whose stats change when the run changes, relative to the run dir.

    Every run: .guild (markers come and go), .guild/attrs (attributes
    written or deleted), every attribute file (Guild rewrites label, tags,
    marked and comments in place, and so may anyone with an editor: an
    in-place write changes no directory), and the event files (they grow).
    A run still in progress also creates new directories and event files:
    its run and event directories are watched too."""
    attrs = [f".guild/attrs/{name}" for name in attr_names]
    if finished:
        return [".guild", ".guild/attrs", *attrs, *event_paths]
    event_dirs_ = sorted({os.path.dirname(p) for p in event_paths} - {".guild", ""})
    return [".", ".guild", ".guild/attrs", *attrs, *event_dirs_, *event_paths]


def is_finished(run):
    """A run whose status no process or marker can change any more."""
    return run["status"] in FINISHED and run["pid"] is None


FINISHED = ("completed", "error", "terminated")
# File times come from a coarse kernel clock that may lag time.time_ns() by
# a clock tick (1-10 ms); a file stamped within this window of the moment a
# read began may have been written after the read saw it.
RACY_WINDOW_NS = 50_000_000


def signature(run_dir, watched, read_since=None):
    """A number that changes when any watched file's mtime, ctime or size
    changes (or it appears or vanishes). Tuples of ints hash the same in
    every process.

    With `read_since` (the time_ns() at which reading the run began): None,
    which equals no stored signature, when a watched file changed since
    then, so that a write racing the read is read again by the next refresh
    instead of being taken for the state that was read. A file's ctime
    catches a write whose mtime was put back (utime sets the ctime to now);
    a directory's is left out, as it changes when the run is moved."""
    stat, is_dir = os.stat, S_ISDIR
    run_dir = disk_path(run_dir)
    values = []
    newest = 0
    for rel in watched.split("\n") if watched else ():
        try:
            st = stat(f"{run_dir}/{rel}")
        except OSError:
            values.append(-1)
            continue
        changed = st.st_mtime_ns if is_dir(st.st_mode) else max(st.st_mtime_ns, st.st_ctime_ns)
        values += (changed, st.st_size)
        newest = max(newest, changed)
    if read_since is not None and newest >= read_since - RACY_WINDOW_NS:
        return None
    return hash(tuple(values))


# Small readers


def _read_text(path, problems=None, limit=ATTR_MAX_BYTES):
    """A file's text as Guild reads it, or None (a problem when `problems`
    is given) when it is not a readable regular UTF-8 file."""
    try:
        data = read_regular(path, limit)
    except OSError as e:
        _note(problems, f"cannot read {_shown_path(path)}: {error_text(e)}")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        _note(problems, f"{_shown_path(path)} is not UTF-8")
        return None
    # Guild reads in text mode: universal newlines.
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _note(problems, text):
    if problems is not None:
        problems.append(text)


def _shown_path(path):
    """A run file's path from its .guild directory on, for a problems line."""
    start = path.rfind("/.guild/")
    return storable_text(path[start + 1 :] if start >= 0 else os.path.basename(path))


def _is_text(name):
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def disk_path(path):
    """The path on disk of a path stored with its non-UTF-8 bytes escaped
    (`storable_text`): the literal one if it exists, else the unescaped one."""
    if "\\x" not in path or os.path.lexists(path):
        return path
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), path)


def _listdir(path, problems=None):
    """A directory's entries; none when it cannot be listed (a problem unless it is missing)."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
    except OSError as e:
        _note(problems, f"cannot list {_shown_path(path)}: {error_text(e)}")
        return []


def _relative(path, run_dir):
    return storable_text(os.path.relpath(path, run_dir)) if path else "a directory"


def _number_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _storable_number(value):
    number = _number_or_none(value)
    return None if number is None else stored_number(number)


def _text_or_none(value):
    return None if value is None else storable_text(str(value))
