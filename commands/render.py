"""Output: run tables shaped like Guild's, JSON, and SQL scripts."""

import functools
import json
import math
import os
import shutil
import sys
from datetime import datetime
from typing import NamedTuple

import click
import typer

from ..engine import details

COLUMN_SPACING = 2
LIST_COLUMNS = ("index", "op_desc", "started", "status", "label")
SIMPLIFIED_COLUMNS = ("num_index", "op_desc", "status", "label")
PREVIEW_COLUMNS = ("short_index", "op_desc", "started", "status", "label")
MARKED = " [marked]"

# On a terminal, as Guild styles its tables: the op dir dimmed, and every
# cell (and detail line) ended by a reset.
DIM = "\x1b[2m"
RESET = "\x1b[0m"


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
        "num_index": f"[{run.position}]",
        "op_desc": op_desc + (MARKED if run.marked else ""),
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


def table_lines(runs, columns, indent=0, terminal=None, detail=None):
    """Rows padded to each column's widest cell (the last column unpadded),
    each followed by its `detail(run, styled)` lines. On a `terminal`, cells
    are styled and the right-most ones cut to fit its width, as Guild does."""
    cwd = os.path.abspath(os.getcwd())
    rows = [run_cells(run, cwd) for run in runs]
    widths = {c: max((len(row[c]) for row in rows), default=0) for c in columns[:-1]}
    pad = " " * indent
    styled = bool(terminal and terminal.styled)
    for run, row in zip(runs, rows):
        cells = [row[c].ljust(widths[c] + COLUMN_SPACING) for c in columns[:-1]] + [row[columns[-1]]]
        if terminal is None:
            yield pad + "".join(cells)
        else:
            segments = [_segments(run, row, column, cell, cwd) for column, cell in zip(columns, cells)]
            yield pad + _terminal_line(segments, indent, terminal)
        if detail:
            yield from (pad + line for line in detail(run, styled))


def _segments(run, row, column, cell, cwd):
    """A cell as (text, style) parts: the op dir of op_desc is dimmed."""
    if column != "op_desc":
        return [(cell, "")]
    marked = MARKED if run.marked else ""
    suffix = _one_line(_op_dir_suffix(run.op_dir, cwd))
    op_end = len(row["op_desc"]) - len(marked) - len(suffix)
    return [(cell[:op_end], ""), (suffix, DIM), (cell[op_end:][len(suffix):], "")]


def _terminal_line(cells, used, terminal):
    """Cells styled for a terminal and cut where the line reaches its width."""
    parts = []
    for segments in cells:
        cell_width = sum(len(text) for text, _ in segments)
        room = terminal.width - used
        if cell_width > room:
            parts.append(_styled(_cut(segments, room), terminal.styled))
            break
        parts.append(_styled(segments, terminal.styled))
        used += cell_width
    return "".join(parts)


def _cut(segments, room):
    kept = []
    for text, style in segments:
        if room <= 0:
            break
        kept.append((text[:room], style))
        room -= len(text)
    return kept


def _styled(segments, styled):
    if not styled:
        return "".join(text for text, _ in segments)
    return "".join(f"{style}{text}{RESET}" if style else text for text, style in segments) + RESET


class Terminal(NamedTuple):
    styled: bool  # escape codes wanted (not with NO_COLOR)
    width: int  # columns: lines are cut there


def terminal_for(stream):
    """How to draw on `stream`: None when it is not a terminal (plain, uncut)."""
    if not stream.isatty():
        return None
    return Terminal(styled=not os.environ.get("NO_COLOR"), width=shutil.get_terminal_size().columns)


def print_table(runs, columns, indent=0, err=False, detail=None):
    stream = sys.stderr if err else sys.stdout
    lines = table_lines(runs, columns, indent, terminal_for(stream), detail)
    stream.write("".join(line + "\n" for line in lines))
    stream.flush()


def note(message):
    """A note on stderr, dimmed on a terminal as Guild's notes are."""
    terminal = terminal_for(sys.stderr)
    styled = bool(terminal and terminal.styled)
    typer.echo(f"{DIM}{message}{RESET}" if styled else message, err=True)


# Details under each row: -v and -c


DETAIL_FIELDS = (
    "id", "operation", "from", "status", "started", "stopped", "marked", "label",
    "sourcecode_digest", "vcs_commit", "run_dir", "command", "exit_status", "pid",
)


