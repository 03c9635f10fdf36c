"""Ask Guild 0.9.0 itself which runs a selection picks, without acting on them.

Runs under a python that can `import guild` (tests/guildenv.py). Each case
is parsed by Guild's own click command (`guild runs list|delete|purge|
restore`) and resolved by the same `runs_impl` functions the command
calls before it would show, move or remove anything.

Protocol (JSON, UTF-8):

    request:  {"home": "/path/to/guild-home",
               "now": "2026-11-29T12:00:00" | null,
               "cases": [{"command": "purge", "args": ["-F", "x > 1", "1:3"]}]}
    response: [{"ids": ["<run id>", ...]}            # Guild's order, duplicates kept
               | {"error": "<what Guild prints>", "exit": <exit code>}, ...]
              or {"oracle_error": "<traceback>"} when the request itself is
              bad (not JSON, unknown command, --remote)

One result per case, in order. `ids` is empty where Guild would say
"Nothing to purge." and the like. `error` is the message without Guild's
"guild: " prefix; an exception Guild does not catch comes back as its
traceback with exit code 1, as the CLI would show it.

Default mode: read one request from stdin, write one response to stdout.
`--serve`: read one request per line until EOF and answer each with one
line, flushed, so a test session can keep a single process.
"""

import contextlib
import copy
import datetime
import json
import os
import sqlite3
import sys
import traceback
from unittest import mock

import click
from guild import cli, click_util, config, filter_util, timerange, util
from guild import index as indexlib
from guild import main as guild_main
from guild import run as runlib
from guild.commands import main as main_cmd
from guild.commands import main_impl, runs_impl
from guild.commands import runs as runs_cmd


class OutOfScope(Exception):
    """A request the oracle cannot answer; the whole request fails."""


def _op_selection(args, ctx):
    return runs_impl.runs_op_selected(args, ctx)


def _deleted_op_selection(args, ctx):
    # `_purge_runs` and `_restore_runs` select from the trash this way.
    return runs_impl.runs_op_selected(args.copy(deleted=True), ctx)


def _list_selection(args, ctx):
    # What `guild runs list -a` (or `--json`) shows: `_list_runs` up to the
    # point where it limits and prints.
    runs_impl._check_list_runs_args(args, ctx)
    if args.archive and not os.path.exists(args.archive):
        cli.error(f"{args.archive} does not exist")
    return runs_impl.filtered_runs(args, ctx)


SELECTIONS = {
    "list": _list_selection,
    "delete": _op_selection,
    "rm": _op_selection,
    "purge": _deleted_op_selection,
    "restore": _deleted_op_selection,
}


# ---------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------


def answer_case(command, argv, messages):
    """The result for one case; `messages` collects what Guild printed."""
    try:
        return {"ids": [run.id for run in _selected_runs(command, argv)]}
    except click.exceptions.Exit as e:  # --help
        return _error(messages, None, e.exit_code)
    except click.exceptions.ClickException as e:
        return _error(messages, click_util.format_error_message(e), e.exit_code)
    except SystemExit as e:
        return _error(messages, *guild_main.system_exit_params(e))
    except OutOfScope:
        raise
    except Exception:
        return _error(messages, traceback.format_exc().rstrip(), 1)


def _selected_runs(command, argv):
    ctx = _command_context(command, argv)
    args = click_util.Args(**ctx.params)
    if args.remote:
        raise OutOfScope("remote runs are outside the oracle")
    return SELECTIONS[command](args, ctx)


def _command_context(command, argv):
    """Parse argv as `guild runs COMMAND ARGV...` would, callbacks and all.

    The parent contexts give errors Guild's command path
    ("Try 'guild runs purge --help' ...").
    """
    guild_ctx = click.Context(main_cmd.main, info_name="guild")
    runs_ctx = click.Context(runs_cmd.runs, info_name="runs", parent=guild_ctx)
    name, cmd, rest = runs_cmd.runs.resolve_command(runs_ctx, [command, *argv])
    return cmd.make_context(name, rest, parent=runs_ctx)


def _error(messages, msg, code):
    printed = [m for m in messages + [msg] if m]
    return {"error": "\n".join(printed), "exit": code}


# ---------------------------------------------------------------------------
# One request: Guild home, clock and run index for all its cases
# ---------------------------------------------------------------------------


