"""`-r/--remote REMOTE`: the run commands and `runq index` on another machine.

runq runs itself there over ssh with the options given here. Purge, delete
and restore ask here, as Guild does: the remote answers the selection as
JSON, the runs are shown and confirmed here, then the remote acts on exactly
the confirmed runs (their full ids on stdin, with the same filters, so that
it re-checks them against its disk and reports any it skips). A remote
without runq falls back to its `guild` when Guild takes every option given.
An S3 remote instead selects here, on its synced mirror (remote_s3).
"""

import json
from dataclasses import dataclass
from typing import Optional

import click
import typer

# The engine's remote modules (yaml, threads, subprocesses) are imported by
# the functions that need them: every run command imports this module.

NOT_FORWARDED = {"remote", "ids_from_stdin", "status_chars"}  # -S is forwarded as the statuses it set
ASKING_OPTIONS = {"yes", "dry_run", "as_json", "show_sql", "background"}  # what the selecting step leaves out
GUILD_SELECTION = {
    "filter_expr", "operations", "labels", "unlabeled", "tags", "comments", "marked", "unmarked", "started",
    "digest", "running", "completed", "error", "terminated", "pending", "staged",
}
GUILD_OPTIONS = {  # what Guild 0.9.0's `runs COMMAND` takes, by runq's parameter names
    "list": GUILD_SELECTION | {"deleted", "all_", "limit", "more", "as_json"},
    "purge": GUILD_SELECTION | {"runs", "yes"},
    "restore": GUILD_SELECTION | {"runs", "yes"},
    "delete": GUILD_SELECTION | {"runs", "yes", "permanent"},
}


@dataclass(frozen=True)
class RemoteRun:
    """A run as the remote described it, enough to show and confirm it here."""

    id: str
    operation: Optional[str]
    started: Optional[int]
    status: Optional[str]
    label: Optional[str]
    marked: bool
    position: Optional[int] = None
    op_dir: Optional[str] = None
    remote: Optional[str] = None

    @property
    def short_id(self):
        return self.id[:8]


def keep_confirmed(options, runs):
    """On the remote: the selected runs that were confirmed (`--ids-from-stdin`),
    reporting confirmed ones that no longer pass the filters or are gone."""
    if options.confirmed_ids is None:
        return runs
    kept = runs.only(options.confirmed_ids)
    missing = sorted(options.confirmed_ids - {run.id for run in kept})
    if missing:
        ids = ", ".join(run_id[:8] for run_id in missing[:10])
        typer.echo(f"runq: skipped {len(missing)} run(s) that changed or vanished since they were selected: {ids}", err=True)
    return kept


def read_ids(stream):
    return frozenset(stream.read().split())


# Options as words again


def _long_name(names):
    return next((name for name in names if name.startswith("--")), names[0])


def option_words(param, value):
    name = _long_name(param.opts)
    if param.count:
        return [name] * value
    if param.is_flag:
        if value is False and param.secondary_opts:
            return [_long_name(param.secondary_opts)]
        return [name] if value else []
    if param.multiple:
        return [word for item in value for word in (name, str(item))]
    return [name, str(value)]


