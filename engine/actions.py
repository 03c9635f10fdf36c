"""What the run commands do, between parsing options and printing.

Selecting always reads a freshly refreshed index; acting re-checks the
chosen runs against the disk first and leaves out any that changed so
that they no longer pass the filters, or vanished.
"""

from . import sqlcache
from .executor import count_runs, query_plan, select_runs
from .home import DELETED
from .indexer import schema_text


def select(index, selection, now, limit=None):
    """The selected runs; with `limit` (a selection without RUN arguments)
    only the first `limit` of them."""
    return run_compiled(index, _compiled(index, selection, now), limit)


def count(index, selection, now):
    """How many runs the selection has (one without RUN arguments)."""
    compiled = _compiled(index, selection, now, count=True)
    _prepare(index, compiled)
    return count_runs(index.query_conn, compiled)


def _compiled(index, selection, now, count=False):
    if index.dialect != "sqlite":  # the cache of compiled SQL is a table of the SQLite index
        from .compiler import compile_selection

        return compile_selection(selection, now, index.dialect, count)
    return sqlcache.compiled_selection(index.conn, selection, now, count)


def run_compiled(index, compiled, limit=None):
    _prepare(index, compiled)
    return select_runs(index.query_conn, compiled, index.home.path, limit)


def _prepare(index, compiled):
    """What the index must read before the query runs: raw attributes it
    names, and event files a first build left unread when it reads scalars."""
    index.decode_lazy(compiled.lazy_attrs)
    if compiled.uses_scalars:
        index.read_pending_scalars()


def plan(compiled):
    """SQLite's query plan for a compiled selection, as (id, parent id, detail) rows."""
    return query_plan(schema_text(), compiled.sql(), compiled.bound_params())


def recheck(index, selection, runs, now):
    """(runs still selected, runs skipped) after reading every chosen run
    again from its files: the selection is decided on what the disk holds
    now, not on what signatures say.

    Filters are evaluated again; RUN arguments are not, so a run picked by
    its index stays picked even if newer runs appeared meanwhile.
    """
    from .compiler import compile_selection  # imports sqlglot, which selecting from the cache does not

    compiled = compile_selection(selection._replace(runs=()), now, index.dialect)
    index.recheck([run.id for run in runs], events=compiled.uses_scalars)
    passing = {run.id for run in run_compiled(index, compiled)}
    return [r for r in runs if r.id in passing], [r for r in runs if r.id not in passing]


def remove(index, runs, deleted, progress=None, background=False):
    from . import purge  # only commands that act on runs need it

    return purge.remove_runs(index, [run.id for run in runs], deleted, progress, background)


def move(index, runs, to_deleted):
    from . import purge

    return purge.move_runs(index, [run.id for run in runs], to_deleted)


def stop_running(index, runs):
    """Stops local running runs before they are deleted, as Guild does, but
    only processes that are the runs' own; returns (stopped, not theirs)."""
    from . import purge

    outcomes = {
        run.id: purge.stop_run(run.pid, index.home.run_dir(run.id, run.deleted), run.id, run.started)
        for run in runs
        if run.status == "running" and not run.remote
    }
    return (
        [run for run in runs if outcomes.get(run.id) == "stopped"],
        [run for run in runs if outcomes.get(run.id) == "not-ours"],
    )


__all__ = ["select", "count", "plan", "recheck", "remove", "move", "stop_running", "DELETED"]
