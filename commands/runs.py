"""`runq runs list|delete|purge|restore`: Guild's run commands over the index."""

import sys
from dataclasses import dataclass
from typing import Optional

import typer
from typing_extensions import Annotated

from . import render
from .remote import keep_confirmed
from .selection_options import selection_command
from .session import open_index, progress_printer
from ..engine import actions
from ..engine.compiler import compile_selection
from ..engine.errors import SelectionError
from ..engine.home import DELETED, LIVE

ABORTED = 4
RUNS_PER_PAGE = 20

app = typer.Typer(no_args_is_help=True, help="List, delete, purge and restore runs.")

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not prompt before acting.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would happen and change nothing.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the selected runs as JSON.")]
BackgroundOption = Annotated[
    bool,
    typer.Option(
        "--background",
        help="Return once the runs are gone from the trash (and the index); unlink their files in a "
        "detached process, which the next runq command finishes if it dies.",
    ),
]
SqlOption = Annotated[
    bool, typer.Option("--sql", help="Print the selection's SQL and parameters, and exit without touching anything.")
]
ExplainOption = Annotated[
    bool, typer.Option("--explain", help="Print SQLite's query plan for the selection, and exit without touching anything.")
]


@dataclass(frozen=True)
class Action:
    """What distinguishes purge, delete and restore."""

    source: int  # the root runs are selected from
    preview: str
    prompt: str
    default_yes: bool
    nothing: str
    done: str
    would: str
    perform: object  # (index, runs, progress, background) -> (count, extra text)


def _remove(index, runs, progress, background):
    report = actions.remove(index, runs, runs[0].deleted, progress, background)
    for run_id, why in report.failed:
        typer.echo(f"runq: could not remove {run_id[:8]}: {why}", err=True)
    if background:
        return len(report.removed), " (their files are being unlinked in the background)"
    return len(report.removed), f" ({render.size_text(report.bytes_freed)} reclaimed)"


def _move(to_deleted):
    return lambda index, runs, progress, background: (len(actions.move(index, runs, to_deleted)), "")


PURGE = Action(
    source=DELETED,
    preview="WARNING: You are about to permanently delete the following runs:",
    prompt="Permanently delete {count} run(s)?",
    default_yes=False,
    nothing="Nothing to purge.",
    done="Permanently deleted {count} run(s){extra}",
    would="Would permanently delete {count} run(s)",
    perform=_remove,
)
DELETE = Action(
    source=LIVE,
    preview="You are about to delete the following runs:",
    prompt="Delete {count} run(s)?",
    default_yes=True,
    nothing="Nothing to delete.",
    done="Deleted {count} run(s){extra}",
    would="Would delete {count} run(s)",
    perform=_move(True),
)
DELETE_PERMANENT = Action(
    source=LIVE,
    preview="WARNING: You are about to permanently delete the following runs:",
    prompt="Permanently delete {count} run(s)?",
    default_yes=False,
    nothing="Nothing to delete.",
    done="Permanently deleted {count} run(s){extra}",
    would="Would permanently delete {count} run(s)",
    perform=_remove,
)
RESTORE = Action(
    source=DELETED,
    preview="You are about to restore the following runs:",
    prompt="Restore {count} run(s)?",
    default_yes=True,
    nothing="Nothing to restore.",
    done="Restored {count} run(s){extra}",
    would="Would restore {count} run(s)",
    perform=_move(False),
)


@app.command("list")
@selection_command
def list_runs(
    ctx: typer.Context,
    options,
    deleted: Annotated[bool, typer.Option("--deleted", "-d", help="Show deleted runs.")] = False,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show all runs (by default the last 20).")] = False,
    limit: Annotated[
        Optional[int], typer.Option("--limit", "-n", metavar="N", min=1, help="Limit number of runs shown.")
    ] = None,
    more: Annotated[int, typer.Option("--more", "-m", count=True, help="Show 20 more runs; may be repeated.")] = 0,
    as_json: JsonOption = False,
    show_sql: SqlOption = False,
    explain: ExplainOption = False,
):
    """List runs, newest first, as Guild would select them."""
    if all_ and limit:
        raise SelectionError("--all and --limit cannot both be used")
    selected = _select(ctx.obj, options, DELETED if deleted else LIVE, _shown(show_sql, explain))
    if selected is None:
        return
    runs = selected.runs
    if as_json:
        if all_ or limit or more:
            typer.echo("--json option always shows all runs", err=True)
        render.print_json(runs)
        return
    shown = _limited(runs, all_, limit, more)
    render.print_table(shown, render.LIST_COLUMNS)
    if len(shown) < len(runs) and not limit:
        typer.echo(
            f"Showing the first {len(shown)} runs ({len(runs)} total) - use --all to show all or -m to show more",
            err=True,
        )


def _limited(runs, all_, limit, more):
    if all_:
        return runs
    return runs[: limit or (more + 1) * RUNS_PER_PAGE]


