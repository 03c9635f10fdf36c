"""The wheel carries what runq needs, and the installed console script works."""

import re
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from runq.engine.samplehome import HomeSpec, generate_home

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True,
    )
    (path,) = out.glob("runq-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_engine_commands_and_schema(wheel):
    names = set(wheel.namelist())
    assert {"runq/__init__.py", "runq/__main__.py", "runq/engine/compiler.py", "runq/schema.sql", "runq/commands/app.py"} <= names
    assert wheel.read("runq/schema.sql") == (REPO / "schema.sql").read_bytes()


def test_wheel_installs_one_import_package(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist()}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"runq"}
    assert not [name for name in wheel.namelist() if name.startswith("runq/tests/") or "/benchmarks/" in name]


def test_wheel_entry_point_and_runtime_dependencies(wheel):
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    entry = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "runq = runq.commands.entry:main" in wheel.read(entry).decode()
    requires = [line for line in wheel.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    runtime = [line for line in requires if "extra ==" not in line]
    assert not any("guild" in line.lower() for line in requires)
    assert {re.split(r"[<>=!~ ,;]", line.split()[1])[0].lower() for line in runtime} == {
        "sqlglot", "sqlite-utils", "typer", "click", "python-dateutil", "pyyaml", "regex"
    }


def test_console_script_runs_on_a_home(tmp_path):
    script = Path(sys.executable).parent / "runq"
    home = tmp_path / "home"
    manifest = generate_home(home, HomeSpec(runs=30, profile="realistic", seed=1), datetime.now())
    result = subprocess.run([str(script), "-H", str(home), "runs", "list", "--deleted", "-a"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(manifest.deleted)
