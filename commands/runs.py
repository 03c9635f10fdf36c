"""`runq runs list|delete|purge|restore`: Guild's run commands over the index."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NamedTuple, Optional

import typer
import typer.main
from typer.core import TyperGroup

from . import render
from .help import SEE_ALSO
from .selection_options import selection_command
from .session import open_archive, open_run_index, progress_printer
from ..engine import actions
from ..engine.api import RunIndex, Runs
from ..engine.errors import SelectionError
from ..engine.home import DELETED, LIVE, is_postgres_url

ABORTED = 4
RUNS_PER_PAGE = 20

ALIASES = {"ls": "list", "rm": "delete"}


class RunsGroup(TyperGroup):
    """`runq runs`: alone or followed by options, lists runs as `guild runs`
    does; `ls` and `rm` name `list` and `delete`.

    Its commands (registered on COMMANDS) become click commands when first
    named: Typer converting the parameters of purge, delete and restore too
    would cost every listing a twentieth of its time."""

    def parse_args(self, ctx, args):
        listing = not args or args[0].startswith("-") and args[0] != "--help"
        if listing and not ctx.resilient_parsing:  # completion wants the commands
            args = ["list", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return [info.name for info in COMMANDS.registered_commands]

    def get_command(self, ctx, cmd_name):
        name = ALIASES.get(cmd_name, cmd_name)
        known = {info.name: info for info in COMMANDS.registered_commands}
        # An unknown name: all of them, which click suggests from (self.commands).
        for info in [known[name]] if name in known else known.values():
            if info.name not in self.commands:
                # pretty_exceptions_short: Typer's default, the root's; RunqGroup reports errors itself
                self.commands[info.name] = typer.main.get_command_from_info(
                    info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode
                )
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        """Commands with their aliases, as Guild lists them (`delete, rm`)."""
        rows = []
        for name in self.list_commands(ctx):
            names = [name] + [alias for alias, command in ALIASES.items() if command == name]
            rows.append((", ".join(names), self.get_command(ctx, name).get_short_help_str()))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(cls=RunsGroup, suggest_commands=False, help="List, delete, purge and restore runs (alone: list them).")
COMMANDS = typer.Typer()  # the group's commands, converted one by one (RunsGroup.get_command)

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


class Action(NamedTuple):
    """What distinguishes purge, delete and restore."""

    source: int  # the root runs are selected from
    preview: str
    prompt: str
    default_yes: bool
    nothing: str
    done: str
    would: str
    perform: object  # (api.RunIndex, runs, progress, background) -> (api.Outcome, extra text)


def _remove(permanent_delete):
    """Purge, or delete --permanent: the runs' files are removed."""

    def perform(index, runs, progress, background):
        if permanent_delete:
            outcome = index.delete(runs, permanent=True, progress=progress, background=background)
        else:
            outcome = index.purge(runs, progress=progress, background=background)
        if outcome.in_place:
            typer.echo(f"runq: {index.index.home.purge_dir} is on another file system than the runs: "
                       "they were unlinked where they were", err=True)
        for path in outcome.left:
            typer.echo(f"runq: left {path} in place: another file system is mounted there", err=True)
        _report_failures(outcome.failed, "remove")
        if background:
            return outcome, " (their files are being unlinked in the background)"
        return outcome, f" ({render.size_text(outcome.bytes_freed or 0)} reclaimed)"

    return perform


def _move(to_deleted):
    def perform(index, runs, progress, background):
        outcome = index.delete(runs) if to_deleted else index.restore(runs)
        _report_failures(outcome.failed, "move")
        return outcome, ""

    return perform


def _report_failures(failed, verb):
    for run_id, why in failed:
        typer.echo(f"runq: could not {verb} {run_id[:8]}: {why}", err=True)


