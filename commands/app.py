"""The `runq` command: a root that wires the command groups together."""

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from . import demo, index, runs, sql, watch
from .. import __version__
from .failure import one_line, quiet_stdout, unexpected_error
from .help import help_topic
from .session import DEFAULT_LOCK_TIMEOUT, Settings
from ..engine.errors import RunqError

EXPECTED_ERRORS = (RunqError, click.ClickException, click.exceptions.Exit, click.exceptions.Abort)


class RunqGroup(TyperGroup):
    """Reports every error on one line (`runq: ...`) instead of a traceback or usage text."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        for param in self.params:  # Typer adds them after __init__; they say "Shell  not supported."
            if param.name in ("show_completion", "install_completion") and param.callback.__name__ != "knowing":
                param.callback = _knowing_the_shell(param.callback)
        try:
            result = super().main(args=args, prog_name=prog_name or "runq", standalone_mode=False, **extra)
        except RunqError as e:
            _fail(_error_text(e), e.exit_code)
        except click.exceptions.Exit as e:
            raise SystemExit(e.exit_code)
        except click.exceptions.Abort as e:
            interrupted = isinstance(e.__cause__, KeyboardInterrupt)  # Ctrl-C in-process, as the script exits
            _fail("interrupted" if interrupted else "aborted", 130 if interrupted else 1)
        except click.exceptions.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help())
            raise SystemExit(0)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except BrokenPipeError:  # the reader went away (`runq ... | head -1`): nothing left to say
            quiet_stdout()
            raise SystemExit(0)
        except Exception as e:  # raised outside a command (invoke catches the rest)
            _show_traceback(_debugging())
            _fail(_error_text(unexpected_error(e)), 1)
        raise SystemExit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS:
            raise
        except BrokenPipeError:  # before click's own handling, which exits with 1
            quiet_stdout()
            raise click.exceptions.Exit(0) from None
        except Exception as e:
            _show_traceback(_debugging(ctx.obj))
            raise unexpected_error(e) from e


def _knowing_the_shell(callback):
    def knowing(ctx, param, value):
        if value is True and not ctx.resilient_parsing:  # no shell named: Typer asks shellingham
            import shellingham

            try:
                shellingham.detect_shell()
            except shellingham.ShellDetectionFailure:
                raise click.UsageError(f"cannot tell which shell runs runq: use {param.opts[0]} from bash, zsh,"
                                       " fish or PowerShell") from None
        return callback(ctx, param, value)

    return knowing


def _error_text(error):
    return error.message if not error.hint else f"{error.message} ({error.hint})"


def _debugging(settings=None):
    return os.environ.get("RUNQ_DEBUG", "") not in ("", "0") or bool(settings and settings.verbose)


def _show_traceback(show):
    if show:
        import traceback  # only when asked for: it loads linecache and tokenize

        traceback.print_exc()


def _fail(message, code):
    typer.echo(f"runq: {one_line(message)}", err=True)
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
app.add_typer(watch.app, name="watch")


def _print_version(value: bool):
    if value:
        typer.echo(f"runq {__version__}")
        raise typer.Exit()


def _not_negative(value: float):
    if value < 0:
        raise typer.BadParameter("must be 0 or more")
    return value


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
        Optional[str],  # a path, or a postgresql:// URL (a Path would merge its slashes)
        typer.Option(
            "--index",
            metavar="PATH|URL",
            help="Index database (default: $RUNQ_INDEX, else <home>/cache/runq/index.db, or the user "
            "cache directory for a read-only or network home), or postgresql://USER@HOST/DB[?home=NAME].",
        ),
    ] = None,
    no_refresh: Annotated[
        bool, typer.Option("--no-refresh", help="Use the index as it is, without checking the run directories.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Say more (e.g. which runs had problems, tracebacks).")
    ] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            metavar="SECONDS",
            callback=_not_negative,
            envvar="RUNQ_LOCK_TIMEOUT",
            show_envvar=False,
            show_default=False,
            help="How long to wait for another runq process using the index (default: $RUNQ_LOCK_TIMEOUT, else 60).",
        ),
    ] = DEFAULT_LOCK_TIMEOUT,
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
        lock_timeout=lock_timeout,
    )


def main():
    """The `runq` command (its installed script starts at entry.main)."""
    from .entry import main as run

    run()
