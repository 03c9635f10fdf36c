"""The Python API, `runq.open()`: the same selections as the command line
(and Guild), runs with their attributes, read-only SQL, and actions that
keep the command line's safety."""

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

import runq  # noqa: E402
from runq.commands.app import app  # noqa: E402
from runq.engine.errors import RunqError, SelectionError  # noqa: E402
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home  # noqa: E402

NOW = datetime(2026, 11, 29, 12, 0, 0)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A home the read-only tests share."""
    root = tmp_path_factory.mktemp("api")
    return root, generate_home(root, HomeSpec(runs=60, seed=3, profile="fidelity", sourcecode_files=1), NOW)


@pytest.fixture
def fresh(tmp_path):
    """A home of its own, for the tests that change it."""
    return tmp_path, generate_home(tmp_path, HomeSpec(runs=30, seed=4, profile="fidelity", sourcecode_files=1), NOW)


def cli_ids(home, *args):
    result = CliRunner().invoke(app, ["-H", str(home), "--now", NOW.isoformat(), "runs", "list", "--json", *args])
    assert result.exit_code == 0, result.stderr
    return [run["id"] for run in json.loads(result.stdout)]


# The API's options (Python names) and the command line's equivalents.
SELECTIONS = [
    ({}, []),
    ({"deleted": True}, ["--deleted"]),
    ({"filter": "lr >= 0.001", "deleted": True}, ["-F", "lr >= 0.001", "--deleted"]),
    ({"operation": "train"}, ["-Fo", "train"]),
    ({"operation": ["^mnist", "finetune*"]}, ["-Fo", "^mnist", "-Fo", "finetune*"]),
    ({"label": "-"}, ["-Fl", "-"]),
    ({"unlabeled": True}, ["-Fu"]),
    ({"tag": ["best", "v2"]}, ["-Ft", "best", "-Ft", "v2"]),
    ({"comment": "bob"}, ["-Fc", "bob"]),
    ({"marked": True}, ["-Fm"]),
    ({"unmarked": True, "deleted": True}, ["-Fn", "-d"]),
    ({"started": "last 60 days"}, ["--started", "last 60 days"]),
    ({"digest": "0f0f"}, ["-Fd", "0f0f"]),
    ({"status": ["completed", "error"]}, ["-Sce"]),
    ({"not_status": "running"}, ["--not-running"]),
    ({"runs": [1, "3:5"]}, ["1", "3:5"]),
    ({"runs": "2:", "status": "completed"}, ["-Sc", "2:"]),
]


@pytest.mark.parametrize("options, args", SELECTIONS)
def test_select_is_the_command_lines_selection(sample, options, args):
    home, _ = sample
    with runq.open(home) as index:
        runs = index.select(now=NOW, **options)
    assert [run.id for run in runs] == cli_ids(home, *args)


@pytest.mark.parametrize("options, args", [
    ({"filter": "lr >= 0.001", "deleted": True}, ["-F", "lr >= 0.001", "--deleted"]),
    ({"operation": "train", "status": "completed"}, ["-Fo", "train", "-Sc"]),
    ({"label": "best", "marked": True}, ["-Fl", "best", "-Fm"]),
])
def test_select_is_guilds_selection(sample, options, args):
    home, _ = sample
    env = {**os.environ, "GUILD_HOME": str(home)}
    guild = subprocess.run([str(guild_script()), "runs", "list", "--json", *args], env=env, capture_output=True, text=True)
    assert guild.returncode == 0, guild.stderr
    with runq.open(home) as index:
        assert [run.id for run in index.select(**options)] == [run["id"] for run in json.loads(guild.stdout)]


@pytest.mark.parametrize("options, args", SELECTIONS)
def test_the_first_runs_of_a_selection_and_its_total(sample, options, args):
    home, _ = sample
    with runq.open(home) as index:
        whole = index.select(now=NOW, **options)
        first = index.select(now=NOW, first=2, **options)
    assert list(first) == whole[:2] and (first.total, whole.total) == (len(whole), len(whole))


def test_runs_carry_their_attributes_and_flags(sample):
    home, manifest = sample
    by_id = manifest.by_id()
    with runq.open(home) as index:
        runs = index.select(deleted=True)
    assert runs and [run.position for run in runs] == list(range(1, len(runs) + 1))
    for run in runs:
        record = by_id[run.id]
        assert run.dir == str(home / "trash" / "runs" / run.id)
        assert (run.operation, run.started, run.status) == (record.operation, record.started, record.status)
        assert bool(run.marked) == bool(record.marked) and run.deleted
        assert run.flags == record.flags
        assert run.get("sourcecode_digest") == record.sourcecode_digest
        assert run.get("no-such-attribute", "x") == "x"


def test_open_takes_the_home_and_index_path(sample, tmp_path, monkeypatch):
    home, manifest = sample
    monkeypatch.setenv("GUILD_HOME", str(home))
    with runq.open(index=tmp_path / "elsewhere.db") as index:
        assert index.home == home and index.path == tmp_path / "elsewhere.db"
        assert index.refresh_report.added == len(manifest.runs)
        assert len(index.select()) == len(manifest.live)
    with runq.open(index=tmp_path / "elsewhere.db", refresh=False) as index:
        assert index.refresh_report is None and len(index.select()) == len(manifest.live)


def test_sql_reads_and_refuses_writes(sample):
    home, manifest = sample
    with runq.open(home) as index:
        result = index.sql("SELECT COUNT(*) AS n FROM runs WHERE deleted")
        assert result.columns == ["n"] and result.rows == [(len(manifest.deleted),)]
        with pytest.raises(RunqError):
            index.sql("DELETE FROM runs")
        assert index.sql("SELECT COUNT(*) FROM runs").rows == [(len(manifest.runs),)]
        assert index.sql("SELECT COUNT(*) FROM runs WHERE deleted = :d", {"d": 0}).rows == [(len(manifest.live),)]


@pytest.mark.parametrize("options, message", [
    ({"status": "finished"}, "unknown status 'finished'"),
    ({"label": "x", "unlabeled": True}, "--label and --unlabeled cannot both be used"),
    ({"filter": "lr >"}, "filter"),
    ({"started": "last fortnight"}, "--started"),
    ({"runs": "zzzz"}, "could not find a run matching 'zzzz'"),
])
def test_bad_selections_raise_runq_errors(sample, options, message):
    home, _ = sample
    with runq.open(home) as index, pytest.raises(RunqError) as raised:
        index.select(**options)
    assert message in str(raised.value)


# Acting


def test_purge_removes_the_selected_deleted_runs(fresh):
    home, manifest = fresh
    with runq.open(home) as index:
        runs = index.select(deleted=True, runs="1:3")
        outcome = index.purge(runs)
        assert outcome.done == [run.id for run in runs] and not outcome.skipped and outcome.bytes_freed > 0
        assert not any((home / "trash" / "runs" / run.id).exists() for run in runs)
        assert len(index.select(deleted=True)) == len(manifest.deleted) - 3
    assert not (home / "trash" / "runq-purging").exists() or not os.listdir(home / "trash" / "runq-purging")


def test_purge_skips_runs_that_no_longer_match(fresh):
    home, manifest = fresh
    with runq.open(home) as index:
        runs = index.select(deleted=True, label="-")
        assert len(runs) >= 2
        changed = runs[0]
        (Path(changed.dir) / ".guild" / "attrs" / "label").write_text(encode_attr("keep me"))
        outcome = index.purge(runs)
    assert [run.id for run in outcome.skipped] == [changed.id]
    assert Path(changed.dir).is_dir()
    assert sorted(outcome.done) == sorted(run.id for run in runs[1:])


def test_purge_acts_on_deleted_runs_from_select_only(fresh):
    home, _ = fresh
    with runq.open(home) as index:
        live = index.select()
        with pytest.raises(SelectionError, match="purge acts on deleted runs only"):
            index.purge(live)
        with pytest.raises(SelectionError, match="takes runs from select"):
            index.purge(list(index.select(deleted=True)))
        with pytest.raises(SelectionError, match="restore acts on deleted runs only"):
            index.restore(live)
    assert len(os.listdir(home / "runs")) == len(live)


def test_delete_and_restore_move_runs(fresh):
    home, manifest = fresh
    with runq.open(home) as index:
        runs = index.select(status=["completed", "error"])
        moved = index.delete(runs)
        assert sorted(moved.done) == sorted(run.id for run in runs)
        assert all((home / "trash" / "runs" / run.id).is_dir() for run in runs)
        back = index.restore(index.select(deleted=True, runs=[run.id[:12] for run in runs]))
        assert sorted(back.done) == sorted(run.id for run in runs)
        assert len(index.select()) == len(manifest.live)


def test_delete_permanent_removes_live_runs(fresh):
    home, manifest = fresh
    with runq.open(home) as index:
        runs = index.select(runs=1)
        outcome = index.delete(runs, permanent=True)
        assert outcome.done == [runs[0].id] and not Path(runs[0].dir).exists()
        assert not (home / "trash" / "runs" / runs[0].id).exists()


def test_archives_are_read_only(sample, tmp_path, monkeypatch):
    home, _ = sample
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = tmp_path / "archive"
    archive.mkdir()
    first = sorted((home / "runs").iterdir())[0]
    shutil.copytree(first, archive / first.name)
    from runq.engine.api import open_archive

    with open_archive(archive) as index:
        runs = index.select()
        assert [run.id for run in runs] == [first.name]
        with pytest.raises(SelectionError, match="archive"):
            index.delete(runs)
    assert (archive / first.name).is_dir()
