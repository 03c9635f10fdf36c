"""Output: run tables shaped like Guild's, JSON, and SQL scripts."""

import json
import os
import sys
from datetime import datetime

import typer

COLUMN_SPACING = 2
LIST_COLUMNS = ("index", "op_desc", "started", "status", "label")
PREVIEW_COLUMNS = ("short_index", "op_desc", "started", "status", "label")


def started_text(timestamp):
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp / 1000000).strftime("%Y-%m-%d %H:%M:%S")


def run_cells(run, cwd):
    op_desc = (run.operation or "?") + _op_dir_suffix(run.op_dir, cwd)
    return {
        "index": f"[{run.position}:{run.short_id}]",
        "short_index": f"[{run.short_id}]",
        "op_desc": op_desc + (" [marked]" if run.marked else ""),
        "started": started_text(run.started),
        "status": f"{run.status} ({run.remote})" if run.remote else run.status,
        "label": run.label or "",
    }


def _op_dir_suffix(op_dir, cwd):
    if not op_dir:
        return ""
    path = os.path.abspath(op_dir)
    if path == cwd:
        return ""
    if path.startswith(cwd + os.sep):
        shown = os.path.relpath(path, cwd)
    else:
        home = os.path.expanduser("~")
        shown = "~" + path[len(home) :] if path.startswith(home + os.sep) else path
    return f" ({_shorten(shown)})"


def _shorten(path, max_len=28):
    if len(path) <= max_len:
        return path
    keep = max_len - 1
    return path[: keep // 2] + "\u2026" + path[-(keep - keep // 2) :]


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
        "started": run.started,
        "started_text": started_text(run.started),
        "stopped": run.stopped,
        "status": run.status,
        "exit_status": run.exit_status,
        "label": run.label,
        "marked": bool(run.marked),
        "deleted": bool(run.deleted),
        "run_dir": run.dir,
    }


def print_json(runs):
    typer.echo(json.dumps([run_json(run) for run in runs], indent=2))


def sql_script(compiled):
    """The query and its parameters as a valid SQL script."""
    lines = [compiled.sql(pretty=True) + ";"]
    lines += [f"-- :{name} = {sql_literal(value)}" for name, value in compiled.params.items()]
    return "\n".join(lines)


def sql_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def size_text(num_bytes):
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1024:
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"
