"""Opening a Guild home's index for a command: settings from the root
options, a refresh before any selection, and its one-line report."""

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from ..engine.home import DELETED, LIVE, resolve_home
from ..engine.indexer import Index
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
    """The home's index, refreshed for the roots in `check` (unless --no-refresh)."""
    home = resolve_home(settings.guild_home)
    index = Index(home, settings.index_path)
    finish_pending(home)
    if settings.refresh or index.meta("last_refresh") is None:  # a new index is always built
        report = index.refresh(check=check, progress=progress_printer("Indexing runs"))
        report_problems(report, settings.verbose)
    return index


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
