"""Output: run tables shaped like Guild's, JSON, and SQL scripts."""

import functools
import json
import math
import os
import sys
from datetime import datetime

import typer

COLUMN_SPACING = 2
LIST_COLUMNS = ("index", "op_desc", "started", "status", "label")
PREVIEW_COLUMNS = ("short_index", "op_desc", "started", "status", "label")


def started_text(timestamp):
    """Local time as Guild shows it; '' for a time no date can show (Guild stops there)."""
    if not timestamp:
        return ""
    try:
        return datetime.fromtimestamp(timestamp / 1000000).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return ""


def run_cells(run, cwd):
    op_desc = (run.operation or "?") + _op_dir_suffix(run.op_dir, cwd)
    cells = {
        "index": f"[{run.position}:{run.short_id}]",
        "short_index": f"[{run.short_id}]",
        "op_desc": op_desc + (" [marked]" if run.marked else ""),
        "started": started_text(run.started),
        "status": f"{run.status} ({run.remote})" if run.remote else run.status,
        "label": run.label or "",
    }
    return {column: _one_line(text) for column, text in cells.items()}


def _one_line(text):
    """Cell text that keeps a table row on one line and cannot drive the
    terminal: control characters as Python escapes (Guild prints them raw)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


@functools.lru_cache(maxsize=1024)  # few projects, many runs
def _op_dir_suffix(op_dir, cwd):
    if not op_dir or os.path.realpath(op_dir) == os.path.realpath(cwd):
        return ""
    return f" ({_shorten(_op_dir_text(op_dir, cwd))})"


def _op_dir_text(op_dir, cwd):
    """As Guild shows it: below cwd relative to it, below cwd's parent as
    `../...`, else the absolute path with the user's home as `~`."""
    parent = os.path.dirname(cwd)
    inside = _path_below(op_dir, cwd)
    if inside is not None:
        return inside
    if op_dir == parent:
        return ".." + os.sep
    beside = _path_below(op_dir, parent)
    if beside is not None:
        return os.path.join("..", beside)
    return _user_path(os.path.abspath(op_dir))


def _path_below(path, base):
    """`path` relative to `base` when it lies strictly below it, else None."""
    base = base if base.endswith(os.sep) else base + os.sep
    return path[len(base) :] if path.startswith(base) else None


def _user_path(path):
    # Guild compares without a separator, so /home/al also abbreviates /home/alice.
    home = os.path.expanduser("~")
    return os.path.join("~", path[len(home) + 1 :]) if path.startswith(home) else path


def _shorten(path, max_len=28, ellipsis="\u2026"):
    """Guild's shortening: whole middle components give way to an ellipsis,
    keeping the last component (and the first of a relative path) and
    filling from alternate ends while it fits."""
    if len(path) <= max_len:
        return path
    parts = _path_parts(path)
    if len(parts) == 1:
        return parts[0]
    right = [parts.pop()]
    left = [] if parts[0].startswith(os.sep) else [parts.pop(0)]
    take_right = bool(left)
    while parts:
        used = sum(len(part) + 1 for part in left + right)
        part = parts.pop() if take_right else parts.pop(0)
        if used + len(part) + len(ellipsis) >= max_len:
            break
        (right if take_right else left).append(part)
        take_right = not take_right
    shortened = os.sep.join([os.sep.join(left), ellipsis, os.sep.join(reversed(right))])
    return path if len(shortened) >= len(path) else shortened


def _path_parts(path):
    """Components, each keeping the extra separators before it: '/a//b' -> ['/a', '/b']."""
    parts, blanks = [], []
    for piece in path.split(os.sep):
        if not piece:
            blanks.append(piece)
            continue
        parts.append(os.sep.join(blanks + [piece]))
        blanks = []
    if len(blanks) > 1:
        parts.append(os.sep.join(blanks))
    return parts


def table_lines(runs, columns, indent=0):
    """Rows padded to each column's widest cell (the last column unpadded)."""
    cwd = os.path.abspath(os.getcwd())
    rows = [run_cells(run, cwd) for run in runs]
    widths = {c: max((len(row[c]) for row in rows), default=0) for c in columns[:-1]}
    pad = " " * indent
    for row in rows:
        cells = [row[c].ljust(widths[c] + COLUMN_SPACING) for c in columns[:-1]]
        yield pad + "".join(cells) + row[columns[-1]]


def print_table(runs, columns, indent=0, err=False):
    stream = sys.stderr if err else sys.stdout
    stream.write("".join(line + "\n" for line in table_lines(runs, columns, indent)))
    stream.flush()


def run_json(run):
    return {
        "id": run.id,
        "index": run.position,
        "operation": run.operation,
        "started": _json_number(run.started),
        "started_text": started_text(run.started),
        "stopped": _json_number(run.stopped),
        "status": run.status,
        "exit_status": _json_number(run.exit_status),
        "label": run.label,
        "marked": bool(run.marked),
        "deleted": bool(run.deleted),
        "run_dir": run.dir,
    }


def _json_number(number):
    """JSON has no infinities: a time or exit status out of every range is null."""
    return None if isinstance(number, float) and not math.isfinite(number) else number


def print_json(runs):
    typer.echo(json.dumps([run_json(run) for run in runs], indent=2))


def sql_script(compiled):
    """The query and its parameters as a valid SQL script."""
    lines = [f"-- {line}" for line in _lazy_note(compiled.lazy_attrs)]
    lines.append(compiled.sql(pretty=True) + ";")
    lines += [f"-- :{name} = {sql_literal(value)}" for name, value in compiled.params.items()]
    return "\n".join(lines)


def plan_lines(rows):
    """EXPLAIN QUERY PLAN rows (id, parent id, detail) as a tree, drawn as sqlite3's shell draws it."""
    children = {}
    for node, parent, detail in rows:
        children.setdefault(parent, []).append((node, detail))
    lines = ["QUERY PLAN"]

    def branch(parent, prefix):
        kids = children.get(parent, [])
        for i, (node, detail) in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(prefix + ("`--" if last else "|--") + detail)
            branch(node, prefix + ("   " if last else "|  "))

    branch(0, "")
    return lines


def _lazy_note(names):
    if not names:
        return []
    return [
        f"Large attributes ({', '.join(sorted(names))}) are decoded into the index the first",
        "time a runq command selects on them: run one before running this script elsewhere.",
    ]


def sql_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and math.isinf(value):
        return "1e999" if value > 0 else "-1e999"  # SQLite reads these as infinities; Python's inf it does not
    if isinstance(value, (int, float)):
        return repr(value)
    return " || ".join(_string_parts(str(value))) or "''"


def _string_parts(text):
    """A string as SQL: quoted runs of printable text, char(...) for the rest,
    so that each parameter stays on its comment line."""
    parts, start = [], 0
    for i, ch in enumerate(text + "\n"):
        if i < len(text) and ch.isprintable():
            continue
        if start < i:
            parts.append("'" + text[start:i].replace("'", "''") + "'")
        if i < len(text):
            parts.append(f"char({ord(ch)})")
        start = i + 1
    return parts


def size_text(num_bytes):
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1024:
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"
