"""The selection options every run command takes, declared once.

`selection_command` adds Guild's RUN arguments, filter and status options
to a command and hands the command a `SelectionOptions` instead of twenty
parameters.
"""

import functools
import inspect
import sys
from typing import Annotated, FrozenSet, List, NamedTuple, Optional, Tuple

import click
import typer

from ..engine.errors import SelectionError
from ..engine.selection import STATUSES, build_selection
from .completion import complete_run_ids, completer

STATUS_CHARS = "".join(STATUSES)
STATUS_NAMES = ("running", "completed", "error", "terminated", "pending", "staged")
# compiler.SPELLINGS' names, not imported from there: the compiler imports sqlglot.
SQL_DIALECTS = ("sqlite", "postgres")
FILTER_HELP = "Filter runs using a filter expression (see 'runq help filters')."


class SelectionOptions(NamedTuple):
    runs: Tuple[str, ...]
    filter_expr: Optional[str]
    operations: Tuple[str, ...]
    labels: Tuple[str, ...]
    unlabeled: bool
    tags: Tuple[str, ...]
    comments: Tuple[str, ...]
    marked: bool
    unmarked: bool
    started: Optional[str]
    digest: Optional[str]
    status_chars: Optional[str]
    running: Optional[bool]
    completed: Optional[bool]
    error: Optional[bool]
    terminated: Optional[bool]
    pending: Optional[bool]
    staged: Optional[bool]
    confirmed_ids: Optional[FrozenSet[str]] = None  # act only on these (--ids-from-stdin)
    sql_dialect: Optional[str] = None  # the SQL --sql prints: as SQLite or as PostgreSQL runs it (None: the index's)

    def selection(self, deleted, now):
        return build_selection(
            deleted=deleted,
            filter_expr=self.filter_expr,
            operations=self.operations,
            labels=self.labels,
            unlabeled=self.unlabeled,
            tags=self.tags,
            comments=self.comments,
            marked=self.marked,
            unmarked=self.unmarked,
            started=self.started,
            digest=self.digest,
            status_flags={name: getattr(self, name) for name in STATUS_NAMES},
            runs=self.runs,
            now=now,
        )


def _multi(*names, metavar, help, values=None):
    complete = completer(values) if values else None
    return Annotated[Optional[List[str]], typer.Option(*names, metavar=metavar, help=help, autocompletion=complete)]


def _flag(*names, help):
    return Annotated[bool, typer.Option(*names, help=help)]


def _status(name, char, help):
    return Annotated[
        Optional[bool],
        typer.Option(
            f"--{name}/--not-{name}", f"-S{char}", help=help, show_default=False, callback=_apply_status_chars
        ),
    ]


# As in Guild, `-S<chars>` is applied by each status option's callback when
# it runs, so the letters win over a --not-X that click processes after -S
# (given after it on the command line, or not given), and lose to one
# processed before.


def _apply_status_chars(ctx: typer.Context, param: typer.CallbackParam, value: Optional[bool]):
    chars = ctx.params.get("status_chars")
    char = next(opt[2:] for opt in param.opts if opt.startswith("-S"))
    return True if not value and chars and char in chars else value


def _validate_status_chars(value: Optional[str]):
    bad = next((c for c in value or "" if c not in STATUS_CHARS), None)
    if bad:
        raise SelectionError(
            f"unrecognized status char '{bad}' in option '-S'",
            hint="use letters from rcetps (running, completed, error, terminated, pending, staged)",
        )
    return value


