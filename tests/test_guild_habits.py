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