PURGE = Action(
    source=DELETED,
    preview="WARNING: You are about to permanently delete the following runs:",
    prompt="Permanently delete {count} run(s)?",
    default_yes=False,
    nothing="Nothing to purge.",
    done="Permanently deleted {count} run(s){extra}",
    would="Would permanently delete {count} run(s)",
    perform=_remove(permanent_delete=False),
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
    perform=_remove(permanent_delete=True),
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


def _at_least_one(value: Optional[int]):
    # As click's IntRange(min=1), without the range Typer shows escaped in help.
    if value is not None and value < 1:
        raise typer.BadParameter(f"{value} is not in the range x>=1.")
    return value


@COMMANDS.command("list", epilog=SEE_ALSO)
@selection_command
def list_runs(
    ctx: typer.Context,
    options,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Show all runs (by default the last 20).")] = False,
    more: Annotated[
        int, typer.Option("--more", "-m", count=True, show_default=False, help="Show 20 more runs; may be repeated.")
    ] = 0,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", "-n", metavar="N", callback=_at_least_one, help="Limit number of runs shown."),
    ] = None,
    deleted: Annotated[bool, typer.Option("--deleted", "-d", help="Show deleted runs.")] = False,
    archive: Annotated[
        Optional[Path],
        typer.Option("--archive", "-A", metavar="PATH", help="Show archived runs in PATH (a directory of runs)."),
    ] = None,
    show_comments: Annotated[bool, typer.Option("--comments", "-c", help="Show run comments.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show run details.")] = False,
    as_json: JsonOption = False,
    simplified: Annotated[bool, typer.Option("--simplified", "-s", help="Show a simplified list.")] = False,
    show_sql: SqlOption = False,
    explain: ExplainOption = False,
):
    """List runs, newest first, as Guild would select them."""
    _check_compatible(all=all_, limit=limit, comments=show_comments, verbose=verbose, json=as_json,
                      archive=archive, deleted=deleted)
    source = DELETED if deleted else LIVE
    first = None if as_json or all_ else limit or (more + 1) * RUNS_PER_PAGE
    selected = _select(ctx.obj, options, source, _shown(show_sql, explain), archive, first)
    if selected is None:
        return
    shown = selected.runs
    if as_json:
        if all_ or limit or more:
            render.note("--json option always shows all runs")
        render.print_json(shown, selected.index)
        return
    if len(shown) < shown.total and not limit:
        render.note(
            f"Showing the first {len(shown)} runs ({shown.total} total) - use --all to show all or -m to show more"
        )
    columns = render.SIMPLIFIED_COLUMNS if simplified else render.LIST_COLUMNS
    detail = render.comment_lines if show_comments else (render.detail_lines if verbose else None)
    render.print_table(shown, columns, detail=detail)


# Options of `runs list` that exclude each other, as Guild checks them (in its order).
INCOMPATIBLE = (("comments", "verbose"), ("comments", "json"), ("json", "verbose"), ("archive", "deleted"),
                ("all", "limit"))


def _check_compatible(**given):
    for first, second in INCOMPATIBLE:
        if given[first] and given[second]:
            raise SelectionError(f"--{first} and --{second} cannot both be used")


@COMMANDS.command("purge", epilog=SEE_ALSO)
@selection_command
def purge_runs(ctx: typer.Context, options, yes: YesOption = False, dry_run: DryRunOption = False,
               as_json: JsonOption = False, show_sql: SqlOption = False, background: BackgroundOption = False,
               explain: ExplainOption = False):
    """Permanently delete deleted runs (those in the trash)."""
    _act(ctx.obj, options, PURGE, yes, dry_run, as_json, _shown(show_sql, explain), background)


@COMMANDS.command("delete", epilog=SEE_ALSO)
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


@COMMANDS.command("restore", epilog=SEE_ALSO)
@selection_command
def restore_runs(ctx: typer.Context, options, yes: YesOption = False, dry_run: DryRunOption = False,
                 as_json: JsonOption = False, show_sql: SqlOption = False, explain: ExplainOption = False):
    """Restore deleted runs from the trash."""
    _act(ctx.obj, options, RESTORE, yes, dry_run, as_json, _shown(show_sql, explain))


