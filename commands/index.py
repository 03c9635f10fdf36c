"""`runq index`: the index's state, a rebuild, or removing what runq keeps."""

import os
from datetime import datetime
from typing import Annotated, Optional

import typer

from .render import size_text
from .session import open_index, say_waiting
from ..engine.api import open_store
from ..engine.home import locate_index, resolve_home
from ..engine.indexer import LockWait, drop_index, kept_files, rebuild_index


def index(
    ctx: typer.Context,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Replace the index with a new one, built from the runs.")] = False,
    drop: Annotated[bool, typer.Option("--drop", help="Remove everything runq keeps for the home.")] = False,
    remote: Annotated[Optional[str], typer.Option("--remote", "-r", metavar="REMOTE", help="The index on REMOTE.")] = None,
):
    """Refresh the index and show its state."""
    if remote:
        from .remote import run_remote_index

        return run_remote_index(ctx, remote)
    settings = ctx.obj
    home = resolve_home(settings.guild_home)
    location = locate_index(home, settings.index_path)
    if drop:
        show_and_drop(home, location)
        return
    if rebuild:
        _rebuild(home, location, settings)
    index = open_index(settings)
    show_state(index, location)


def _rebuild(home, location, settings):
    if not location.url:
        rebuild_index(location.path, location.owned)
        return
    store = open_store(home, location, LockWait(settings.lock_timeout, say_waiting))
    try:
        store.clear()
    finally:
        store.close()


def show_state(index, location):
    live, deleted = index.counts()
    last = float(index.meta("last_refresh", 0) or 0)
    rows = [
        ("Guild home", f"{index.home.path} ({index.home.how_found})"),
        ("Index", f"{index.path} ({location.reason})"),
        *_store_rows(index, location),
        ("Runs", str(live)),
        ("Deleted runs", str(deleted)),
        ("Last change", datetime.fromtimestamp(last).strftime("%Y-%m-%d %H:%M:%S") if last else "never"),
        ("Refresh took", f"{float(index.meta('last_refresh_seconds', 0)):.3f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name + ':':<{width + 1}} {value}")


def _store_rows(index, location):
    """Where the rows are: the file's size, or PostgreSQL's home and tables."""
    if not location.url:
        size = sum(os.path.getsize(f"{index.path}{s}") for s in ("", "-wal") if os.path.exists(f"{index.path}{s}"))
        return [("Size", size_text(size))]
    name = index.home_name()
    return [
        ("Backend", index.backend),
        ("Home id", f"{index.home_id}{f' ({name})' if name else ''}, views in schema {index.views_schema}"),
        ("Size", f"{size_text(index.size())} (schema runq, every home)"),
    ]


def _drop_home(home, location):
    store = open_store(home, location)
    try:
        typer.echo(f"Removing {home.describe()}'s rows and views (home {store.home_id}) from {location.path}")
        store.drop()
    finally:
        store.close()


def show_and_drop(home, location):
    if location.url:
        _drop_home(home, location)
        return
    files = kept_files(location.path, location.owned)
    if not files:
        typer.echo(f"runq keeps nothing for {home.describe()} at {location.path}")
        return
    typer.echo(f"Removing what runq keeps for {home.describe()}:")
    for path in files:
        typer.echo(f"  {path}")
    if location.owned:
        typer.echo(f"  {location.path.parent} (if nothing else is left in it)")
    drop_index(location.path, location.owned)