def detail_lines(run, styled=False):
    """`runs list -v`: Guild's run details, read from the run's files."""
    values = _detail_values(run)
    end = RESET if styled else ""
    return [f"  {name}: {values[name]}{end}" for name in DETAIL_FIELDS]


def _detail_values(run):
    def attr(name):
        return _cell_text(details.attr(run.dir, name))

    return {
        "id": run.id,
        "operation": run.operation or "?",
        "from": details.from_text(run.dir),
        "status": run.status,
        "started": started_text(run.started),
        "stopped": started_text(run.stopped),
        "marked": "yes" if details.attr(run.dir, "marked") else "no",
        "label": attr("label"),
        "sourcecode_digest": attr("sourcecode_digest"),
        "vcs_commit": attr("vcs_commit"),
        "run_dir": _user_path(os.path.abspath(run.dir)),
        "command": command_text(details.attr(run.dir, "cmd")),
        "exit_status": attr("exit_status"),
        "pid": _cell_text(details.lock_pid(run.dir)),
    }


def _cell_text(value):
    return "" if value is None else str(value)


def command_text(cmd):
    """A run's command as Guild shows it: arguments with spaces (or empty) double-quoted."""
    if not cmd or not isinstance(cmd, list):
        return ""
    return " ".join(f'"{arg}"' if arg == "" or " " in str(arg) else str(arg) for arg in cmd)


def comment_lines(run, styled=False):
    """`runs list -c`: each comment's author and time, then its body, as Guild lays them out."""
    comments = details.attr(run.dir, "comments")
    if not isinstance(comments, list):
        return []
    lines = []
    for comment in comments:
        if isinstance(comment, dict):
            lines += _comment_text(comment).split("\n")
    return lines


def _comment_text(comment):
    formatter = click.HelpFormatter()
    formatter.write_text(f"  {_comment_author(comment)} {_comment_time(comment.get('time'))}")
    formatter.write_paragraph()
    formatter.indent()
    formatter.indent()
    formatter.write_text(str(comment.get("body") or ""))
    return formatter.getvalue()


def _comment_author(comment):
    user, host = comment.get("user") or "", comment.get("host") or ""
    return f"{user}@{host}" if host else user


def _comment_time(time):
    try:
        return started_text(time)
    except (ValueError, TypeError, OverflowError, OSError):
        return str(time)


def run_json(run, stored=None):
    """Guild's `runs list --json` record (with Guild's values: from the index
    where it holds them exactly, else from the run's files), then runq's own
    fields: RUNQ_JSON_FIELDS."""
    record = _strict_json(details.guild_json(run.dir, run.id, run.status, stored))
    record.update(
        index=run.position,
        operation=run.operation,
        started_text=started_text(run.started),
        deleted=bool(run.deleted),
    )
    return record


def _strict_json(value):
    """JSON has no NaN or infinities (Guild prints them as NaN, Infinity): they are null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_strict_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    return value


RUNQ_JSON_FIELDS = ("index", "operation", "started_text", "deleted")


def print_json(runs, index):
    """One JSON array on one line, as Guild prints it; `index` is the api.RunIndex the runs come from."""
    stored = index.stored_attrs(runs, details.GUILD_JSON_ATTRS)
    typer.echo(json.dumps([run_json(run, stored.get(run.id, {})) for run in runs], default=str))


def sql_script(compiled):
    """The query and its parameters as a valid SQL script."""
    lines = [f"-- {line}" for line in _lazy_note(compiled.lazy_attrs)]
    lines.append(compiled.sql(pretty=True) + ";")
    lines += [f"-- :{name} = {_param_text(value)}" for name, value in compiled.params.items()]
    return "\n".join(lines)


def _param_text(value):
    from ..engine.pgdialect import PythonMatch  # sqlglot's, loaded already by what compiled the query

    if isinstance(value, PythonMatch):  # PostgreSQL's -Fo patterns: runq fills these in as it runs
        return f"{value} (a text[] found as the selection runs)"
    return sql_literal(value)


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
    """What a script needs from the index that its SQL does not say: the
    attributes Guild writes that it names (its lazy_attrs hold every
    unprefixed name too, most of them flags or scalars)."""
    from ..engine.attrs import GUILD_LAZY_ATTRS

    names = GUILD_LAZY_ATTRS.intersection(names)
    if not names:
        return []
    return [
        f"Attributes this selection names ({', '.join(sorted(names))}) stay undecoded in the index until",
        "a runq command first selects on them: run one before running this script elsewhere.",
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