OPTION_TYPES = {
    "runs": Annotated[
        Optional[List[str]], typer.Argument(metavar="RUN...", show_default=False, autocompletion=complete_run_ids)
    ],
    "filter_expr": Annotated[Optional[str], typer.Option("--filter", "-F", metavar="EXPR", help=FILTER_HELP)],
    "operations": _multi(
        "--operation", "-Fo", metavar="VAL", help="Filter runs with operations matching VAL.", values="operations"
    ),
    "labels": _multi(
        "--label", "-Fl", metavar="VAL", help="Filter runs with labels matching VAL ('-' for no label).", values="labels"
    ),
    "unlabeled": _flag("--unlabeled", "-Fu", help="Filter runs without labels."),
    "tags": _multi("--tag", "-Ft", metavar="TAG", help="Filter runs with TAG.", values="tags"),
    "comments": _multi("--comment", "-Fc", metavar="VAL", help="Filter runs with comments matching VAL."),
    "marked": _flag("--marked", "-Fm", help="Filter marked runs."),
    "unmarked": _flag("--unmarked", "-Fn", help="Filter unmarked runs."),
    "started": Annotated[
        Optional[str], typer.Option("--started", "-Fs", metavar="RANGE", help="Filter runs started within RANGE (see 'runq help started').")
    ],
    "digest": Annotated[
        Optional[str],
        typer.Option(
            "--digest",
            "-Fd",
            metavar="VAL",
            help="Filter runs with a matching source code digest.",
            autocompletion=completer("digest"),
        ),
    ],
    "status_chars": Annotated[Optional[str], typer.Option("-S", hidden=True, callback=_validate_status_chars)],
    "sql_dialect": Annotated[
        Optional[str],
        typer.Option(
            "--dialect",
            metavar="DIALECT",
            click_type=click.Choice(SQL_DIALECTS),
            help="With --sql: print the SQL as this database runs it (sqlite or postgres; default: the index's).",
        ),
    ],
    "running": _status("running", "r", "Filter runs that are still running."),
    "completed": _status("completed", "c", "Filter completed runs."),
    "error": _status("error", "e", "Filter runs that exited with an error."),
    "terminated": _status("terminated", "t", "Filter runs terminated by the user."),
    "pending": _status("pending", "p", "Filter pending runs."),
    "staged": _status("staged", "s", "Filter staged runs."),
}
REMOTE_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (
        ("remote", None, Annotated[Optional[str], typer.Option("--remote", "-r", metavar="REMOTE",
                                                                help="Act on runs of REMOTE (a Guild ssh or s3 remote).")]),
        ("ids_from_stdin", False, Annotated[bool, typer.Option("--ids-from-stdin", hidden=True)]),
    )
]
TEXT_OPTIONS = {
    "runs": "RUN",
    "filter_expr": "--filter",
    "operations": "--operation",
    "labels": "--label",
    "tags": "--tag",
    "comments": "--comment",
    "started": "--started",
    "digest": "--digest",
}
DEFAULTS = {"runs": None, "operations": None, "labels": None, "tags": None, "comments": None, "sql_dialect": None}
FALSE_DEFAULTS = {"unlabeled", "marked", "unmarked"}


def _check_text(values):
    """Refuses arguments that are not UTF-8 (bytes a shell passed through):
    runs hold UTF-8 text, so such a value could only match nothing, and a
    purge should not guess."""
    for name, option in TEXT_OPTIONS.items():
        value = values[name]
        for text in value if isinstance(value, (list, tuple)) else [value]:
            if text is not None and not _is_utf8(text):
                raise SelectionError(
                    f"{option} value '{text}' is not valid UTF-8",
                    hint="runs hold UTF-8 text: check the terminal's encoding",
                )


def _is_utf8(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parameter(name):
    default = False if name in FALSE_DEFAULTS else DEFAULTS.get(name)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=OPTION_TYPES[name])


def selection_command(fn):
    """Adds the selection parameters to a Typer command taking `options: SelectionOptions`."""
    own = [p for name, p in inspect.signature(fn).parameters.items() if name != "options"]
    names = [name for name in SelectionOptions._fields if name in OPTION_TYPES]

    @functools.wraps(fn)
    def command(**kwargs):
        remote, ids_from_stdin = kwargs.pop("remote"), kwargs.pop("ids_from_stdin")
        if remote or ids_from_stdin:  # -r here, or the runq that -r runs over ssh
            from .remote import read_ids, run_remote
        if remote:
            ctx = click.get_current_context()
            mirror_settings = run_remote(ctx, remote)  # None once done there
            if mirror_settings is None:
                return None
            ctx.obj = mirror_settings  # a local selection on the remote's mirror
        values = {name: kwargs.pop(name) for name in names}
        _check_text(values)
        values.update({k: tuple(values[k] or ()) for k in ("runs", "operations", "labels", "tags", "comments")})
        options = SelectionOptions(**values)
        return fn(options=options._replace(confirmed_ids=read_ids(sys.stdin)) if ids_from_stdin else options, **kwargs)

    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    command.__signature__ = inspect.Signature(own + [_parameter(name) for name in names] + REMOTE_PARAMETERS)
    return command
