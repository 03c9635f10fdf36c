"""Random command lines against the real CLI: whatever the argv, runq
answers with an exit code it documents and at most one-line errors, never a
traceback, never a terminal escape sequence on stderr, and never a change to
the home.

Seeded: a failure names its case, and RUNQ_FUZZ_SEED replays it. Most cases
run in-process through Typer's runner; some go through the installed
script, with bytes that are not UTF-8 in a real argv. RUNQ_FUZZ_CASES and
RUNQ_FUZZ_SCRIPT_CASES run longer campaigns.
"""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from robust_homes import NOW
from test_cli import disk_state
from runq.commands.app import app
from runq.engine.samplehome import HomeSpec, generate_home

CASES = int(os.environ.get("RUNQ_FUZZ_CASES", "300"))
SCRIPT_CASES = int(os.environ.get("RUNQ_FUZZ_SCRIPT_CASES", "16"))
SEED = int(os.environ.get("RUNQ_FUZZ_SEED", "20261130"))
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
EXIT_CODES = {0, 1, 2, 4}  # done, failed, usage error, not confirmed
ALL_OPTIONS = ["-F", "-Fo", "--json", "-a", "--rebuild", "-S", "--no-such-option", "-", "--"]

COMMANDS = [["runs", "list"], ["runs", "purge"], ["runs", "delete"], ["runs", "restore"], ["index"], ["sql"], ["runs"]]
# Never generated: options that act without asking, or point runq at other places.
# Options that act or write where asked (a shell's start-up files for completion) stay out.
FORBIDDEN = {"-y", "--yes", "-H", "--guild-home", "--index", "--sample", "--help", "--install-completion"}

NAMES = ["loss", "lr", "acc", "attr:label", "flag:lr", "scalar:loss", "scalar:eval#acc", "status", "label", "tags",
         "started", "id", "op", "from", "batch-size", "time", "env", "x" * 300]
OPERATORS = ["=", "!=", "<>", "<", "<=", ">", ">=", "is", "is not", "in", "not in", "contains", "not contains"]
VALUES = ["1", "0.5", "1e-4", ".1", "-3", "'a b'", '"x"', "true", "false", "undefined", "[1, 'a']", "[]", "yes",
          "'", "[", "99999999999999999999999", "nan", "'\x1b[31m'"]
SPECIALS = ["", " ", "-", "--", ":", "1:", ":3", "2:1", "0", "-1", "^", "$", "^(a+)+$", "*", "[", "\\", "%", "'",
            "last 3 days", "today", "after 2020-01-01", "between 1 and", "this week", "1 year ago", "not a range",
            "SELECT 1", "SELECT * FROM runs WHERE label REGEXP '^(x|xx)+$'", "DROP TABLE runs", "SELECT",
            "\x1b]0;title\x07", "\x1b[2J", "a\nb", "\t", "\u202e", "\ud800", "\udcff", "\x7f", "\x9b31m"]


def option_names():
    """{command path: its option names}, read from the app itself; () is the root."""
    found = {}
    stack = [((), typer.main.get_command(app))]
    while stack:
        path, command = stack.pop()
        stack += [((*path, name), sub) for name, sub in getattr(command, "commands", {}).items()]
        names = {name for param in command.params for name in param.opts + param.secondary_opts}
        found[path] = sorted(name for name in names if name.startswith("-") and name not in FORBIDDEN)
    return found


def filter_expression(rng, depth=0):
    choice = rng.random()
    if depth > 3 or choice < 0.4:
        return f"{rng.choice(NAMES)} {rng.choice(OPERATORS)} {rng.choice(VALUES)}"
    if choice < 0.5:
        return rng.choice(NAMES + VALUES)
    if choice < 0.6:
        return f"not {filter_expression(rng, depth + 1)}"
    if choice < 0.7:
        return f"({filter_expression(rng, depth + 1)}" + rng.choice([")", "", "))"])
    return f"{filter_expression(rng, depth + 1)} {rng.choice(['and', 'or', 'AND', 'xor'])} {filter_expression(rng, depth + 1)}"


