"""What a Guild user expects of runq's command line, checked against Guild
0.9.0 on generated homes: `--json` records, `runs list` options and
aliases, terminal tables, help topics, --version and shell completion."""

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from guildenv import guild_script  # noqa: E402

from runq.commands.app import app  # noqa: E402
from runq.commands.render import RUNQ_JSON_FIELDS  # noqa: E402
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home  # noqa: E402

NOW = datetime(2026, 11, 29, 12, 0, 0)
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"


def runq(home, *args, input=None):
    argv = ["-H", str(home), "--now", NOW.isoformat(), *args]
    return CliRunner().invoke(app, argv, input=input)


def guild(home, *args, env=None, cwd=None):
    env = {**os.environ, "GUILD_HOME": str(home), "NO_COLOR": "1", **(env or {})}
    result = subprocess.run([str(guild_script()), *args], env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def _add_batch_proto(home, manifest):
    """A batch run holds its prototype run in .guild/proto, as Guild writes it."""
    batch, proto = manifest.live[0], manifest.live[1]
    shutil.copytree(proto.run_dir(home) / ".guild", batch.run_dir(home) / ".guild" / "proto" / ".guild")


def _add_odd_attrs(home, manifest):
    """Values Guild shows as they are: a marked file saying false, a number for a label."""
    attrs = manifest.live[2].run_dir(home) / ".guild" / "attrs"
    (attrs / "marked").write_text(encode_attr(False))
    (manifest.live[3].run_dir(home) / ".guild" / "attrs" / "label").write_text("42\n")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("habits")
    manifest = generate_home(root, HomeSpec(runs=40, seed=5, profile="fidelity", sourcecode_files=1), NOW)
    _add_batch_proto(root, manifest)
    _add_odd_attrs(root, manifest)
    return root


# --json


def _without_runq_fields(records):
    return [{k: v for k, v in record.items() if k not in RUNQ_JSON_FIELDS} for record in records]


@pytest.mark.parametrize(
    "args",
    [[], ["--deleted"], ["-F", "lr > 0.001 or label contains best"], ["-Fm"], ["-Sce", "1:5"]],
)
def test_list_json_has_guilds_records(home, args):
    expected = json.loads(guild(home, "runs", "list", "--json", *[a for a in args if a != "1:5"]).stdout)
    result = runq(home, "runs", "list", "--json", *args)
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    if "1:5" in args:
        expected = expected[:5]
    assert _without_runq_fields(shown) == expected
    assert shown and all(set(RUNQ_JSON_FIELDS) <= set(record) for record in shown)


def test_json_shows_batch_protos_and_odd_values_as_guild(home):
    shown = json.loads(runq(home, "runs", "list", "--json").stdout)
    assert any("batch_proto" in record for record in shown)
    assert any(record["marked"] is False for record in shown)
    assert any(record["marked"] is None for record in shown)
    assert any(record["label"] == 42 for record in shown)


def test_dry_run_json_has_guilds_records(home):
    expected = json.loads(guild(home, "runs", "list", "--deleted", "--json", "-Fo", "train").stdout)
    for command in ("purge", "restore"):
        result = runq(home, "runs", command, "--dry-run", "--json", "-Fo", "train")
        assert result.exit_code == 0, result.stderr
        assert _without_runq_fields(json.loads(result.stdout)) == expected


# -v, -c, -s and -A print what Guild prints


@pytest.mark.parametrize("args", [["-v"], ["-c"], ["-s"], ["-s", "-d", "-a"], ["-c", "-m"], ["-v", "-Fm"]])
def test_list_options_print_guilds_output(home, args):
    expected = guild(home, "runs", "list", *args)
    result = runq(home, "runs", "list", *args)
    assert result.exit_code == 0, result.stderr
    assert (result.stdout, result.stderr) == (expected.stdout, expected.stderr)


def test_list_archive_lists_a_directory_of_runs_as_guild(home, tmp_path, monkeypatch):
    archive = tmp_path / "archive"
    archive.mkdir()
    for run_dir in sorted((home / "runs").iterdir())[:6]:
        shutil.copytree(run_dir, archive / run_dir.name)
    before = sorted(os.listdir(archive))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    expected = guild(home, "runs", "list", "-A", str(archive))
    result = runq(home, "runs", "list", "-A", str(archive))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected.stdout and len(result.stdout.splitlines()) == 6
    verbose = runq(home, "runs", "list", "-A", str(archive), "-v")
    assert verbose.stdout == guild(home, "runs", "list", "-A", str(archive), "-v").stdout  # run_dir in the archive
    assert sorted(os.listdir(archive)) == before  # the index is in the cache, not the archive
    assert list((tmp_path / "cache" / "runq" / "archives").glob("archive-*/cache/runq/index.db"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["-c", "-v"], "--comments and --verbose cannot both be used"),
        (["--json", "-v"], "--json and --verbose cannot both be used"),
        (["-A", ".", "-d"], "--archive and --deleted cannot both be used"),
        (["-A", "/nonexistent/archive"], "/nonexistent/archive does not exist"),
    ],
)
def test_list_option_conflicts_are_one_line(home, args, message):
    result = runq(home, "runs", "list", *args)
    assert result.exit_code == 1
    assert result.stderr == f"runq: {message}\n"


