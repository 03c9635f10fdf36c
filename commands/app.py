"""The `runq` command: a root that wires the command groups together."""

from datetime import datetime
from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperGroup
from typing_extensions import Annotated

from . import demo, index, runs, sql
from .. import __version__
from .help import help_topic
from .session import Settings
from ..engine.errors import RunqError


class RunqGroup(TyperGroup):
    """Reports every error on one line (`runq: ...`) instead of a traceback or usage text."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            result = super().main(args=args, prog_name=prog_name or "runq", standalone_mode=False, **extra)
        except RunqError as e:
            _fail(_one_line(e), e.exit_code)
        except click.exceptions.Exit as e:
            raise SystemExit(e.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except click.exceptions.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help())
            raise SystemExit(0)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except BrokenPipeError:
            raise SystemExit(0)
        raise SystemExit(result if isinstance(result, int) else 0)


def _one_line(error):
    text = error.message if not error.hint else f"{error.message} ({error.hint})"
    return " ".join(text.split("\n"))


def _fail(message, code):
    typer.echo(f"runq: {message}", err=True)
    raise SystemExit(code)


# runq's help is click's plain help (rich_markup_mode=None), but Typer escapes
# `[default: ...]` for rich markup whenever rich is installed, which prints
# `\[default: ...]`: tell it rich is not there.
typer.core.HAS_RICH = False

app = typer.Typer(
    cls=RunqGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    suggest_commands=False,  # click suggests already
    help="Fast, SQL-backed run selection for Guild AI homes: list, delete, purge "
    "and restore runs exactly as Guild would select them.",
)
app.add_typer(runs.app, name="runs")
app.command("index")(index.index)
app.command("sql")(sql.sql)
app.command("demo")(demo.demo)
app.command("help")(help_topic)


def _print_version(value: bool):
    if value:
        typer.echo(f"runq {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    guild_home: Annotated[
        Optional[Path],
        typer.Option(
            "--guild-home",
            "-H",
            metavar="PATH",
            help="Guild home (default: as Guild finds it: $GUILD_HOME, else an activated environment's "
            ".guild, else the nearest .guild above the current directory, else ~/.guild).",
        ),
    ] = None,
    index_path: Annotated[
        Optional[Path],
        typer.Option(
            "--index",
            metavar="PATH",
            help="Index database (default: $RUNQ_INDEX, else <home>/cache/runq/index.db, or the user "
            "cache directory for a read-only or network home).",
        ),
    ] = None,
    no_refresh: Annotated[
        bool, typer.Option("--no-refresh", help="Use the index as it is, without checking the run directories.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more (e.g. which runs had problems).")] = False,
    now: Annotated[Optional[datetime], typer.Option("--now", hidden=True)] = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Show runq's version and exit.")
    ] = False,
):
    ctx.obj = Settings(
        guild_home=guild_home,
        index_path=index_path,
        refresh=not no_refresh,
        verbose=verbose,
        now=now or datetime.now(),
    )


def main():
    app()