def random_text(rng, real_argv):
    kind = rng.random()
    if kind < 0.2:
        data = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 12)))
        return data.decode("utf-8", "surrogateescape")
    if kind < 0.4:
        alphabet = [chr(rng.randrange(1, 0x2FFFF)) for _ in range(30)] + ["\x1b", "\x07", "\n", "\r", "\x00"]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 16)))
        return text.replace("\x00", "") if real_argv else text
    if kind < 0.45:
        return rng.choice("ab ^$(*") * rng.randrange(1000, 100_000)
    if kind < 0.7:
        return filter_expression(rng)
    return rng.choice(SPECIALS)


def random_argv(rng, options, real_argv=False):
    command = rng.choice(COMMANDS)
    argv = _soup(rng, options[()], 2, real_argv) + command
    argv += _soup(rng, options.get(tuple(command), options[()]), 7, real_argv)
    return [arg for arg in argv if _allowed(arg) and (not real_argv or _encodable(arg))]


def _soup(rng, options, most, real_argv):
    """Options (mostly the command's own), each maybe with a value, and values alone."""
    words = []
    for _ in range(rng.randrange(0, most)):
        if rng.random() < 0.7:
            words.append(rng.choice(options) if options and rng.random() < 0.9 else rng.choice(ALL_OPTIONS))
        if rng.random() < 0.8:
            words.append(random_text(rng, real_argv))
    return words


def _allowed(arg):
    """Leaves out what could say yes or name another home: `-y` also hides in flags like `-ay`."""
    if arg.startswith("--"):
        return arg.split("=", 1)[0] not in FORBIDDEN
    if arg.startswith("-"):
        return "y" not in arg and not arg.startswith("-H")
    return True


def _encodable(arg):
    """Whether a real argv can carry it (a lone surrogate that stands for no byte cannot)."""
    try:
        os.fsencode(arg)
    except UnicodeEncodeError:
        return False
    return True


def check_answer(case, argv, code, stdout, stderr):
    where = f"case {case} (RUNQ_FUZZ_SEED={SEED}): runq {argv!r}"
    assert code in EXIT_CODES, f"{where}: exit {code}\n{stderr}"
    assert "Traceback" not in stdout + stderr, f"{where}\n{stderr}"
    assert "\x1b" not in stderr, f"{where}: an escape sequence on stderr: {stderr!r}"
    if code in (1, 2):
        assert stderr.splitlines()[-1].startswith("runq: "), f"{where}\n{stderr}"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz") / "home"
    generate_home(home, HomeSpec(runs=40, seed=11, profile="fidelity", sourcecode_files=0), NOW)
    return home


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Where anything written by mistake would land: a fresh cwd, HOME and cache."""
    monkeypatch.chdir(tmp_path)
    return {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "GUILD_HOME": str(tmp_path / "none")}


def test_random_command_lines_in_process(home, sandbox):
    rng = random.Random(SEED)
    options = option_names()
    before = disk_state(home)
    runner = CliRunner()
    for case in range(CASES):
        argv = random_argv(rng, options)
        result = runner.invoke(app, ["-H", str(home), "--now", NOW.isoformat(), *argv], env=sandbox)
        assert isinstance(result.exception, (SystemExit, type(None))), f"case {case}: {argv!r}: {result.exception!r}"
        check_answer(case, argv, result.exit_code, result.stdout, result.stderr)
    assert disk_state(home) == before
    assert sorted(os.listdir(".")) == []


def test_random_command_lines_through_the_script(home, sandbox):
    rng = random.Random(SEED + 1)
    options = option_names()
    before = disk_state(home)
    for case in range(SCRIPT_CASES):
        argv = random_argv(rng, options, real_argv=True)
        done = subprocess.run(
            [str(RUNQ_SCRIPT), "-H", str(home), *(os.fsencode(arg) for arg in argv)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={**os.environ, **sandbox},
            timeout=120,
        )
        stdout, stderr = (stream.decode("utf-8", "surrogateescape") for stream in (done.stdout, done.stderr))
        check_answer(case, argv, done.returncode, stdout, stderr)
    assert disk_state(home) == before
    assert sorted(os.listdir(".")) == []
