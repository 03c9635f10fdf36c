"""What output shows beyond the selected rows: Guild's values of the shown runs.

`--json`, `-v` and `-c` show more than a selection returns (commands,
comments, tags, the opref as Guild writes it). Those come, when a run is
printed, from the index where it holds a value exactly, else from the
run's own files as Guild's `Run.get` reads them: only the shown runs pay
for it, and raw attributes stay undecoded in the index.
"""

import json
import os
import shlex

from .attrs import decode_attr
from .files import ATTR_MAX_BYTES, MARKER_MAX_BYTES, OPREF_MAX_BYTES, read_regular
from .rundir import format_pkg, parse_opref

# Guild's `runs list --json` fields after id, run_dir and opref, in its order.
GUILD_JSON_ATTRS = ("exit_status", "cmd", "comments", "marked", "label", "started", "status", "stopped", "tags")


def attr(run_dir, name, default=None):
    """An attribute as Guild's `run.get(name, default)`: `default` when missing or null."""
    text = _read_text(os.path.join(run_dir, ".guild", "attrs", name))
    if text is None:
        return default
    try:
        value = decode_attr(text)
    except Exception:  # a file Guild could not decode either; show it as absent
        return default
    return default if value is None else value


def opref_text(run_dir):
    """The run's opref as Guild prints it (`str(run.opref)`), '' when it has none."""
    opref = parse_opref(_read_text(os.path.join(run_dir, ".guild", "opref"), OPREF_MAX_BYTES))
    if opref is None:
        return ""
    pkg_type, pkg_name, version, model, op = (_shell_quote(part) for part in opref)
    return f"{pkg_type}:{pkg_name} {version} {model} {op}"


def from_text(run_dir):
    """Guild's `from`: the guildfile or script directory (with ~), or the package."""
    opref = parse_opref(_read_text(os.path.join(run_dir, ".guild", "opref"), OPREF_MAX_BYTES))
    return format_pkg(opref) if opref else ""


def _shell_quote(text):
    """Guild's shlex quoting, which writes a lone quoted `'` as "'"."""
    quoted = shlex.quote(text or "")
    prefix = "''\"'\"'"
    if quoted.startswith(prefix) and quoted.endswith(prefix[::-1]):
        return "\"'" + quoted[len(prefix) : -len(prefix)] + "'\""
    return quoted


def lock_pid(run_dir):
    """The pid in the run's LOCK file, as Guild's `run.pid` reads it."""
    text = _read_text(os.path.join(run_dir, ".guild", "LOCK"), MARKER_MAX_BYTES)
    try:
        return int(text[:10]) if text is not None else None
    except ValueError:
        return None


def proto_dir(run_dir):
    """The batch prototype run inside a batch run, or None."""
    path = os.path.join(run_dir, ".guild", "proto")
    return path if os.path.exists(path) else None


def guild_json(run_dir, run_id, status, stored=None):
    """A run's record in Guild's `runs list --json` shape, batch prototype included.

    `stored` holds the index's (kind, num, str, json) rows of the run's
    attributes: a value they hold exactly is taken from there, any other is
    read from the run's files (always `cmd`, which the index keeps undecoded;
    every value when `stored` is None).
    """
    record = {"id": run_id, "run_dir": run_dir, "opref": opref_text(run_dir)}
    for name in GUILD_JSON_ATTRS:
        record[name] = status if name == "status" else _value(run_dir, name, stored)
    proto = proto_dir(run_dir)
    if proto:
        record["batch_proto"] = guild_json(proto, os.path.basename(proto), _proto_status(proto))
    return record


def _value(run_dir, name, stored):
    if stored is None:
        return attr(run_dir, name)
    if name not in stored:
        return None  # the index has a row for every attribute file a run has
    value = exact_value(*stored[name])
    return attr(run_dir, name) if value is INEXACT else value


class _Inexact:
    """A stored value that does not give back the decoded one (raw, dates, NaN, huge ints)."""


INEXACT = _Inexact()
EXACT_KINDS = {
    "null": lambda num, text, json_text: None,
    "bool": lambda num, text, json_text: bool(num),
    "int": lambda num, text, json_text: num if isinstance(num, int) else INEXACT,
    "float": lambda num, text, json_text: num if isinstance(num, float) else INEXACT,
    "str": lambda num, text, json_text: text,
    "list": lambda num, text, json_text: _exact_json(json_text),
    "dict": lambda num, text, json_text: _exact_json(json_text),
}


def exact_value(kind, num, text, json_text):
    """The decoded value an index row stores, or INEXACT when the row cannot give it back."""
    rebuild = EXACT_KINDS.get(kind)
    return rebuild(num, text, json_text) if rebuild else INEXACT


def _exact_json(json_text):
    # Dates inside a list were stored as their text: Guild could not print them at all.
    return INEXACT if json_text is None else json.loads(json_text)


def _proto_status(path):
    # A prototype never runs: Guild's status rules give `error` unless it
    # has an exit status or a marker.
    from .rundir import run_status

    guild_dir = os.path.join(path, ".guild")
    markers = {name for name in ("LOCK", "LOCK.remote", "PENDING", "STAGED") if os.path.exists(os.path.join(guild_dir, name))}
    return run_status(guild_dir, attr(path, "exit_status"), markers)["status"]


def _read_text(path, limit=ATTR_MAX_BYTES):
    """A regular file's text as Guild reads it (universal newlines), or None;
    never blocking on a FIFO nor reading past `limit`."""
    try:
        text = read_regular(path, limit).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
