"""Opening a Guild home's index for a command: settings from the root
options, a refresh before any selection, and its one-line report."""

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from .failure import escaped
from ..engine.home import DELETED, LIVE, resolve_home
from ..engine.indexer import Index, LockWait
from ..engine.purge import finish_pending

DEFAULT_LOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    guild_home: Optional[Path]
    index_path: Optional[Path]
    refresh: bool
    verbose: bool
    now: datetime
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT


def open_index(settings, check=(LIVE, DELETED)):
    """The home's index, refreshed for the roots in `check` (unless --no-refresh)."""
    home = resolve_home(settings.guild_home)
    index = Index(home, settings.index_path, LockWait(settings.lock_timeout, say_waiting))
    finish_pending(home)
    if settings.refresh or index.meta("last_refresh") is None:  # a new index is always built
        report = index.refresh(check=check, progress=progress_printer("Indexing runs"))
        report_problems(report, settings.verbose)
    return index


def say_waiting(path, seconds):
    typer.echo(
        f"runq: waiting for another runq process using the index {escaped(str(path))} "
        f"(up to {seconds:g} s, --lock-timeout)",
        err=True,
    )


def report_problems(report, verbose):
    if report.lost_workers:
        typer.echo(f"runq: {_lost_workers_text(report.lost_workers)}; their runs were read again", err=True)
    if not report.problems:
        return
    typer.echo(
        f"runq: {len(report.problems)} run(s) had unreadable files and were indexed with what "
        f"could be read{'' if verbose else ' (use -v for details)'}",
        err=True,
    )
    if verbose:
        for run_id, what in report.problems:
            typer.echo(f"  {escaped(run_id[:8])}: {escaped(str(what))}", err=True)


def _lost_workers_text(lost):
    signals = sorted({worker.signal for worker in lost if worker.signal})
    killed = f" (killed by signal {', '.join(map(str, signals))})" if signals else ""
    return f"{len(lost)} process(es) reading runs died{killed}"


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