def answer_request(request):
    unsupported = {case["command"] for case in request["cases"]} - SELECTIONS.keys()
    if unsupported:
        raise OutOfScope(f"unsupported commands: {sorted(unsupported)}")
    with contextlib.ExitStack() as stack:
        stack.enter_context(config.SetGuildHome(None))
        stack.enter_context(_frozen_clock(request.get("now")))
        stack.enter_context(_request_run_indexes())
        stack.enter_context(_request_attr_cache())
        return [_answer_case_in_home(request["home"], case) for case in request["cases"]]


def _answer_case_in_home(home, case):
    messages = []
    with mock.patch.object(cli, "out", _recorder(messages)):
        try:
            # What `guild -H HOME` / GUILD_HOME does before any command.
            config.set_guild_home(main_impl._validated_dir(home))
        except SystemExit as e:
            return _error(messages, *guild_main.system_exit_params(e))
        return answer_case(case["command"], list(case.get("args") or []), messages)


def _recorder(messages):
    """Stands in for guild.cli.out: keeps what would go to stderr."""

    def out(s="", wrap=False, err=False, **_kw):
        if err:
            messages.append(str(s))

    return out


@contextlib.contextmanager
def _frozen_clock(now):
    """Evaluate time ranges and running durations at `now` (ISO text, local)."""
    if now is None:
        yield
        return
    instant = _local_naive(datetime.datetime.fromisoformat(now))
    now_us = instant.timestamp() * 1000000
    format_duration = util.format_duration

    def duration_until_now(start_time, end_time=None):
        return format_duration(start_time, now_us if end_time is None else end_time)

    with mock.patch.object(timerange, "datetime", _DatetimeModuleAt(instant)), mock.patch.object(
        util, "format_duration", duration_until_now
    ):
        yield


class _DatetimeModuleAt:
    """Stands in for the `datetime` module in guild.timerange, whose only
    use of it is `datetime.datetime.now()`."""

    def __init__(self, instant):
        class FrozenDatetime(datetime.datetime):
            @classmethod
            def now(cls, tz=None):
                return instant

        self.datetime = FrozenDatetime


def _local_naive(dt):
    return dt.astimezone().replace(tzinfo=None) if dt.tzinfo else dt


@contextlib.contextmanager
def _request_run_indexes():
    """A fresh in-memory run index per runs directory, for this request only.

    Guild's own index (HOME/cache/runs/index_v1.db) keys scalars by run id
    and trusts a digest of event file names and sizes, and never drops the
    rows of an events directory that disappeared; a fresh index reflects
    exactly the files on disk now. Keeping it for the whole request lets
    many cases share one read of the event files, which do not change
    while nothing acts.
    """
    indexes = {}
    filtered_runs = filter_util.filtered_runs

    def filtered_runs_with_index(filter, root=None, **kw):
        if kw.get("index") is None:
            if root not in indexes:
                indexes[root] = _MemoryRunIndex()
            kw["index"] = indexes[root]
        return filtered_runs(filter, root=root, **kw)

    with mock.patch.object(filter_util, "filtered_runs", filtered_runs_with_index):
        yield


@contextlib.contextmanager
def _request_attr_cache():
    """Decode each run attribute file once per request.

    Guild re-reads and YAML-decodes every attribute file for every
    selection, which is most of its time. Entries are keyed by the file's
    path and stat signature, and each caller gets its own copy, so the
    answers are the ones Guild would give reading the file again.
    """
    cache = {}
    read_attr = runlib.Run.__getitem__

    def cached_read_attr(run, name):
        path = run._attr_path(name)
        try:
            st = os.stat(path)
        except OSError:
            return read_attr(run, name)
        key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in cache:
            cache[key] = read_attr(run, name)
        return copy.deepcopy(cache[key])

    with mock.patch.object(runlib.Run, "__getitem__", cached_read_attr):
        yield


class _MemoryRunIndex(indexlib.RunIndex):
    def __init__(self):
        super().__init__(path=":memory:")

    def _init_db(self):
        db = sqlite3.connect(":memory:")
        indexlib._init_run_index_tables(db)
        return db


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main(argv):
    # Guild writes notes to stdout; keep the real stdout for answers only.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if "--serve" in argv:
        for line in sys.stdin:
            if line.strip():
                _write(answers, _response(line))
    else:
        response = _response(sys.stdin.read())
        _write(answers, response)
        if "oracle_error" in response:
            raise SystemExit(2)


def _response(text):
    """The answers to one request, or {"oracle_error": ...} if it has none."""
    try:
        return answer_request(json.loads(text))
    except Exception:
        return {"oracle_error": traceback.format_exc().rstrip()}


def _write(stream, response):
    stream.write(json.dumps(response))
    stream.write("\n")
    stream.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
