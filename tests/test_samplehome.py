"""Generated Guild homes, read back by Guild 0.9.0 itself.

One Guild process reads every home these tests make (a fidelity home, a
realistic one, and a home before and after `mutate_home`) with Guild's
own API, and re-encodes every attribute file with Guild's YAML encoder;
the tests then compare what Guild read with what the generator says it
wrote. Two more calls run the real `guild runs list` command.
"""

import datetime
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from guildenv import guild_python, guild_script  # noqa: E402

from runq.engine import samplehome  # noqa: E402
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home, mutate_home  # noqa: E402

# A Wednesday afternoon: today, yesterday and this week are all non-empty.
NOW = datetime.datetime(2026, 3, 18, 14, 30, 15, 123456)
FIDELITY_RUNS = 200

_GUILD_READER = r"""
import json, os, sys, tempfile
from guild import index as indexlib, run_util, var, yaml_util

def read_home(root):
    home = {}
    for deleted, sub in ((False, "runs"), (True, os.path.join("trash", "runs"))):
        runs = var.runs(os.path.join(root, sub), sort=["-timestamp"])
        index = indexlib.RunIndex(tempfile.mkdtemp())
        index.refresh(runs, ["scalar"])
        home["trash" if deleted else "live"] = [read_run(run, index) for run in runs]
    return home

def read_run(run, index):
    scalars = [[row["prefix"], row["tag"], row["last_val"]] for row in index.run_scalars(run)]
    return {
        "id": run.id,
        "opref": list(run.opref),
        "operation": run_util.format_operation(run),
        "status": run.status,
        **{name: run.get(name) for name in (
            "started", "initialized", "stopped", "exit_status", "label", "tags",
            "marked", "comments", "flags", "sourcecode_digest")},
        "scalars": scalars,
        "unprefixed": {tag: index.run_scalar(run, None, tag, None, False)
                       for _prefix, tag, _value in scalars},
        "not_guild_form": not_guild_form(run),
    }

def not_guild_form(run):
    # Files whose text differs from what Guild's own encoder makes of them.
    bad = []
    with open(run.guild_path("opref")) as f:
        if f.read() != str(run.opref):
            bad.append("opref")
    for name in run.attr_names():
        with open(os.path.join(run.guild_path("attrs"), name)) as f:
            text = f.read()
        if text not in GUILD_FORM and not in_guild_form(text):
            bad.append(name)
    return bad

GUILD_FORM = set()  # texts already found in Guild's form (many repeat)

def in_guild_form(text):
    if yaml_util.encode_yaml(yaml_util.decode_yaml(text), strict=True) + os.linesep != text:
        return False
    GUILD_FORM.add(text)
    return True

with open(sys.argv[1]) as f:
    request = json.load(f)
yaml_mismatches = [
    i for i, (value, text) in enumerate(request["yaml_cases"])
    if yaml_util.encode_yaml(value, strict=True) + os.linesep != text
]
json.dump({"homes": {root: read_home(root) for root in request["homes"]},
           "yaml_mismatches": yaml_mismatches}, sys.stdout)
"""


# --- the homes, and Guild's reading of them ---------------------------------


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    base = tmp_path_factory.mktemp("homes")
    fidelity = generate_home(base / "fidelity", HomeSpec(FIDELITY_RUNS, profile="fidelity", seed=3), NOW)
    realistic = generate_home(base / "realistic", HomeSpec(80, seed=5), NOW)
    fast = generate_home(base / "fast", HomeSpec(80, profile="fast", seed=5), NOW)
    mutated = generate_home(base / "mutated", HomeSpec(60, profile="fidelity", seed=7), NOW)
    shutil.copytree(mutated.root, base / "before-mutation")
    later = NOW + datetime.timedelta(minutes=5)
    changed = mutate_home(mutated.root, 0.4, seed=11, now=later)
    return {"fidelity": fidelity, "realistic": realistic, "fast": fast, "mutated": mutated,
            "before": base / "before-mutation", "changed": changed, "base": base}