# Shared flow


@dataclass
class Selected:
    index: RunIndex
    runs: Runs


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


def _select(settings, options, source, show_sql, archive=None, first=None):
    """The selected runs and the index behind them, or None after printing
    the SQL for --sql or the plan for --explain. With `archive`, runs of that
    directory; with `first`, only the first that many (and their total)."""
    selection = options.selection(deleted=bool(source), now=settings.now)
    for warning in selection.warnings:
        typer.echo(f"runq: {warning}", err=True)
    _check_dialect(options.sql_dialect, show_sql)
    if show_sql:
        from ..engine.compiler import compile_selection  # imports sqlglot: only --sql and --explain

        dialect = options.sql_dialect or _index_dialect(settings, show_sql)
        _show_query(compile_selection(selection, settings.now, dialect), show_sql)
        return None
    index = open_archive(settings, archive) if archive else open_run_index(settings, check=(source,))
    return Selected(index, index.select_built(selection, settings.now, first))


def _index_dialect(settings, shown):
    """The dialect of the index the command would use, for --sql without
    --dialect (SQLite's with --explain, whose plan is SQLite's)."""
    index = settings.index_path or os.environ.get("RUNQ_INDEX")
    return "postgres" if index and is_postgres_url(index) and "plan" not in shown else "sqlite"


def _check_dialect(dialect, shown):
    if dialect in (None, "sqlite"):
        return
    if "sql" not in shown:
        raise SelectionError("--dialect only applies to the SQL --sql prints", hint="add --sql")
    if "plan" in shown:
        raise SelectionError("--explain shows SQLite's query plan", hint="leave out --explain or --dialect")


def _act(settings, options, action, yes, dry_run, as_json, show_sql, background=False):
    selected = _select(settings, options, action.source, show_sql)
    if selected is None:
        return
    from .remote import keep_confirmed  # not imported by a listing, which never acts

    runs = keep_confirmed(options, selected.runs)
    if dry_run and as_json:
        render.print_json(runs, selected.index)  # an array even when empty: this output is for programs
        return
    if not runs:
        typer.echo(action.nothing, err=True)
        return
    home = selected.index.home
    if dry_run:
        _dry_run(runs, action, home)
        return
    if not yes:
        _confirm_or_abort(runs, action, home)
        if action.source == LIVE and settings.remote_actions is None:
            _confirm_stopping(runs)
    if settings.remote_actions is not None:
        count, extra = settings.remote_actions.perform(action, selected.index, runs)
        typer.echo(action.done.format(count=count, extra=extra), err=True)
        return
    progress = None if background else progress_printer("Deleting runs", min_total=50)
    outcome, extra = action.perform(selected.index, runs, progress, background)
    if outcome.skipped:
        ids = ", ".join(run.short_id for run in outcome.skipped[:10])
        typer.echo(
            f"runq: skipped {len(outcome.skipped)} run(s) that changed or vanished since they were selected: {ids}",
            err=True,
        )
    if not outcome.done and not outcome.failed:
        typer.echo(action.nothing, err=True)
        return
    for run in outcome.not_stopped:
        typer.echo(f"runq: did not stop pid {run.pid} of {run.short_id}: nothing shows that process is the run's "
                   "(it started after the run, or its start is unknown)", err=True)
    typer.echo(action.done.format(count=len(outcome.done), extra=extra), err=True)
    if not outcome.all_done:
        raise typer.Exit(1)


def _preview(runs, action, home):
    typer.echo(action.preview, err=True)
    render.print_table(runs, render.PREVIEW_COLUMNS, indent=2, err=True)
    typer.echo(f"Guild home: {home}", err=True)  # which home, when several are at hand


def _dry_run(runs, action, home):
    _preview(runs, action, home)
    typer.echo(action.would.format(count=len(runs)) + " (dry run: nothing changed)", err=True)


def _confirm_or_abort(runs, action, home):
    _preview(runs, action, home)
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
