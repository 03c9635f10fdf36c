"""Shared pieces of the tests that compare runq's selections with Guild's."""

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import typer
from oracle import GuildOracle
from typer.testing import CliRunner

from runq.commands.app import app
from runq.commands.selection_options import selection_command
from runq.engine.compiler import compile_selection
from runq.engine.errors import RunqError
from runq.engine.executor import count_runs, select_runs
from runq.engine.samplehome import HomeSpec, generate_home

NOW = datetime(2026, 11, 29, 12, 0, 0)
FIRST_RUNS = 3  # how many runs a limited selection reads, checked against the whole one
RUNQ_COMMANDS = {
    "list": ["runs", "list", "--json"],
    "purge": ["runs", "purge", "--dry-run", "--json"],
    "delete": ["runs", "delete", "--dry-run", "--json"],
    "restore": ["runs", "restore", "--dry-run", "--json"],
}


def make_home(root, runs=240, seed=3, profile="fidelity"):
    generate_home(root, HomeSpec(runs=runs, seed=seed, profile=profile), NOW)
    return root


def runq_select(home, command, args):
    """(ids, None) for runq's selection, or (None, message) when runq refuses."""
    argv = ["-H", str(home), "--now", NOW.isoformat(), *RUNQ_COMMANDS[command], *args]
    result = CliRunner().invoke(app, argv, catch_exceptions=False)
    if result.exit_code != 0:
        return None, result.stderr.strip()
    text = result.stdout.strip()
    return ([run["id"] for run in json.loads(text)] if text else []), None


# Guild's answers by (what the home holds, the cases): test modules that
# build the same home (the same spec and seed) ask Guild once.
_guild_answers = {}


def guild_select_many(home, cases):
    key = (home_fingerprint(home), json.dumps(cases))
    if key not in _guild_answers:
        _guild_answers[key] = GuildOracle(home, now=NOW).select_many(cases)
    return _guild_answers[key]


def home_fingerprint(home):
    """A digest of every file of a home (names and contents, in directory
    listing order, which orders Guild's runs of equal times), but its caches."""
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(home):
        relative = Path(root).relative_to(home)
        if relative == Path("."):
            dirs[:] = [name for name in dirs if name != "cache"]  # not walked either
        digest.update("\0".join(dirs).encode() + b"\0")
        for name in files:
            path = Path(root, name)
            if path.is_file():
                digest.update(str(relative / name).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def first_seen(ids):
    """Guild acts on a run once per RUN argument naming it; runq once."""
    return list(dict.fromkeys(ids))


def disagreement(case, guild, runq_ids, runq_error):
    """None when runq and Guild agree on a case, else a description."""
    if guild.ids is None or runq_ids is None:
        if guild.ids is None and runq_ids is None:
            return None
        return f"{case}: guild {guild.error or guild.ids!r} / runq {runq_error or runq_ids!r}"
    if first_seen(guild.ids) != runq_ids:
        missing = [i[:8] for i in guild.ids if i not in runq_ids]
        extra = [i[:8] for i in runq_ids if i not in guild.ids]
        return f"{case}: guild {len(guild.ids)} runs, runq {len(runq_ids)}; runq misses {missing}, adds {extra}"
    return None


# The engine alone, on an index given as a connection (SQLite, or PostgreSQL
# seeing one home): the selection the command line builds from a case's
# arguments, by the commands' own options (selection_command).

_probe = typer.Typer()
_probed = []


@_probe.command()
@selection_command
def _probe_options(options, deleted: bool = typer.Option(False, "--deleted")):
    _probed.append((options, deleted))


def engine_select(conn, command, args, dialect):
    """(ids, None) for runq's selection run on `conn`, compiled for `dialect`,
    or (None, message) when runq refuses."""
    _probed.clear()
    result = CliRunner().invoke(_probe, list(args))
    if result.exit_code != 0:
        return None, (result.stderr or result.stdout).strip()
    options, deleted = _probed[0]
    try:
        selection = options.selection(deleted=deleted or command in ("purge", "restore"), now=NOW)
        runs = select_runs(conn, compile_selection(selection, NOW, dialect))
    except RunqError as e:
        return None, str(e)
    if not selection.runs:  # a listing reads only the runs it shows, and counts them all in SQL
        assert count_runs(conn, compile_selection(selection, NOW, dialect, count=True)) == len(runs), args
        first = select_runs(conn, compile_selection(selection, NOW, dialect), limit=FIRST_RUNS)
        assert first == runs[:FIRST_RUNS], args
    return [run.id for run in runs], None
