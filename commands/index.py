"""`runq index`: the index's state, or a rebuild."""

import os
from datetime import datetime
from typing import Optional

import typer
from typing_extensions import Annotated

from .remote import run_remote_index
from .render import size_text
from .session import open_index
from ..engine.home import resolve_home
from ..engine.indexer import remove_index_files


def index(
    ctx: typer.Context,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Delete the index and build it again.")] = False,
    remote: Annotated[Optional[str], typer.Option("--remote", "-r", metavar="REMOTE", help="The index on REMOTE.")] = None,
):
    """Refresh the index and show its state."""
    if remote:
        return run_remote_index(ctx, remote, rebuild)
    settings = ctx.obj
    if rebuild:
        home = resolve_home(settings.guild_home)
        remove_index_files(settings.index_path or home.default_index_path)
    index = open_index(settings)
    live, deleted = index.counts()
    last = float(index.meta("last_refresh", 0) or 0)
    size = sum(os.path.getsize(f"{index.path}{s}") for s in ("", "-wal") if os.path.exists(f"{index.path}{s}"))
    rows = [
        ("Guild home", str(index.home.path)),
        ("Index", str(index.path)),
        ("Size", size_text(size)),
        ("Runs", str(live)),
        ("Deleted runs", str(deleted)),
        ("Last refresh", datetime.fromtimestamp(last).strftime("%Y-%m-%d %H:%M:%S") if last else "never"),
        ("Refresh took", f"{float(index.meta('last_refresh_seconds', 0)):.3f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name + ':':<{width + 1}} {value}")
