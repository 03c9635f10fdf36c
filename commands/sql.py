"""`runq sql`: read-only ad-hoc SQL over the index, for debugging selections."""

import json

import typer
from typing_extensions import Annotated

from .session import open_index
from ..engine.executor import execute_readonly


def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(metavar="SQL", help="One SELECT statement.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON objects.")] = False,
):
    """Run a read-only SQL query over the index (tables: runs, attrs, flags, scalars, tags, comments)."""
    index = open_index(ctx.obj)
    columns, rows = execute_readonly(index.conn, query)
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, row)) for row in rows], indent=2, default=str))
        return
    for line in table_text(columns, rows):
        typer.echo(line)


def table_text(columns, rows):
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    yield "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()
    yield "  ".join("-" * w for w in widths)
    for row in cells:
        yield "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()


def _cell(value):
    return "NULL" if value is None else str(value)
