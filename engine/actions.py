"""What the run commands do, between parsing options and printing.

Selecting always reads a freshly refreshed index; acting re-checks the
chosen runs against the disk first and leaves out any that changed so
that they no longer pass the filters, or vanished.
"""

from dataclasses import replace

from . import purge
from .compiler import compile_selection
from .executor import query_plan, select_runs
from .home import DELETED
from .indexer import schema_text


def select(index, selection, now):
    return run_compiled(index, compile_selection(selection, now))


def run_compiled(index, compiled):
    index.decode_lazy(compiled.lazy_attrs)
    return select_runs(index.conn, compiled, index.home.path)


def plan(compiled):
    """SQLite's query plan for a compiled selection, as (id, parent id, detail) rows."""
    return query_plan(schema_text(), compiled.sql(), compiled.bound_params())


def recheck(index, selection, runs, now):
    """(runs still selected, runs skipped) after re-reading changed run dirs.

    Filters are evaluated again; RUN arguments are not, so a run picked by
    its index stays picked even if newer runs appeared meanwhile.
    """
    index.recheck([run.id for run in runs])
    passing = {run.id for run in select(index, replace(selection, runs=()), now)}
    return [r for r in runs if r.id in passing], [r for r in runs if r.id not in passing]


def remove(index, runs, deleted, progress=None, background=False):
    return purge.remove_runs(index, [run.id for run in runs], deleted, progress, background)


def move(index, runs, to_deleted):
    return purge.move_runs(index, [run.id for run in runs], to_deleted)


def stop_running(runs):
    """Stops local running runs before they are deleted, as Guild does."""
    return [run for run in runs if run.status == "running" and not run.remote and purge.stop_run(run.pid)]


__all__ = ["select", "plan", "recheck", "remove", "move", "stop_running", "DELETED"]
