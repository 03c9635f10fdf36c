"""`runq watch start|stop|status`: the watcher that tells each command which
runs changed (engine/watch.py), so that a refresh stats only those."""

import math
from datetime import datetime

import typer

from .failure import escaped
from .session import open_index, progress_printer
from ..engine import watch
from ..engine.home import locate_index, resolve_home

NOT_RUNNING = 3  # `status` without a watcher, as init systems say it

app = typer.Typer(
    help="A watcher of the Guild home (Linux inotify): each command then checks only the runs "
    "that changed instead of every run's files. Exit codes of `status`: 0 watching, 3 no watcher.",
    no_args_is_help=True,
)


def _index_path(ctx):
    settings = ctx.obj
    home = resolve_home(settings.guild_home)
    return locate_index(home, settings.index_path).path


@app.command("start")
def start(ctx: typer.Context):
    """Start the watcher of the home (detached); returns once it watches and every run was checked."""
    settings = ctx.obj
    # The watcher lives as long as an index it serves. What changed before it
    # watched, none of its answers tells: every run is checked once it
    # watches (not also before), rather than by the next command.
    index = open_index(settings._replace(refresh=False))
    pid = watch.running_pid(index.path)
    if pid is not None:
        typer.echo(f"already watching (pid {pid})")
        return
    state = watch.start(index.home.path, index.path)
    if settings.refresh:
        index.refresh(progress=progress_printer("Checking runs"))
    _show(state, index.path)


@app.command("stop")
def stop(ctx: typer.Context):
    """Stop the watcher of the home (SIGTERM); commands check every run again."""
    index_path = _index_path(ctx)
    pid = watch.stop(index_path)
    typer.echo(f"stopped the watcher (pid {pid})" if pid else f"no watcher was running for {escaped(str(index_path))}")


@app.command("status")
def status(ctx: typer.Context):
    """Show whether the home is watched, how many runs are, and the inotify limit."""
    index_path = _index_path(ctx)
    state = watch.status(index_path)
    if state is None:
        pid = watch.running_pid(index_path)
        typer.echo(f"not answering (pid {pid})" if pid else f"no watcher for {escaped(str(index_path))}")
        raise typer.Exit(NOT_RUNNING)
    _show(state, index_path)


def _show(state, index_path):
    if not state:
        typer.echo(f"watching (no state yet; see {escaped(str(watch.log_path(index_path)))})")
        return
    watched = state["runs"] - state["unwatched"]
    since = datetime.fromtimestamp(state["started"]).strftime("%Y-%m-%d %H:%M:%S")
    typer.echo(f"watching {escaped(state['home'])}: ready (pid {state['pid']}, since {since})")
    typer.echo(f"runs watched: {watched} of {state['runs']} ({state['watches']} inotify watches"
               f"{_limit_text(state)})")
    if state["unwatched"]:
        typer.echo(f"not watched: {state['unwatched']} runs, whose files each command checks; "
                   f"{_raise_text(state, watched)}")
    if state.get("blind"):
        typer.echo(f"not trusted: {escaped(state['blind'])}; each command checks every run")
    if state["overflows"]:
        typer.echo(f"events lost: {state['overflows']} time(s); each time the next command checked every run")
    typer.echo(f"log: {escaped(str(watch.log_path(index_path)))}")


def _limit_text(state):
    return f", limit {state['limit']} from {state['limit_from']}" if state["limit"] else ""


def _raise_text(state, watched):
    """How to raise the limit far enough for every run."""
    per_run = math.ceil(state["watches"] / watched) if watched else 5
    if not state["limit"] or state["limit_from"] != "fs.inotify.max_user_watches":
        return "the watch limit is reached"
    needed = state["limit"] + state["unwatched"] * per_run
    return f"raise the limit (sudo sysctl fs.inotify.max_user_watches={needed}), then runq watch stop and start"
