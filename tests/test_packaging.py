"""The wheel carries what runq needs, and the installed console script works."""

import os
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
    assert "runq = runq.commands.app:main" in wheel.read(entry).decode()
    requires = [line for line in wheel.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    runtime = [line for line in requires if "extra ==" not in line]
    assert not any("guild" in line.lower() for line in requires)
    assert {re.split(r"[<>=!~ ,;]", line.split()[1])[0].lower() for line in runtime} == {
        "sqlglot", "sqlite-utils", "typer", "click", "python-dateutil", "pyyaml"
    }


def test_console_script_runs_on_a_home(tmp_path):
    script = Path(sys.executable).parent / "runq"
    home = tmp_path / "home"
    manifest = generate_home(home, HomeSpec(runs=30, profile="realistic", seed=1), datetime.now())
    result = subprocess.run([str(script), "-H", str(home), "runs", "list", "--deleted", "-a"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(manifest.deleted)


SCRIPT = Path(sys.executable).parent / "runq"


def test_version_is_the_packages():
    from runq import __version__

    for argv in ([str(SCRIPT), "--version"], [sys.executable, "-m", "runq", "--version"]):
        result = subprocess.run(argv, capture_output=True, text=True)
        assert (result.returncode, result.stdout, result.stderr) == (0, f"runq {__version__}\n", "")


def _complete(shell, words, **env):
    """What the shell's completion function gets back when TAB is pressed after `words`."""
    env = {**os.environ, "_RUNQ_COMPLETE": f"complete_{shell}", **env}
    if shell == "bash":
        env.update(COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1))
    else:
        env.update(_TYPER_COMPLETE_ARGS=words, _TYPER_COMPLETE_FISH_ACTION="get-args")
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_shell_completion_of_commands_and_options():
    assert _complete("bash", "runq runs li").split() == ["list"]
    assert _complete("bash", "runq runs ").split() == ["list", "purge", "delete", "restore"]
    assert _complete("bash", "runq r").split() == ["runs"]
    assert "--deleted" in _complete("bash", "runq runs list --del").split()
    assert '"list":' in _complete("zsh", "runq runs li")
    assert _complete("fish", "runq runs li").startswith("list\t")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_name_runq(shell):
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = subprocess.run([str(SCRIPT), "--show-completion", shell], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "_RUNQ_COMPLETE=complete_" + shell in result.stdout.replace("_RUNQ_COMPLETE='complete_", "_RUNQ_COMPLETE=complete_")


def test_shell_completion_of_run_ids_and_filter_values(tmp_path):
    home = tmp_path / "home"
    manifest = generate_home(home, HomeSpec(runs=12, profile="fidelity", seed=2, sourcecode_files=1), datetime.now())
    live, deleted = [r.id for r in manifest.live], [r.id for r in manifest.deleted]
    prefix = live[0][0]
    assert _complete("bash", f"runq -H {home} runs list ").split() == []  # no index yet: nothing to wait for
    assert not (home / "cache" / "runq").exists()
    subprocess.run([str(SCRIPT), "-H", str(home), "index"], check=True, capture_output=True)
    assert _complete("bash", f"runq -H {home} runs delete {prefix}").split() == sorted(i for i in live if i.startswith(prefix))
    assert _complete("bash", f"runq -H {home} runs purge ").split() == sorted(deleted)
    assert _complete("bash", f"runq -H {home} runs list -d ").split() == sorted(deleted)
    assert _complete("bash", f"runq -H {tmp_path / 'nowhere'} runs list ").split() == []
    assert _complete("bash", f"runq -H {home} runs list -Fo ").splitlines() == sorted({r.operation for r in manifest.live})
    deleted_tags = sorted({tag for r in manifest.deleted for tag in r.tags or ()})
    assert _complete("bash", f"runq -H {home} runs purge -Ft ").splitlines() == deleted_tags
    labels = sorted(f'"{r.label}"' for r in manifest.live if r.label)  # as Guild: any label but ''
    assert sorted(set(_complete("bash", f"runq -H {home} runs list -Fl ").splitlines())) == sorted(set(labels))