# runq runs alone, aliases


def test_runs_alone_lists_as_guild_runs(home):
    for args in ([], ["-a", "-Fo", "train"], ["-d", "-s"]):
        expected = guild(home, "runs", *args)
        result = runq(home, "runs", *args)
        assert result.exit_code == 0, result.stderr
        assert (result.stdout, result.stderr) == (expected.stdout, expected.stderr)


def test_ls_and_rm_are_list_and_delete(home):
    assert runq(home, "runs", "ls", "-a").stdout == runq(home, "runs", "list", "-a").stdout
    dry_run = runq(home, "runs", "rm", "--dry-run", "1:3")
    assert dry_run.exit_code == 0 and "Would delete 3 run(s)" in dry_run.stderr
    assert "delete, rm" in runq(home, "runs", "--help").stdout


def test_a_mistyped_command_gets_one_suggestion(home):
    result = runq(home, "runs", "purg")
    assert result.exit_code == 2
    assert result.stderr == "runq: No such command 'purg'. Did you mean 'purge'?\n"


# On a terminal


def in_pty(argv, env):
    """What a command writes to a terminal (stdout and stderr share it, as in a shell)."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(master)
    return b"".join(chunks).decode()


def terminal_env(home, columns, **extra):
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return {**env, "GUILD_HOME": str(home), "COLUMNS": str(columns), "SHELL": "/bin/sh", **extra}


def visible(text):
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize("columns", [200, 100, 70])
@pytest.mark.parametrize("args", [[], ["-m"], ["-s", "-d"], ["-v", "-n", "5"], ["-c"]])
def test_terminal_tables_are_guilds(home, columns, args):
    """Styled and cut as Guild does it, byte for byte, where Guild's cut falls outside a styled cell."""
    env = terminal_env(home, columns)
    expected = in_pty([str(guild_script()), "runs", "list", *args], env)
    shown = in_pty([str(RUNQ_SCRIPT), "runs", "list", *args], env)
    assert "\x1b[2m" in shown
    assert shown == expected


@pytest.mark.parametrize("columns", [30, 50, 61])
def test_terminal_tables_fit_the_width(home, columns):
    wide = visible(in_pty([str(RUNQ_SCRIPT), "runs", "list", "-a"], terminal_env(home, 400))).splitlines()
    shown = in_pty([str(RUNQ_SCRIPT), "runs", "list", "-a"], terminal_env(home, columns)).splitlines()
    assert len(shown) == len(wide)
    for line, full in zip(shown, wide):
        assert len(visible(line)) <= columns
        assert full.startswith(visible(line))
        assert line.count("\x1b[2m") <= line.count("\x1b[0m")  # dimming always ended


def test_no_color_and_pipes_get_no_escape_codes(home):
    shown = in_pty([str(RUNQ_SCRIPT), "runs", "list", "-a"], terminal_env(home, 50, NO_COLOR="1"))
    assert "\x1b" not in shown
    assert max(len(line) for line in shown.splitlines()) <= 50
    piped = subprocess.run([str(RUNQ_SCRIPT), "runs", "list", "-a"], env=terminal_env(home, 50), capture_output=True, text=True)
    assert "\x1b" not in piped.stdout and max(len(line) for line in piped.stdout.splitlines()) > 50


# Help


@pytest.mark.parametrize("topic, phrases", [
    ("filters", ["a and (b or c)", "attr:NAME", "flag:NAME", "scalar:PREFIX#TAG", "contains", "is undefined", "'100'"]),
    ("started", ["last N minutes|hours|days", "N days|weeks|months|years ago", "YY-MM-DD", "between"]),
    ("runs", ["START:END", "run id prefix", "after the filters"]),
])
def test_help_topics_stand_alone(topic, phrases):
    result = CliRunner().invoke(app, ["help", topic])
    assert result.exit_code == 0
    for phrase in phrases:
        assert phrase in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 78


def test_help_lists_topics_and_refuses_others():
    assert all(topic in CliRunner().invoke(app, ["help"]).stdout for topic in ("filters", "started", "runs"))
    result = CliRunner().invoke(app, ["help", "nope"])
    assert result.exit_code == 1 and result.stderr.startswith("runq: no help topic 'nope'")