@app.command("purge")
@selection_command
def purge_runs(ctx: typer.Context, options, yes: YesOption = False, dry_run: DryRunOption = False,
               as_json: JsonOption = False, show_sql: SqlOption = False, background: BackgroundOption = False,
               explain: ExplainOption = False):
    """Permanently delete deleted runs (those in the trash)."""
    _act(ctx.obj, options, PURGE, yes, dry_run, as_json, _shown(show_sql, explain), background)


@app.command("delete")
@selection_command
def delete_runs(
    ctx: typer.Context,
    options,
    permanent: Annotated[bool, typer.Option("--permanent", "-p", help="Delete runs permanently, not to the trash.")] = False,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
    show_sql: SqlOption = False,
    background: BackgroundOption = False,
    explain: ExplainOption = False,
):
    """Delete runs (move them to the trash, or remove them with --permanent)."""
    _act(ctx.obj, options, DELETE_PERMANENT if permanent else DELETE, yes, dry_run, as_json, _shown(show_sql, explain), background)


@app.command("restore")
@selection_command
def restore_runs(ctx: typer.Context, options, yes: YesOption = False, dry_run: DryRunOption = False,
                 as_json: JsonOption = False, show_sql: SqlOption = False, explain: ExplainOption = False):
    """Restore deleted runs from the trash."""
    _act(ctx.obj, options, RESTORE, yes, dry_run, as_json, _shown(show_sql, explain))


# Shared flow


@dataclass
class Selected:
    index: object
    selection: object
    runs: list


def _shown(show_sql, explain):
    """What to print instead of acting: 'sql' (--sql), 'plan' (--explain), both or neither."""
    return {name for name, wanted in (("sql", show_sql), ("plan", explain)) if wanted}


def _show_query(compiled, shown):
    """The SQL script, and/or the query plan (as comment lines after the script)."""
    if "sql" in shown:
        typer.echo(render.sql_script(compiled))
    if "plan" in shown:
        prefix = "-- " if "sql" in shown else ""
        typer.echo("\n".join(prefix + line for line in render.plan_lines(actions.plan(compiled))))


def _select(settings, options, source, show_sql):
    """The selected runs (with the index and selection behind them), or None
    after printing the SQL for --sql or the plan for --explain."""
    selection = options.selection(deleted=bool(source), now=settings.now)
    for warning in selection.warnings:
        typer.echo(f"runq: {warning}", err=True)
    compiled = compile_selection(selection, settings.now)
    if show_sql:
        _show_query(compiled, show_sql)
        return None
    index = open_index(settings, check=(source,))
    return Selected(index, selection, actions.run_compiled(index, compiled))


def _act(settings, options, action, yes, dry_run, as_json, show_sql, background=False):
    selected = _select(settings, options, action.source, show_sql)
    if selected is None:
        return
    runs = keep_confirmed(options, selected.runs)
    if dry_run and as_json:
        render.print_json(runs)  # an array even when empty: this output is for programs
        return
    if not runs:
        typer.echo(action.nothing, err=True)
        return
    if dry_run:
        _dry_run(runs, action)
        return
    if not yes:
        _confirm_or_abort(runs, action)
        if action.source == LIVE and settings.remote_actions is None:
            _confirm_stopping(runs)
    runs, skipped = actions.recheck(selected.index, selected.selection, runs, settings.now)
    if skipped:
        ids = ", ".join(run.short_id for run in skipped[:10])
        typer.echo(f"runq: skipped {len(skipped)} run(s) that changed or vanished since they were selected: {ids}", err=True)
    if not runs:
        typer.echo(action.nothing, err=True)
        return
    if settings.remote_actions is not None:
        count, extra = settings.remote_actions.perform(action, selected.index, runs)
        typer.echo(action.done.format(count=count, extra=extra), err=True)
        return
    if action.source == LIVE:
        # Only after the re-check: a stopped run writes its exit status, and
        # must not be skipped as changed after being stopped for deletion.
        actions.stop_running(runs)
    progress = None if background else progress_printer("Deleting runs", min_total=50)
    count, extra = action.perform(selected.index, runs, progress, background)
    typer.echo(action.done.format(count=count, extra=extra), err=True)


def _dry_run(runs, action):
    typer.echo(action.preview, err=True)
    render.print_table(runs, render.PREVIEW_COLUMNS, indent=2, err=True)
    typer.echo(action.would.format(count=len(runs)) + " (dry run: nothing changed)", err=True)


def _confirm_or_abort(runs, action):
    typer.echo(action.preview, err=True)
    render.print_table(runs, render.PREVIEW_COLUMNS, indent=2, err=True)
    if not confirm(action.prompt.format(count=len(runs)), action.default_yes):
        raise typer.Exit(ABORTED)


def _confirm_stopping(runs):
    if not any(run.status == "running" and not run.remote for run in runs):
        return
    typer.echo("WARNING: One or more runs are still running and will be stopped before being deleted.", err=True)
    if not confirm("Really delete these runs?", False):
        raise typer.Exit(ABORTED)


def confirm(prompt, default):
    typer.echo(f"{prompt} {'(Y/n)' if default else '(y/N)'} ", nl=False, err=True)
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if not answer:
        typer.echo(err=True)
        return False
    answer = answer.strip().lower()
    return answer in ("y", "yes") or (default and answer == "")
