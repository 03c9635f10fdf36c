"""`runq sql`: read-only ad-hoc SQL over the index, streamed; also runs the
scripts `runq runs ... --sql` prints."""

import json
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .session import open_index
from ..engine.attrs import is_lazy
from ..engine.errors import QueryError

WIDTH_SAMPLE_ROWS = 1000  # the table's column widths come from the first rows; later ones may overflow
DEFAULT_TIMEOUT = 60.0


def sql(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="SQL|FILE|-", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as a JSON array of objects.")] = False,
    params: Annotated[
        Optional[List[str]],
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUE",
            help="Bind :NAME (over a script's own value). VALUE is an integer, else a decimal number, "
            "else text; 'quoted' is always text.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0, help="Stop a query after this much time in SQLite (0: no limit)."),
    ] = DEFAULT_TIMEOUT,
):
    """Run read-only SQL over the index (tables: runs, attrs, flags, scalars, tags, comments;
    views: runs_view, run_attrs, run_flags, run_scalars, run_tags, run_comments).

    The argument is SQL text, or '-' to read standard input, or one word
    naming a file: a script as 'runq runs ... --sql' prints it, whose
    '-- :NAME = VALUE' lines bind its parameters."""
    text = query_text(source)
    from ..engine.script import option_params, script_params  # parses scripts: only `runq sql` needs it

    bound = {**script_params(text), **option_params(params or ())}
    index = open_index(ctx.obj)
    index.decode_lazy(_named_attrs(text, bound))
    index.read_pending_scalars()  # any query may read scalars
    from ..engine.pgindex import read_only_query  # out of start-up, as every command imports this module

    query = read_only_query(index.conn, text, bound, timeout or None)
    with _stopped_by_ctrl_c(query), query as running:
        lines = json_lines(running.columns, running) if as_json else table_lines(running.columns, running)
        _write_all(lines)


def query_text(argument):
    """The SQL an argument means: '-' standard input; one word naming a file,
    its text; a one-word argument ending in .sql must name a file; anything
    else is SQL itself."""
    if argument == "-":
        return _not_empty(sys.stdin.read(), "standard input")
    if argument.split() != [argument]:
        return _not_empty(argument, "the argument")
    path = Path(argument)
    if path.is_file():
        try:
            return _not_empty(path.read_text(), argument)
        except (OSError, UnicodeDecodeError) as e:
            raise QueryError(f"cannot read {argument}: {e}") from None
    if argument.lower().endswith(".sql"):
        raise QueryError(f"no such file: {argument}", hint="give SQL text, a file, or - for standard input")
    return argument


def _named_attrs(text, bound):
    """The names a query may mean as attributes, which runq decodes first (as
    a selection naming one would): its string literals and bound values.
    Decoding a name no run has as a raw attribute costs one index lookup."""
    quoted = (literal.replace("''", "'") for literal in re.findall(r"'((?:[^']|'')*)'", text))
    return {value for value in (*quoted, *bound.values()) if isinstance(value, str) and is_lazy(value)}


def _not_empty(text, source):
    if not text.strip():
        raise QueryError(f"no SQL in {source}")
    return text


@contextmanager
def _stopped_by_ctrl_c(query):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: query.interrupt())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _write_all(lines):
    """Writes lines as they come (stdout's buffering decides when they show);
    a reader that goes away (`| head`) ends it quietly."""
    out = sys.stdout
    try:
        for line in lines:
            out.write(line)
        out.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise typer.Exit(0)


def _silence_stdout():
    # Python flushes stdout again at exit; with the reader gone that would
    # print a second BrokenPipeError.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def table_lines(columns, rows):
    """Lines of a table, column widths from the first rows."""
    if not columns:  # a statement without result columns
        return
    rows = iter(rows)
    sample = [[_cell(v) for v in row] for row in islice(rows, WIDTH_SAMPLE_ROWS)]
    widths = [max([len(c)] + [len(r[i]) for r in sample]) for i, c in enumerate(columns)]
    yield _table_line(columns, widths)
    yield "  ".join("-" * w for w in widths) + "\n"
    for cells in sample:
        yield _table_line(cells, widths)
    for row in rows:
        yield _table_line([_cell(v) for v in row], widths)


def _table_line(cells, widths):
    return "  ".join(v.ljust(w) for v, w in zip(cells, widths)).rstrip() + "\n"


def _cell(value):
    return "NULL" if value is None else str(value)


def json_lines(columns, rows):
    """A JSON array of one object per row (as json.dumps(..., indent=2)
    writes a list of dicts: a repeated column keeps its first place and
    last value), written as the rows come."""
    last = {name: i for i, name in enumerate(columns)}
    keys = [f'    {json.dumps(name)}: ' for name in last]
    positions = list(last.values())
    encode = json.JSONEncoder(default=str).encode
    separator = "[\n"
    for row in rows:
        members = ",\n".join(key + encode(row[i]) for key, i in zip(keys, positions))
        yield separator + ("  {\n" + members + "\n  }" if members else "  {}")
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"