@pytest.mark.parametrize("command", ["list", "purge", "delete", "restore"])
def test_command_help_links_topics_and_is_clean(command):
    result = CliRunner().invoke(app, ["runs", command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    text = result.stdout
    assert "runq help filters" in text and "runq help started" in text and "runq help runs" in text
    assert "\\" not in text and "\x08" not in text


def test_filter_help_examples_select_what_guild_selects(home):
    """The examples of `runq help filters` parse and select as Guild's filters do."""
    examples = [line.strip() for line in CliRunner().invoke(app, ["help", "filters"]).stdout.split("Examples\n")[1]
                .split("\n\n")[0].splitlines()]
    assert len(examples) >= 8
    for example in examples:
        expected = [r["id"] for r in json.loads(guild(home, "runs", "list", "--json", "-F", example).stdout)]
        result = runq(home, "runs", "list", "--json", "-F", example)
        assert result.exit_code == 0, (example, result.stderr)
        assert [r["id"] for r in json.loads(result.stdout)] == expected, example


# Progress bars

PROGRESS_SCRIPT = """
import sys
from runq.commands.session import progress_printer
show = progress_printer("Indexing runs", min_total=10)
if show is None:
    sys.exit(4)
for done in range(0, int(sys.argv[1]) + 1, 5):
    show(done, 40)
sys.exit(3)
"""


@pytest.mark.parametrize("steps, finished", [(40, True), (15, False)])
def test_progress_bar_on_a_terminal_gives_the_cursor_back(steps, finished):
    env = {**os.environ, "COLUMNS": "100"}
    shown = in_pty([sys.executable, "-c", PROGRESS_SCRIPT, str(steps)], env)
    assert "Indexing runs" in shown and f"{steps}/40" in shown
    assert shown.endswith("\x1b[?25h\r\n")  # shown again, even when the command ends early
    assert shown.count("\x1b[?25h") == 1


def test_progress_is_silent_off_a_terminal():
    result = subprocess.run([sys.executable, "-c", PROGRESS_SCRIPT, "40"], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (4, "", "")


@pytest.mark.parametrize("command", [[], ["runs"], ["index"], ["sql"], ["demo"], ["help"], ["runs", "list"]])
def test_no_command_help_has_escaped_brackets(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "\\[" not in result.stdout and "\\" not in result.stdout


def test_installed_script_lists_with_runs_alone_and_explains_filters(home):
    env = {**os.environ, "GUILD_HOME": str(home)}
    alone = subprocess.run([str(RUNQ_SCRIPT), "runs", "-a"], env=env, capture_output=True, text=True)
    listed = subprocess.run([str(RUNQ_SCRIPT), "runs", "ls", "-a"], env=env, capture_output=True, text=True)
    assert alone.returncode == 0 and alone.stdout == listed.stdout == guild(home, "runs", "list", "-a").stdout
    topic = subprocess.run([str(RUNQ_SCRIPT), "help", "filters"], capture_output=True, text=True)
    assert topic.returncode == 0 and "a and (b or c)" in topic.stdout


def test_json_values_the_index_cannot_hold_exactly_come_from_the_files(tmp_path):
    manifest = generate_home(tmp_path, HomeSpec(runs=6, seed=9, profile="fidelity", sourcecode_files=1), NOW)
    attrs = [record.run_dir(tmp_path) / ".guild" / "attrs" for record in manifest.live]
    (attrs[0] / "exit_status").write_text(".nan\n")
    (attrs[1] / "label").write_text("123456789012345678901234567890\n")  # beyond SQLite's integers
    guilds = json.loads(guild(tmp_path, "runs", "list", "--json").stdout)
    expected = [{k: None if v != v else v for k, v in record.items()} for record in guilds]  # NaN: null
    assert any(record["exit_status"] is None and guild_record["exit_status"] is not None
               for record, guild_record in zip(expected, guilds))
    result = runq(tmp_path, "runs", "list", "--json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout, parse_constant=lambda constant: pytest.fail(f"{constant} is not JSON"))
    assert _without_runq_fields(shown) == expected


ODD_FILES = {
    "attrs/comments": b"just text\n",
    "attrs/cmd": b"a: 1\n",
    "attrs/label": b"[1, 2]\n",
    "attrs/marked": b"\xff\xfe not utf-8",
    "attrs/vcs_commit": b"{\n",
    "LOCK": b"not a pid",
    "opref": b"' unbalanced",
    "proto": b"a file where a batch prototype would be",
}


@pytest.mark.parametrize("args", [["-v"], ["-c"], ["--json"], ["-s"]])
def test_odd_run_files_never_break_the_output(tmp_path, args):
    manifest = generate_home(tmp_path, HomeSpec(runs=8, seed=12, profile="fidelity", sourcecode_files=1), NOW)
    for record in manifest.live:
        for name, text in ODD_FILES.items():
            (record.run_dir(tmp_path) / ".guild" / name).write_bytes(text)
    result = runq(tmp_path, "runs", "list", *args)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert len(json.loads(result.stdout)) == len(manifest.live) if args == ["--json"] else result.stdout
