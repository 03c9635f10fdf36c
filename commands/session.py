"""Opening a Guild home's index for a command: settings from the root
options, a refresh before any selection, and its one-line report."""

import atexit
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Optional

import click
import typer

from .failure import escaped
from ..engine import api, watch
from ..engine.home import DELETED, LIVE
from ..engine.indexer import LockWait

DEFAULT_LOCK_TIMEOUT = 60.0


class Settings(NamedTuple):
    guild_home: Optional[Path]
    index_path: Optional[Path]
    refresh: bool
    verbose: bool
    now: datetime
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    remote_actions: Optional[object] = None  # acts on a remote's runs when the home is its mirror


def open_index(settings, check=(LIVE, DELETED)):
    """The home's index, refreshed for the roots in `check` (unless --no-refresh,
    and always when it is new or was built for another place of the home)."""
    return open_run_index(settings, check).index


def open_run_index(settings, check=(LIVE, DELETED)):
    """As open_index, through the Python API the run commands are built on."""
    opened = api.open(
        settings.guild_home,
        settings.index_path,
        refresh=settings.refresh,
        check=check,
        progress=progress_printer("Indexing runs"),
        notify=lambda text: typer.echo(f"runq: {text}", err=True),
        lock_wait=LockWait(settings.lock_timeout, say_waiting),
    )
    _close_with_command(opened.index)
    if opened.refresh_report:
        report_problems(opened.refresh_report, settings.verbose)
    _start_watcher_if_asked(opened.index)
    return opened


def _start_watcher_if_asked(index):
    """RUNQ_WATCH=1: a command finding no watcher of its index starts one,
    without waiting for it (the next commands use it once it watches)."""
    if os.environ.get("RUNQ_WATCH", "") in ("", "0") or not watch.available():
        return
    if watch.running_pid(index.path) is None:
        watch.start(index.home.path, index.path, wait=False)


def open_archive(settings, path):
    """The index of an archive directory (`runs list -A`), kept in the user's cache."""
    index = api.open_archive(path, refresh=settings.refresh, progress=progress_printer("Indexing runs"))
    _close_with_command(index.index)
    if index.refresh_report:
        report_problems(index.refresh_report, settings.verbose)
    return index


def _close_with_command(index):
    """Closes the index (and lets go of its lock) when the command ends, also in-process."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(index.close)


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
    """A progress callback `(done, total)` drawing click's bar (position, ETA) on a
    terminal's stderr, for `total` of at least `min_total`; None elsewhere."""
    if not sys.stderr.isatty():
        return None
    bars = {}  # total -> (bar, finish)

    def show(done, total):
        if total < min_total:
            return
        if total not in bars:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bars[total] = bar, _finisher(bar)
            # The bar hides the cursor until it finishes: show it again however runq ends.
            atexit.register(bars[total][1])
        bar, finish = bars[total]
        bar.update(done - bar.pos)
        if done >= total:
            finish()

    return show


def _finisher(bar):
    finished = []

    def finish():
        if not finished:
            finished.append(True)
            bar.render_finish()

    return finish
