"""The Guild oracle tells the truth: its answers are what the real CLI does.

A small Guild home is written by hand in Guild's on-disk layout (the one
`guild run` produces: .guild/opref, one YAML file per attribute in
.guild/attrs, LOCK/PENDING/STAGED markers, TensorBoard event files), then
every selection is put both to the oracle and to the real `guild` command.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guildenv import guild_python  # noqa: E402
from oracle import SCRIPT, GuildOracle, GuildResult, OracleError, run_guild  # noqa: E402

# Runs start whole seconds before this instant; the real CLI reads the
# clock itself, so time-range cases stay hours away from any boundary.
BASE = datetime.now().replace(microsecond=0)

GUILDFILE = "guildfile:/proj/guild.yml 4b25319a9d76651f5fe815f2ed0040ba"


@dataclass
class RunSpec:
    id: str
    opref: str
    started: timedelta | None  # how long before BASE; None: never started
    deleted: bool = False
    initialized: timedelta | None = None  # default: a second before started
    stopped_after: timedelta | None = timedelta(minutes=10)
    exit_status: int | None = 0
    marker: str | None = None  # LOCK (with a live pid), PENDING, STAGED
    attrs: dict = field(default_factory=dict)
    scalars: dict = field(default_factory=dict)  # prefix -> [(tag, value, step)]


RUNS = [
    RunSpec(
        "aa11c0de00000000000000000000aa11", f"{GUILDFILE} '' train", timedelta(hours=1),
        attrs={"flags": {"lr": 0.1, "batch-size": 32, "optimizer": "adam"},
               "label": "best run", "tags": ["keep"], "marked": True,
               "comments": [{"user": "alice", "host": "lab", "body": "Looks good", "time": 1}],
               "sourcecode_digest": "ab12aa11000000000000000000000000"},
        scalars={".guild": [("loss", 0.9, 0), ("loss", 0.3, 1), ("acc", 0.8, 1)]},
    ),
    RunSpec(
        "aa12beef00000000000000000000aa12", f"{GUILDFILE} '' train", timedelta(hours=5),
        exit_status=1,
        attrs={"flags": {"lr": 0.01, "batch-size": 64, "optimizer": "Adam"}, "label": "baseline",
               "sourcecode_digest": "cd34aa12000000000000000000000000"},
    ),
    RunSpec(
        "7b3e000000000000000000000000007b", f"{GUILDFILE} mnist train", timedelta(days=2),
        exit_status=-15,
        attrs={"flags": {"lr": 0.2, "batch-size": 128, "optimizer": "sgd"}, "tags": ["keep", "old"]},
        scalars={"": [("loss", 0.7, 3)], "eval": [("loss", 0.1, 3)]},
    ),
    RunSpec(
        "c0ffee000000000000000000000000c0", f"{GUILDFILE} '' eval", timedelta(days=3, hours=2),
        attrs={"label": "  best  ", "sourcecode_digest": "ab99c0ff000000000000000000000000"},
        scalars={".guild": [("acc", 0.95, 0)]},
    ),
    RunSpec(
        "d15ea5e0000000000000000000000d15", "package:gpkg.mnist 0.1.0 mnist train",
        timedelta(days=10), attrs={"flags": {"lr": 0.05}},
    ),
    RunSpec(
        "e1f20000000000000000000000000e1f", "script:/proj/train.py '' '' train.py", None,
        initialized=timedelta(minutes=30), stopped_after=None, exit_status=None, marker="PENDING",
    ),
    RunSpec(
        "f00d0000000000000000000000000f00", f"{GUILDFILE} '' train", None,
        initialized=timedelta(days=20), stopped_after=None, exit_status=None, marker="STAGED",
        attrs={"flags": {"lr": 0.3}},
    ),
    RunSpec(
        "0badf00d00000000000000000000000b", f"{GUILDFILE} '' train", timedelta(days=4),
        stopped_after=None, exit_status=None, attrs={"label": "crashed"},
    ),
    RunSpec(
        "9abc0000000000000000000000000009", f"{GUILDFILE} '' eval", None, stopped_after=None,
    ),
    # In the trash
    RunSpec(
        "aa13f00d00000000000000000000aa13", f"{GUILDFILE} '' train", timedelta(hours=2),
        deleted=True, attrs={"flags": {"lr": 0.1}, "label": "best old"},
    ),
    RunSpec(
        "b0b00000000000000000000000000b0b", f"{GUILDFILE} '' train", timedelta(hours=1, minutes=30),
        deleted=True, stopped_after=None, exit_status=None, marker="LOCK",
        attrs={"flags": {"lr": 0.5}},
    ),
    RunSpec(
        "b1b10000000000000000000000000b1b", f"{GUILDFILE} '' eval", timedelta(days=6),
        deleted=True, exit_status=2, scalars={".guild": [("loss", 0.5, 0)]},
    ),
    RunSpec(
        "1234abcd000000000000000000001234", f"{GUILDFILE} '' train", timedelta(days=3),
        deleted=True, attrs={"flags": {"lr": 0.2, "batch-size": 32}},
    ),
    RunSpec(
        "cafe0000000000000000000000000caf", f"{GUILDFILE} mnist train", timedelta(days=8),
        deleted=True, exit_status=-9, attrs={"tags": ["keep"], "marked": True},
    ),
    RunSpec(
        "2bad0000000000000000000000000002", f"{GUILDFILE} '' train", None,
        deleted=True, stopped_after=None,
    ),
]


def _ts(ago: timedelta) -> int:
    return int((BASE - ago).timestamp()) * 1000000


def encode_attr(value) -> str:
    """As guild.yaml_util.encode_yaml writes an attribute."""
    encoded = yaml.safe_dump(value, default_flow_style=False, indent=2).strip()
    return encoded[:-4] if encoded.endswith("\n...") else encoded


def run_attrs(spec: RunSpec) -> dict:
    attrs = {"id": spec.id}
    initialized = spec.initialized or (spec.started and spec.started + timedelta(seconds=1))
    if initialized:
        attrs["initialized"] = _ts(initialized)
    if spec.started:
        attrs["started"] = _ts(spec.started)
        if spec.stopped_after:
            attrs["stopped"] = _ts(spec.started - spec.stopped_after)
    if spec.exit_status is not None:
        attrs["exit_status"] = spec.exit_status
    return {**attrs, **spec.attrs}


def write_run(home: Path, spec: RunSpec, running_pid: int) -> list:
    """Writes one run; returns the event files it still needs."""
    run_dir = home / ("trash/runs" if spec.deleted else "runs") / spec.id
    attrs_dir = run_dir / ".guild" / "attrs"
    attrs_dir.mkdir(parents=True)
    (run_dir / ".guild" / "opref").write_text(spec.opref + "\n")
    for name, value in run_attrs(spec).items():
        (attrs_dir / name).write_text(encode_attr(value) + os.linesep)
    if spec.marker:
        marker_text = str(running_pid) if spec.marker == "LOCK" else ""
        (run_dir / ".guild" / spec.marker).write_text(marker_text)
    return [(str(event_file(run_dir, prefix)), scalars) for prefix, scalars in spec.scalars.items()]


def event_file(run_dir: Path, prefix: str) -> Path:
    return run_dir / prefix / "events.out.tfevents.1700000000.host.1.0"


WRITE_EVENTS = """
import json, os, sys
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
for path, scalars in json.load(sys.stdin):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        writer = RecordWriter(f)
        for tag, value, step in scalars:
            value = summary_pb2.Summary.Value(tag=tag, simple_value=value)
            event = event_pb2.Event(wall_time=1.0, step=step, summary=summary_pb2.Summary(value=[value]))
            writer.write(event.SerializeToString())
