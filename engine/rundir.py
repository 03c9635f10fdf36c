"""Reads one Guild run directory into the rows the index stores.

Pure file reading: no database here. Everything Guild would compute from
the directory (status, formatted operation, sort timestamp, scalar
summaries) is computed once, when the run is read, except what depends on
a live process, which the indexer re-checks on every refresh.
"""

import os
import shlex
import time
from dataclasses import dataclass, field
from stat import S_ISDIR
from typing import Dict, List

from .attrs import LAZY_ATTRS, decode_attr
from .opspec import split_opspec
from .values import stored_value

MARKERS = ("LOCK", "LOCK.remote", "PENDING", "STAGED")
RUN_FIELDS = (
    "key id deleted dir pkg_type pkg_name pkg_version model op operation opspec_pkg "
    "opspec_model opspec_op pkg_desc op_dir initialized started stopped timestamp "
    "exit_status status pid remote label marked sourcecode_digest comments_text "
    "listing watched signature problems"
).split()


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
    return os.path.exists(os.path.join(path, ".guild", "opref"))


def read_run(run_dir, run_id, deleted, listing=None, events=True):
    """The RunRecord of a run directory, or None when it is not a run.

    Without `events`, event files are not read: the record's scalars,
    watched files and signature are None, for the indexer to keep the ones
    of the run's last whole read (the signature still tells a refresh
    whether anything changed since)."""
    guild_dir = os.path.join(run_dir, ".guild")
    read_since = time.time_ns()
    opref_text = _read_text(os.path.join(guild_dir, "opref"))
    if opref_text is None:
        return None
    problems = []
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
        record.scalars, event_paths = read_scalars(run_dir, problems)
        run["watched"] = "\n".join(watched_paths([row[0] for row in attrs], event_paths, is_finished(run)))
        run["signature"] = signature(run_dir, run["watched"], read_since)
    else:
        record.scalars = None
    run["problems"] = "; ".join(problems) or None
    return record


def unreadable_run(run_dir, run_id, deleted, listing, error):
    """The record of a run that could not be read: listed, with an error status."""
    run = dict.fromkeys(RUN_FIELDS)
    run.update(id=run_id, deleted=int(deleted), dir=str(run_dir), listing=listing, status="error",
               marked=0, comments_text="", watched=".guild", problems=f"cannot read the run: {error}")
    run["signature"] = signature(run_dir, run["watched"])
    return RunRecord(run=run)


# Attributes


def read_attrs(attrs_dir, problems):
    """(attrs rows, {name: decoded value}) for every attribute file."""
    rows, values = [], {}
    for name in sorted(_listdir(attrs_dir)):
        if name in LAZY_ATTRS:  # read and decoded only when a filter names it
            rows.append((name, "raw", None, None, None, None))
            continue
        text = _read_text(os.path.join(attrs_dir, name), problems)
        if text is None:
            continue
        try:
            value = decode_attr(text)
        except Exception as e:
            problems.append(f"attribute {name}: {str(e).splitlines()[0]}")
            value = None
        values[name] = value
        rows.append((name, *stored_value(value)))
    return rows, values


def read_attr_value(run_dir, name):
    """The stored value columns of one attribute file (None when unreadable)."""
    text = _read_text(os.path.join(run_dir, ".guild", "attrs", name))
    try:
        return stored_value(None if text is None else decode_attr(text))
    except Exception:
        return stored_value(None)


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
    return [(name, *stored_value(value)) for name, value in flags.items() if isinstance(name, str)]


def _tags(tags):
    if not isinstance(tags, list):
        return []
    return list(dict.fromkeys(tag for tag in tags if isinstance(tag, str)))


def _comments(comments):
    """Comment rows and Guild's --comment search text (lower-cased)."""
    if not isinstance(comments, list):
        return [], ""
    rows, texts = [], []
    for seq, comment in enumerate(c for c in comments if isinstance(c, dict)):
        fields = [comment.get(k) for k in ("user", "host", "body")]
        rows.append((seq, *[_text_or_none(f) for f in fields], _number_or_none(comment.get("time"))))
        texts.append("\n".join(str(f or "").lower() for f in fields))
    return rows, "\n".join(texts)


def _user_fields(values):
    label = values.get("label")
    digest = values.get("sourcecode_digest")
    return {
        "label": None if label is None else str(label),
        "marked": int(bool(values.get("marked"))),
        "sourcecode_digest": digest if isinstance(digest, str) else None,
    }


def _times(values, problems):
    times = {name: _timestamp(values.get(name), name, problems) for name in ("initialized", "started", "stopped")}
    started, initialized = times["started"], times["initialized"]
    times["timestamp"] = started if started is not None else initialized
    return times


def _timestamp(value, name, problems):
    if value is None:
        return None
    number = _number_or_none(value)
    if number is None:
        problems.append(f"attribute {name} is not a number")
    return number


# Status


def run_status(guild_dir, exit_status, markers):
    """Guild's status: markers first, then exit status, then a live LOCK pid."""
    fields = {"status": None, "pid": None, "remote": None, "exit_status": _number_or_none(exit_status)}
    if "LOCK.remote" in markers:
        fields["remote"] = (_read_text(os.path.join(guild_dir, "LOCK.remote")) or "").strip() or None
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
        with open(os.path.join(guild_dir, "LOCK")) as f:
            return int(f.read(10))
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
        problems.append("cannot read .guild/opref")
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
    text = _read_text(os.path.join(proto_guild_dir, "opref"))
    if text is None or proto_dir in seen:
        return None
    seen.add(proto_dir)
    return describe_operation(text, proto_guild_dir, [], seen) or None


# Scalars


def read_scalars(run_dir, problems):
    """Scalar summary rows per (prefix, tag), and the event files read."""
    from . import tfevents  # only runs being read need it

    summaries, event_paths = {}, []
    for prefix, dir_path in event_dirs(run_dir):
        for path in tfevents.loaded_event_files(dir_path):
            event_paths.append(os.path.relpath(path, run_dir))
            read = tfevents.read_scalars(path)
            for tag, value, step in read.scalars:
                summaries.setdefault((prefix, tag), Summary()).add(value, step)
            if read.problem:
                problems.append(f"{event_paths[-1]}: {read.problem}")
            if read.aborts_dir:
                break  # Guild stops reading this directory's other files here
    preferred = _preferred_prefixes(summaries)
    rows = [
        (prefix, tag, int(preferred[tag] == prefix), *summary.row())
        for (prefix, tag), summary in sorted(summaries.items())
    ]
    return rows, event_paths


def event_dirs(run_dir):
    """(prefix, dir) of each directory holding event files, as Guild walks them."""
    for root, dirs, files in os.walk(run_dir, followlinks=True):
        dirs[:] = [d for d in dirs if not _is_foreign_link(os.path.join(root, d))]
        if any(".tfevents." in name for name in files):  # Guild's rule (tfevents.is_event_file)
            rel = os.path.relpath(root, run_dir)
            yield ("" if rel == "." else rel.replace(os.sep, "/")), root


def _is_foreign_link(path):
    return os.path.islink(path) and not is_run_dir(path)


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


def _read_text(path, problems=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if problems is not None:
            problems.append(f"{os.path.basename(path)} is not UTF-8")
        return None
    # Guild reads in text mode: universal newlines.
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _number_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text_or_none(value):
    return None if value is None else str(value)
