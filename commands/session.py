"""Opening a Guild home's index for a command: settings from the root
options, a refresh before any selection, and its one-line report."""

import sqlite3
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import click
import typer

from ..engine.errors import HomeError
from ..engine.home import DELETED, LIVE, locate_index, resolve_home
from ..engine.indexer import Index, rebuild_index
from ..engine.purge import finish_pending


@dataclass(frozen=True)
class Settings:
    guild_home: Optional[Path]
    index_path: Optional[Path]
    refresh: bool
    verbose: bool
    now: datetime
    remote_actions: Optional[object] = None  # acts on a remote's runs when the home is its mirror


def open_index(settings, check=(LIVE, DELETED)):
    """The home's index, refreshed for the roots in `check` (unless --no-refresh,
    and always when it is new or was built for another place of the home)."""
    home = resolve_home(settings.guild_home)
    location = locate_index(home, settings.index_path)
    try:
        return _open_refreshed(home, location, settings, check)
    except sqlite3.OperationalError as e:  # a full disk, an index made read-only meanwhile
        raise HomeError(f"cannot update the index {location.path}: {e}") from None
    except sqlite3.DatabaseError as e:  # pages broken past what opening checks: it is only a cache
        rebuild_index(location.path, location.owned)
        typer.echo(f"runq: the index {location.path} was corrupt ({e}); rebuilt it", err=True)
        return _open_refreshed(home, location, settings, check)


def _open_refreshed(home, location, settings, check):
    index = Index(home, location.path, owned=location.owned)
    _close_with_command(index)
    try:
        for notice in index.notices:
            typer.echo(f"runq: {notice}", err=True)
        finish_pending(home)
        if settings.refresh or index.meta("last_refresh") is None or index.home_changed:
            report = index.refresh(check=check, progress=progress_printer("Indexing runs"))
            report_problems(report, settings.verbose)
    except BaseException:
        index.close()
        raise
    return index


def _close_with_command(index):
    """Closes the index (and lets go of its lock) when the command ends, also in-process."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(index.close)


def report_problems(report, verbose):
    if not report.problems:
        return
    typer.echo(
        f"runq: {len(report.problems)} run(s) had unreadable files and were indexed with what "
        f"could be read{'' if verbose else ' (use -v for details)'}",
        err=True,
    )
    if verbose:
        for run_id, what in report.problems:
            typer.echo(f"  {run_id[:8]}: {what}", err=True)


def progress_printer(label, min_total=500):
    """A progress callback that draws on a terminal's stderr, and stays silent otherwise."""
    if not sys.stderr.isatty():
        return None
    state = {"shown": False}

    def show(done, total):
        if total < min_total:
            return
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        state["shown"] = True
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