def given_params(ctx):
    """(param, value) of every option and argument given, in declaration order."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in NOT_FORWARDED or value is None or value == param.default or value in ((), []):
            continue
        yield param, value


def command_words(ctx, leave_out=(), with_runs=True):
    words, runs = [], []
    for param, value in given_params(ctx):
        if param.name in leave_out:
            continue
        if isinstance(param, click.Argument):
            runs = list(value) if with_runs else []
        else:
            words += option_words(param, value)
    return words + (["--", *runs] if runs else [])


def root_words(ctx):
    """The root options that mean the same there: --no-refresh, -v, --now."""
    root = ctx.find_root().params
    words = ["--no-refresh"] if root.get("no_refresh") else []
    words += ["-v"] if root.get("verbose") else []
    return words + (["--now", root["now"].isoformat()] if root.get("now") else [])


# Commands


def run_remote(ctx, remote_name):
    """`runq runs COMMAND -r REMOTE ...`: done there (None), or for an S3
    remote the settings that select on its mirror here."""
    from ..engine.remote import SshSession
    from ..engine.remote_s3 import S3Remote
    from .remote_s3 import mirror_settings

    remote = _remote(ctx, remote_name)
    if isinstance(remote, S3Remote):
        return mirror_settings(ctx, remote)
    with SshSession(remote) as session:
        tool = session.locate()
        if tool == "runq":
            _with_runq(session, ctx)
        else:
            _with_guild(session, ctx, tool)


def run_remote_index(ctx, remote_name):
    """`runq index -r REMOTE ...`."""
    from ..engine.remote import SshSession
    from ..engine.remote_s3 import S3Remote
    from .remote_s3 import index_mirror

    remote = _remote(ctx, remote_name)
    if isinstance(remote, S3Remote):
        return index_mirror(ctx, remote)
    with SshSession(remote) as session:
        if session.locate() != "runq":
            raise _runq_missing(remote, "runq index has no Guild equivalent")
        _output_or_exit(session.run([_runq(session), *root_words(ctx), "index", *command_words(ctx)]))


def _remote(ctx, remote_name):
    from ..engine.remote import RemoteError, remote_for_name

    root = ctx.find_root().params
    if root.get("guild_home") or root.get("index_path"):
        raise RemoteError("-H/--guild-home and --index name a home here", hint="a remote's home is its guild-home setting")
    return remote_for_name(remote_name)


def _runq(session):
    return session.remote.runq_path or "runq"


def _output_or_exit(result):
    status = result[0]
    if status:
        raise typer.Exit(status)
    return result[1]


def _with_runq(session, ctx):
    name = ctx.command.name
    prefix = [_runq(session), *root_words(ctx), "runs", name]
    params = ctx.params
    if name == "list" or params.get("yes") or params.get("dry_run") or params.get("show_sql"):
        _output_or_exit(session.run(prefix + command_words(ctx)))  # nothing to confirm here
        return
    answer = _output_or_exit(session.run(prefix + ["--dry-run", "--json"] + command_words(ctx, ASKING_OPTIONS), capture=True))
    runs = _parse_runs(session, answer, _runq_run)
    if _confirmed(session.remote, ctx, runs):
        act = prefix + ["-y", "--ids-from-stdin"] + command_words(ctx, ASKING_OPTIONS - {"background"}, with_runs=False)
        _output_or_exit(session.run(act, stdin_text="\n".join(run.id for run in runs)))


def _with_guild(session, ctx, tool):
    from ..engine.remote import STDIN_WORDS

    name = ctx.command.name
    refused = sorted(p.name for p, _ in given_params(ctx) if p.name not in GUILD_OPTIONS[name])
    if tool != "guild" or refused:
        raise _runq_missing(session.remote, _refused_text(ctx, refused) if tool == "guild" else "nor is guild")
    prefix = ["guild", "runs", name]
    if name == "list" or ctx.params.get("yes"):
        _output_or_exit(session.run(prefix + command_words(ctx)))
        return
    if ctx.params.get("runs"):
        raise _runq_missing(session.remote, "guild there cannot show which runs RUN arguments select; pass -y")
    listing = ["guild", "runs", "list", "--json"] + (["--deleted"] if name != "delete" else [])
    answer = _output_or_exit(session.run(listing + command_words(ctx, {"yes", "permanent"}), capture=True))
    runs = _parse_runs(session, answer, _guild_run)
    if _confirmed(session.remote, ctx, runs):
        act = prefix + ["-y"] + command_words(ctx, {"yes"}) + ["--", STDIN_WORDS]
        _output_or_exit(session.run(act, stdin_text="\n".join(run.id for run in runs)))


def _refused_text(ctx, refused):
    names = {p.name: _long_name(p.opts) if p.opts[0].startswith("-") else "RUN" for p in ctx.command.params}
    return f"and guild there does not take {', '.join(names[name] for name in refused)}"


def _runq_missing(remote, why):
    from ..engine.remote import RemoteError

    return RemoteError(
        f"runq is not installed on {remote.host} ({why})",
        hint=f"install runq there, or point runq-path in remote '{remote.name}' at it",
    )


def _confirmed(remote, ctx, runs):
    """Shows the runs and asks, as the local command does; False if there is nothing to do."""
    from . import runs as run_commands  # the local commands' texts and prompts

    action = _action(run_commands, ctx)
    if not runs:
        typer.echo(action.nothing, err=True)
        return False
    run_commands._confirm_or_abort(runs, action, f"{remote.guild_home} on {remote.destination} (remote {remote.name})")
    if ctx.command.name == "delete":
        run_commands._confirm_stopping(runs)
    return True


def _action(run_commands, ctx):
    actions = {"purge": run_commands.PURGE, "restore": run_commands.RESTORE, "delete": run_commands.DELETE}
    if ctx.params.get("permanent"):
        return run_commands.DELETE_PERMANENT
    return actions[ctx.command.name]


def _parse_runs(session, answer, make_run):
    from ..engine.remote import RemoteError

    try:
        return [make_run(item) for item in json.loads(answer)]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise RemoteError(f"unexpected answer from {session.remote.host}: not a list of runs as JSON") from None


def _runq_run(item):
    return RemoteRun(item["id"], item.get("operation"), item.get("started"), item.get("status"), item.get("label"),
                     bool(item.get("marked")), item.get("index"))


def _guild_run(item):
    from ..engine.rundir import format_operation, parse_opref

    opref = parse_opref(item.get("opref"))
    operation = format_operation(opref) if opref else None
    return RemoteRun(item["id"], operation, item.get("started"), item.get("status"), item.get("label"),
                     bool(item.get("marked")))