"""


def write_event_files(event_files: list) -> None:
    """TensorBoard's own record writer, run in the Guild venv."""
    subprocess.run(
        [str(guild_python()), "-c", WRITE_EVENTS], input=json.dumps(event_files), text=True, check=True
    )


def build_home(home: Path, specs: list[RunSpec], running_pid: int) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "runs" / "not-a-run" / ".guild" / "attrs").mkdir(parents=True)
    event_files = [f for spec in specs for f in write_run(home, spec, running_pid)]
    write_event_files(event_files)
    return home


@pytest.fixture(scope="module")
def running_pid():
    """A live process to name in a LOCK file: its run counts as running."""
    sleeper = subprocess.Popen(["sleep", "600"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


@pytest.fixture(scope="module")
def home(tmp_path_factory, running_pid):
    return build_home(tmp_path_factory.mktemp("guild") / "home", RUNS, running_pid)


@pytest.fixture(scope="module")
def oracle(home):
    return GuildOracle(home)


def spec_by_short_id(short_id: str) -> RunSpec:
    return next(spec for spec in RUNS if spec.id.startswith(short_id))


# ---------------------------------------------------------------------------
# (a) the oracle's list order is what `guild runs list -a` prints
# ---------------------------------------------------------------------------

LIST_LINE = re.compile(r"^\[(\d+):([0-9a-f]{8})\]", re.M)


def listed_short_ids(stdout: str) -> list[str]:
    rows = LIST_LINE.findall(stdout)
    assert [int(index) for index, _ in rows] == list(range(1, len(rows) + 1))
    return [short_id for _, short_id in rows]


def _at(ago: timedelta) -> str:
    return f"{BASE - ago:%Y-%m-%d %H:%M}"


LIST_SELECTIONS = [
    [],
    ["--deleted"],
    ["-Sc"],
    ["-Se"],
    ["--deleted", "-Sr"],
    ["-Set"],
    ["-Sp"],
    ["-Ss"],
    ["--not-completed"],
    ["--deleted", "--not-running", "-St"],
    # -S letters override a --not-X seen earlier on the line, not a later one
    ["-Sce", "--not-error"],
    ["--not-error", "-Sce"],
    ["-Fo", "train"],
    ["-Fo", "mnist:train"],
    ["-Fo", "^ev"],
    ["-Fo", "t*n"],
    ["-Fo", "gpkg.mnist/mnist:train"],
    ["-Fo", "train.py", "-Fo", "eval"],
    ["-Fl", "best"],
    ["-Fl", "-"],
    ["-Fu"],
    ["-Ft", "keep"],
    ["-Ft", "Keep"],
    ["-Fc", "ALICE"],
    ["-Fc", "-"],
    ["-Fm"],
    ["--deleted", "-Fn"],
    ["-Fd", "ab"],
    ["-F", "lr > 0.05"],
    ["-F", "loss < 0.5"],
    ["-F", "optimizer contains ADAM"],
    ["-F", "lr > 0.05 and batch-size = 32 or label contains best"],
    ["-F", "not label contains best"],
    ["-F", "scalar:eval#loss < 0.5"],
    ["-F", "acc is undefined"],
    ["-F", "batch-size in [32, 128]"],
    ["-F", "time > '0:05:00'"],
    ["--deleted", "-F", "loss >= 0.5 or flag:lr = 0.5"],
    ["-Fs", "last 3 hours"],
    ["--deleted", "-Fs", "last 4 days"],
    ["-Fs", f"before {_at(timedelta(days=2, hours=12))}"],
    ["-Fs", f"between {_at(timedelta(hours=3))} and {_at(timedelta(days=3, hours=12))}"],
    ["-Sc", "-Fo", "train", "-F", "lr >= 0.05", "-Fn"],
]


@pytest.fixture(scope="module")
def listed(oracle):
    return oracle.select_many([("list", args) for args in LIST_SELECTIONS])


@pytest.mark.parametrize("index", range(len(LIST_SELECTIONS)), ids=lambda i: " ".join(LIST_SELECTIONS[i]) or "all")
def test_oracle_lists_what_guild_runs_list_prints(home, listed, index):
    args = LIST_SELECTIONS[index]
    shown = run_guild(home, ["runs", "list", "-a", *args])
    assert shown.returncode == 0, shown.stderr
    assert listed[index].error is None
    assert [run_id[:8] for run_id in listed[index].ids] == listed_short_ids(shown.stdout)


def started_ago(spec: RunSpec) -> timedelta | None:
    """How long before BASE the run counts as started (started, else initialized)."""
    return spec.started or spec.initialized


def live_runs_newest_first() -> list[RunSpec]:
    live = [spec for spec in RUNS if not spec.deleted]
    timed = sorted((s for s in live if started_ago(s)), key=started_ago)
    return timed + [s for s in live if not started_ago(s)]


def test_list_order_is_newest_first_with_untimed_runs_last(listed):
    expected = [spec.id for spec in live_runs_newest_first()]
    assert listed[LIST_SELECTIONS.index([])].ids == expected
    assert expected[-1].startswith("9abc")


def test_selections_are_not_all_empty(listed):
    # A table of empty answers would prove nothing.
    sizes = {len(result.ids) for result in listed}
    assert 0 in sizes and len(sizes) >= 5


# ---------------------------------------------------------------------------
# (b) acting on a copy removes exactly the oracle's runs
# ---------------------------------------------------------------------------

# command -> the runs directory the command takes runs from
SOURCE_DIR = {"purge": "trash/runs", "restore": "trash/runs", "delete": "runs"}

ACTIONS = [
    ("purge", []),
    ("purge", ["1"]),
    ("purge", ["2:3"]),
    ("purge", ["-Se"]),
    ("purge", ["-F", "lr > 0.05"]),
    ("purge", ["-Fl", "-", "2:"]),
    ("purge", ["-Sr"]),
    ("purge", ["12"]),  # past the end of the list: a run-id prefix
    ("purge", ["3:x"]),  # read as "3:"
    ("purge", ["2:1"]),  # an empty range: nothing to purge
    ("purge", ["aa1"]),
    ("restore", ["-Ft", "keep"]),
    ("restore", ["1", "b1b1"]),
    ("delete", ["-Fo", "train", "-Sc"]),
    ("delete", ["1", "3", "1"]),
]


def run_ids(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if (p / ".guild" / "opref").exists()}


@pytest.fixture(scope="module")
def action_answers(oracle):
    return oracle.select_many(ACTIONS)


@pytest.mark.parametrize("index", range(len(ACTIONS)), ids=lambda i: " ".join([ACTIONS[i][0], *ACTIONS[i][1]]))
def test_guild_acts_on_exactly_the_oracles_runs(home, tmp_path, action_answers, index):
    command, args = ACTIONS[index]
    copy = Path(shutil.copytree(home, tmp_path / "home"))
    source = copy / SOURCE_DIR[command]
    before = run_ids(source)
    done = run_guild(copy, ["runs", command, "-y", *args])
    assert done.returncode == 0, done.stderr
    answer = action_answers[index]
    assert answer.error is None
    assert len(answer.ids) == len(set(answer.ids))
    assert before - run_ids(source) == set(answer.ids)


def test_duplicate_selections_are_kept_as_guild_acts_on_them(home, tmp_path, oracle):
    # `1 1:2` names run 1 twice; Guild purges it, then fails removing it again.
    answer = oracle.select("purge", ["1", "1:2"])
    first, second = answer.ids[0], answer.ids[2]
    assert answer.ids == [first, first, second]
    copy = Path(shutil.copytree(home, tmp_path / "home"))
    done = run_guild(copy, ["runs", "purge", "-y", "1", "1:2"])
    assert done.returncode == 1 and "FileNotFoundError" in done.stderr
    assert run_ids(copy / "trash/runs") == run_ids(home / "trash/runs") - {first}


# ---------------------------------------------------------------------------
# (c) refusals come back as Guild's message and exit code
# ---------------------------------------------------------------------------

REFUSALS = [
    ("list", ["-F", "loss >"]),
    ("list", ["-F", "lr = = 1"]),
    ("purge", ["-F", "lr ~ 1"]),
    ("list", ["-Fl", "x", "-Fu"]),
    ("delete", ["-Fm", "-Fn"]),
    ("purge", ["-Sxe"]),
    ("list", ["-Fs", "last week"]),
    ("rm", ["-Fs", "soon"]),
    ("purge", ["zz"]),
    ("purge", ["0"]),
    ("delete", ["aa1"]),  # two live runs share the prefix
    ("restore", ["--bogus"]),
    ("list", ["1"]),
    ("delete", ["-Fo"]),
]


def guild_message(stderr: str) -> str:
    """stderr without the "guild: " Guild puts before its own message."""
    return re.sub(r"^guild: ", "", stderr.rstrip("\n"), flags=re.M)


@pytest.fixture(scope="module")
def refusals(oracle):
    return oracle.select_many(REFUSALS)


@pytest.mark.parametrize("index", range(len(REFUSALS)), ids=lambda i: " ".join([REFUSALS[i][0], *REFUSALS[i][1]]))
def test_refusals_match_guilds_message_and_exit_code(home, refusals, index):
    command, args = REFUSALS[index]
    refused = run_guild(home, ["runs", command, "-y" if command != "list" else "-a", *args])
    assert refused.returncode != 0
    assert refusals[index] == GuildResult(ids=None, error=guild_message(refused.stderr), exit_code=refused.returncode)


def test_an_ambiguous_prefix_names_the_runs_it_matches(refusals):
    message = refusals[REFUSALS.index(("delete", ["aa1"]))].error
    assert message.splitlines() == ["'aa1' matches multiple runs:", "  aa11c0de", "  aa12beef"]


# ---------------------------------------------------------------------------
# The clock, the index and the protocol
# ---------------------------------------------------------------------------


def test_an_unprefixed_scalar_is_read_from_the_first_prefix_in_code_point_order(tmp_path, running_pid):
    # Guild reads its index through an (run, prefix, tag) index: the run
    # root '' comes before '.guild', which comes before 'alpha' and 'eval'.
    runs = [
        RunSpec("a0000000000000000000000000000000", f"{GUILDFILE} '' train", timedelta(hours=1),
                scalars={".guild": [("loss", 0.9, 0)], "": [("loss", 0.1, 0)]}),
        RunSpec("b0000000000000000000000000000000", f"{GUILDFILE} '' train", timedelta(hours=2),
                scalars={"zeta": [("loss", 0.1, 0)], "alpha": [("loss", 0.9, 0)]}),
        RunSpec("c0000000000000000000000000000000", f"{GUILDFILE} '' train", timedelta(hours=3),
                scalars={"eval": [("loss", 0.9, 0)], ".guild": [("loss", 0.1, 0)]}),
    ]
    home = build_home(tmp_path / "home", runs, running_pid)
    selected = GuildOracle(home).select("list", ["-F", "loss < 0.5"]).ids
    assert selected == ["a0000000000000000000000000000000", "c0000000000000000000000000000000"]
    shown = run_guild(home, ["runs", "list", "-a", "-F", "loss < 0.5"])
    assert listed_short_ids(shown.stdout) == [run_id[:8] for run_id in selected]


@pytest.mark.parametrize("shift", [timedelta(0), timedelta(hours=2, minutes=30), -timedelta(hours=4)])
def test_time_ranges_are_evaluated_at_the_given_now(home, shift):
    # `last N hours` has no end: runs started after `now` pass too.
    now = BASE + shift
    selected = GuildOracle(home, now=now).select("list", ["-Fs", "last 3 hours"]).ids
    expected = [
        spec.id
        for spec in live_runs_newest_first()
        if started_ago(spec) and now - timedelta(hours=3) <= BASE - started_ago(spec)
    ]
    assert selected == expected and expected


def test_running_durations_are_measured_at_the_given_now(home):
    running = "b0b00000000000000000000000000b0b"  # started 1:30 before BASE

    def running_for(now, text):
        return GuildOracle(home, now=now).select("list", ["--deleted", "-F", f"time = '{text}'"]).ids

    assert running_for(BASE, "1:30:00") == [running]
    assert running_for(BASE + timedelta(minutes=45, seconds=7), "2:15:07") == [running]
    assert running_for(BASE + timedelta(hours=1), "1:30:00") == []


def test_answers_follow_the_files_not_a_cache(tmp_path, running_pid):
    spec = RunSpec("5ca1a20000000000000000000000005c", f"{GUILDFILE} '' train", timedelta(hours=1),
                   scalars={".guild": [("loss", 0.9, 0)]})
    home = build_home(tmp_path / "home", [spec], running_pid)
    oracle = GuildOracle(home)
    assert oracle.select("list", ["-F", "loss < 0.5"]).ids == []
    # Same file name and size, new value: Guild's own index would not notice.
    write_event_files([(str(event_file(home / "runs" / spec.id, ".guild")), [("loss", 0.1, 0)])])
    assert oracle.select("list", ["-F", "loss < 0.5"]).ids == [spec.id]
    assert not (home / "cache").exists()


def test_script_answers_one_request_on_stdin(home):
    request = {"home": str(home), "now": BASE.isoformat(),
               "cases": [{"command": "purge", "args": ["-Sc", "1"]}, {"command": "purge", "args": ["zz"]}]}
    done = subprocess.run([str(guild_python()), str(SCRIPT)], input=json.dumps(request),
                          capture_output=True, text=True, check=True)
    answers = json.loads(done.stdout)
    assert answers[0] == {"ids": ["aa13f00d00000000000000000000aa13"]}
    assert answers[1]["exit"] == 1 and "could not find a run matching 'zz'" in answers[1]["error"]


def test_a_missing_home_is_refused_as_guild_refuses_it(tmp_path):
    missing = tmp_path / "nowhere"
    refused = run_guild(missing, ["runs", "list"])
    assert GuildOracle(missing).select("list", []) == GuildResult(
        ids=None, error=guild_message(refused.stderr), exit_code=refused.returncode
    )


def test_commands_other_than_selections_are_rejected(home):
    with pytest.raises(ValueError):
        GuildOracle(home).select("label", [])
    with pytest.raises(OracleError, match="remote"):
        GuildOracle(home).select("list", ["--remote", "somewhere"])