@pytest.fixture(scope="module")
def guild_read(homes):
    cases = _awkward_values()
    request = {
        "homes": [str(homes[name].root) for name in ("fidelity", "realistic", "fast", "mutated")]
        + [str(homes["before"])],
        "yaml_cases": [[value, encode_attr(value)] for value in cases],
    }
    request_path = homes["base"] / "request.json"
    request_path.write_text(json.dumps(request))
    proc = _guild([str(guild_python()), "-c", _GUILD_READER, str(request_path)], homes["base"])
    result = json.loads(proc.stdout)
    result["stderr"] = proc.stderr
    result["cases"] = cases
    return result


def _guild(args, guild_home):
    env = dict(os.environ, GUILD_HOME=str(guild_home), NO_IMPORT_FLAGS_CACHE="1")
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def _read(guild_read, manifest_or_root):
    root = manifest_or_root if isinstance(manifest_or_root, Path) else manifest_or_root.root
    home = guild_read["homes"][str(root)]
    return {run["id"]: dict(run, deleted=deleted)
            for deleted, key in ((False, "live"), (True, "trash")) for run in home[key]}


def _typed(value):
    """value with its type spelled out, so that 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return ("dict", {key: _typed(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return ("list", [_typed(item) for item in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


# --- Guild reads exactly what the manifest says ------------------------------


@pytest.mark.parametrize("home", ["fidelity", "realistic", "fast"])
def test_guild_finds_every_run_in_its_root(homes, guild_read, home):
    manifest = homes[home]
    read = _read(guild_read, manifest)
    assert sorted(read) == sorted(run.id for run in manifest.runs)
    assert {run.id for run in manifest.runs if run.deleted} == {
        run_id for run_id, run in read.items() if run["deleted"]}


@pytest.mark.parametrize("home", ["fidelity", "realistic", "fast"])
def test_guild_orders_runs_as_their_distinct_timestamps_say(homes, guild_read, home):
    manifest = homes[home]
    for deleted, key in ((False, "live"), (True, "trash")):
        runs = [run for run in manifest.runs if run.deleted == deleted]
        stamps = [run.sort_timestamp for run in runs if run.sort_timestamp is not None]
        assert len(stamps) == len(set(stamps))
        assert len(runs) - len(stamps) <= 1
        expected = sorted(runs, key=lambda run: (run.sort_timestamp is None, -(run.sort_timestamp or 0)))
        guild_order = [run["id"] for run in guild_read["homes"][str(manifest.root)][key]]
        assert guild_order == [run.id for run in expected]


_FIELDS = ("status", "operation", "started", "initialized", "stopped", "exit_status",
           "label", "tags", "marked", "comments", "flags", "sourcecode_digest")


@pytest.mark.parametrize("home", ["fidelity", "realistic", "fast"])
@pytest.mark.parametrize("name", _FIELDS)
def test_guild_reads_each_field_as_written(homes, guild_read, home, name):
    read = _read(guild_read, homes[home])
    wrong = {run.id: (getattr(run, name), read[run.id][name])
             for run in homes[home].runs
             if _typed(getattr(run, name)) != _typed(read[run.id][name])}
    assert wrong == {}


@pytest.mark.parametrize("home", ["fidelity", "realistic", "fast"])
def test_guild_parses_each_opref_into_its_parts(homes, guild_read, home):
    read = _read(guild_read, homes[home])
    assert {run.id: list(run.opref) for run in homes[home].runs} == {
        run_id: run["opref"] for run_id, run in read.items()}


def _as_indexed(value):
    # Guild keeps scalar summaries in SQLite, which stores NaN as NULL.
    return None if math.isnan(value) else value


@pytest.mark.parametrize("home", ["fidelity", "realistic", "fast"])
def test_guild_indexes_the_last_value_of_each_scalar_per_prefix(homes, guild_read, home):
    read = _read(guild_read, homes[home])
    for run in homes[home].runs:
        guild_scalars = {(prefix, tag): value for prefix, tag, value in read[run.id]["scalars"]}
        written = {key: _as_indexed(value) for key, value in run.scalars.items()}
        assert _typed(guild_scalars) == _typed(written), run.id


def test_a_tag_under_several_prefixes_ends_on_one_value_in_fidelity_homes(homes, guild_read):
    # Guild picks among prefixes in file-system order; equal values make
    # the pick irrelevant, which is what fidelity homes promise.
    read = _read(guild_read, homes["fidelity"])
    for run in homes["fidelity"].runs:
        for tag, value in read[run.id]["unprefixed"].items():
            written = {_typed(_as_indexed(v)) for (_prefix, t), v in run.scalars.items() if t == tag}
            assert written == {_typed(value)}, (run.id, tag)


@pytest.mark.parametrize("home", ["fidelity", "realistic", "mutated"])
def test_every_attribute_file_is_in_guilds_exact_form(homes, guild_read, home):
    read = _read(guild_read, homes[home])
    assert {run_id: run["not_guild_form"] for run_id, run in read.items()
            if run["not_guild_form"]} == {}


def test_guild_reads_event_files_without_complaint(guild_read):
    assert "error reading" not in guild_read["stderr"]
    assert "WARNING" not in guild_read["stderr"]


def test_attribute_encoder_matches_guild_on_awkward_values(guild_read):
    mismatches = [guild_read["cases"][i] for i in guild_read["yaml_mismatches"]]
    assert mismatches == []


def _awkward_values():
    """Values whose YAML text needs care: quoting, escapes, wrapping, nesting."""
    rng = random.Random(1)
    words = ["yes", "no", "y", "N", "on", "null", "~", "True", "1e3", "1e-05", "100",
             "-2.5", ".5", "0x1F", "012", "1_000", "2024-01-02", "<<", "=", "!", "&",
             "...", "---", "- a", "? x", ":x", "a:", "a: b", "#x", "a #b", "", " ",
             ".nan", "-.inf", "+1", "1:30", "don't", "é", "日本", "😀", "\t", "\n",
             "a\nb", "a \nb", "a\n b", "\x85", "\u2028", "\xa0", "\x07", "x" * 40]

    def text():
        return " ".join(rng.choice(words) for _ in range(rng.randint(1, 14)))

    def scalar():
        return rng.choice([text(), text(), rng.randint(-10**9, 10**9), rng.random(),
                           1e-05, -2.5, 1e20, float("inf"), True, False, None])

    def value(depth=0):
        pick = rng.random()
        if depth > 2 or pick < 0.5:
            return scalar()
        if pick < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        keys = [rng.choice(["lr", "y", "n", "batch-size", "operation:train", "x y", "é", "100"])
                for _ in range(rng.randint(0, 3))]
        return {key: value(depth + 1) for key in keys}

    return [value() for _ in range(1500)]


# --- the real command line lists every run -----------------------------------


def test_fast_home_writes_only_what_a_listing_reads(homes):
    run_files = {path.relative_to(run.run_dir(homes["fast"].root)).as_posix()
                 for run in homes["fast"].runs for path in run.run_dir(homes["fast"].root).rglob("*")}
    attrs = {path.split("/")[-1] for path in run_files if path.startswith(".guild/attrs/")}
    assert attrs <= {"id", "flags", "op", "initialized", "started", "stopped", "exit_status",
                     "label", "tags", "marked", "comments"}
    assert not [path for path in run_files if "tfevents" in path or path.startswith(".guild/output")]
    assert {run.status for run in homes["fast"].runs} >= {"completed", "error"}


@pytest.mark.parametrize("deleted", [False, True])
def test_guild_runs_list_shows_every_run(homes, deleted):
    manifest = homes["fidelity"]
    args = [str(guild_script()), "runs", "list", "-a"] + (["--deleted"] if deleted else [])
    listed = re.findall(r"^\[(\d+):([0-9a-f]{8})\]", _guild(args, manifest.root).stdout, re.M)
    runs = [run for run in manifest.runs if run.deleted == deleted]
    expected = sorted(runs, key=lambda run: (run.sort_timestamp is None, -(run.sort_timestamp or 0)))
    assert listed == [(str(i), run.id[:8]) for i, run in enumerate(expected, 1)]


# --- the fidelity profile covers what it promises ----------------------------


def test_fidelity_home_holds_every_status_kind_several_times(homes):
    runs = homes["fidelity"].runs
    kinds = {kind: sum(run.status_kind == kind for run in runs) for kind in samplehome._STATUS_OF_KIND}
    assert min(kinds.values()) >= 10, kinds
    for kind, marker, content in (("running", "LOCK", "1"), ("running-remote", "LOCK.remote", None),
                                  ("pending", "PENDING", ""), ("staged", "STAGED", "")):
        run = next(run for run in runs if run.status_kind == kind)
        path = run.run_dir(homes["fidelity"].root) / ".guild" / marker
        assert path.exists() and (content is None or path.read_text() == content)
    dead = next(run for run in runs if run.status_kind == "error-dead-pid")
    pid = (dead.run_dir(homes["fidelity"].root) / ".guild" / "LOCK").read_text()
    assert not os.path.exists(f"/proc/{pid}")


def test_fidelity_home_holds_every_kind_of_operation(homes):
    def kind(run):
        pkg_type, _name, _version, model, _op = run.opref
        return pkg_type, bool(model)

    counts = {}
    for run in homes["fidelity"].runs:
        counts[kind(run)] = counts.get(kind(run), 0) + 1
    expected = {("guildfile", True), ("guildfile", False), ("script", False),
                ("package", True), ("package", False)}
    assert set(counts) == expected and min(counts.values()) >= 10, counts
    operations = {run.operation for run in homes["fidelity"].runs}
    assert {"mnist:train", "prepare-data", "train.py", "gpkg.mnist/mnist:train",
            "gpkg.hello/hello"} <= operations


def test_fidelity_home_holds_flags_of_every_type_and_awkward_name(homes):
    values = [(name, value) for run in homes["fidelity"].runs for name, value in run.flags.items()]
    types = {type(value) for _name, value in values}
    assert {int, float, bool, str, type(None), list} <= types
    assert {1e-05, "100", "yes", "1e3"} <= {value for _n, value in values if not isinstance(value, list)}
    assert any(isinstance(v, float) and v < 0 for _n, v in values)
    assert any(isinstance(v, list) and len({type(item) for item in v}) > 2 for _n, v in values)
    names = {name for name, _value in values}
    assert {"label", "status", "started", "batch-size"} <= names


def test_fidelity_home_holds_scalars_in_every_layout(homes):
    runs = homes["fidelity"].runs
    prefixes = {prefix for run in runs for prefix, _tag in run.scalars}
    assert {".guild", "", "eval", "train"} <= prefixes
    assert any(prefix.count("/") >= 1 for prefix in prefixes)
    assert any(math.isnan(value) for run in runs for value in run.scalars.values())
    assert any({tag for _p, tag in run.scalars} & set(run.flags) for run in runs)
    shared = [run for run in runs
              if len({tag for _p, tag in run.scalars}) < len(run.scalars)]
    assert len(shared) >= 5


def test_fidelity_home_holds_every_kind_of_label_tag_comment_and_mark(homes):
    runs = homes["fidelity"].runs
    labels = [run.label for run in runs]
    assert None in labels and "" in labels
    assert any(label and not label.isascii() for label in labels)
    assert any(label and " " in label.strip() for label in labels)
    assert any(label and label != label.lower() for label in labels)
    assert any(label and len(label) > 80 for label in labels)
    tags = [run.tags for run in runs]
    assert None in tags and [] in tags
    assert any(t and {"BEST", "best"} <= set(t) for t in tags)
    assert sum(bool(t and "best" in t) for t in tags) >= 5
    comments = [c for run in runs for c in run.comments or []]
    assert any("\n" in c["body"] for c in comments)
    assert len({(c["user"], c["host"]) for c in comments}) >= 3
    assert {None, True, False} <= {run.marked for run in runs}


def test_fidelity_home_holds_runs_with_partial_timestamps_and_shared_digest_prefixes(homes):
    runs = homes["fidelity"].runs
    assert sum(run.started is None and run.initialized is not None for run in runs) >= 10
    assert sum(run.started is None and run.initialized is None for run in runs) == 2
    digests = [run.sourcecode_digest for run in runs if run.sourcecode_digest]
    assert None in {run.sourcecode_digest for run in runs}
    assert len({d[:4] for d in digests}) < len(set(digests))


def test_start_times_are_dense_near_now_and_spread_over_two_years(homes):
    now_us = NOW.timestamp() * 1e6
    midnight = NOW.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1e6
    starts = [run.sort_timestamp for run in homes["fidelity"].runs if run.sort_timestamp]
    assert max(starts) < now_us
    assert min(starts) >= now_us - 731 * 86400e6
    assert min(starts) < now_us - 365 * 86400e6
    assert sum(s >= now_us - 3600e6 for s in starts) >= 3
    assert sum(midnight <= s < now_us - 3600e6 for s in starts) >= 3
    assert sum(midnight - 86400e6 <= s < midnight for s in starts) >= 3
    assert sum(s % 1_000_000 != 0 for s in starts) == len(starts)


# --- mutation ------------------------------------------------------------------


def test_mutate_home_changes_exactly_the_runs_it_reports(homes, guild_read):
    before = _read(guild_read, homes["before"])
    after = _read(guild_read, homes["mutated"])
    fields = ("status", "exit_status", "stopped", "label", "tags", "marked", "comments", "scalars")
    differing = {run_id for run_id in before
                 if any(_typed(before[run_id][f]) != _typed(after[run_id][f]) for f in fields)}
    assert differing == set(homes["changed"])
    assert len(homes["changed"]) == round(0.4 * len(before))


def test_mutate_home_finishes_running_runs_and_makes_each_kind_of_change(homes, guild_read):
    before = _read(guild_read, homes["before"])
    after = _read(guild_read, homes["mutated"])
    changes = set()
    for run_id in homes["changed"]:
        old, new = before[run_id], after[run_id]
        changes |= {f for f in ("label", "tags", "marked", "comments", "scalars")
                    if _typed(old[f]) != _typed(new[f])}
        if old["status"] == "running":
            assert new["status"] in ("completed", "error", "terminated")
            assert new["stopped"] > (old["started"] or old["initialized"])
            run_dir = homes["mutated"].by_id()[run_id].run_dir(homes["mutated"].root)
            assert not (run_dir / ".guild" / "LOCK").exists()
            assert not (run_dir / ".guild" / "LOCK.remote").exists()
            changes.add("finished")
    assert changes == {"label", "tags", "marked", "comments", "scalars", "finished"}


# --- determinism -------------------------------------------------------------


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("profile", ["fidelity", "realistic", "fast"])
def test_generation_is_deterministic_for_a_seed_and_now(tmp_path, profile):
    spec = HomeSpec(24, profile=profile, seed=2)
    first = generate_home(tmp_path / "a", spec, NOW)
    second = generate_home(tmp_path / "b", spec, NOW)
    other = generate_home(tmp_path / "c", HomeSpec(24, profile=profile, seed=3), NOW)
    assert _tree_digest(first.root) == _tree_digest(second.root)
    assert [run.id for run in first.runs] == [run.id for run in second.runs]
    assert not {run.id for run in first.runs} & {run.id for run in other.runs}


def test_worker_processes_write_the_same_home_as_one_process(tmp_path, monkeypatch):
    spec = HomeSpec(30, seed=4)
    alone = generate_home(tmp_path / "alone", spec, NOW)
    monkeypatch.setattr(samplehome, "_PARALLEL_MIN_RUNS", 0)
    monkeypatch.setattr(samplehome, "_CHUNK", 7)
    pooled = generate_home(tmp_path / "pooled", spec, NOW)
    assert _tree_digest(alone.root) == _tree_digest(pooled.root)
    assert [run.id for run in alone.runs] == [run.id for run in pooled.runs]


def test_mutate_home_is_deterministic_for_a_seed(tmp_path):
    spec = HomeSpec(20, profile="fidelity", seed=6)
    roots = [generate_home(tmp_path / name, spec, NOW).root for name in ("a", "b")]
    changed = [mutate_home(root, 0.5, 9, NOW) for root in roots]
    assert changed[0] == changed[1]
    assert _tree_digest(roots[0]) == _tree_digest(roots[1])


def test_command_line_writes_a_home(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runq.engine.samplehome", str(tmp_path / "home"), "--runs", "12",
         "--seed", "1", "--profile", "fidelity", "--now", NOW.isoformat()],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 12 runs (6 live, 6 deleted)" in proc.stdout
    assert len(list((tmp_path / "home" / "runs").iterdir())) == 6
    assert len(list((tmp_path / "home" / "trash" / "runs").iterdir())) == 6
