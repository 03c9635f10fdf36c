"""A corpus of malformed runs: no single bad run stops, hangs or changes a
Guild home for runq.

Each kind damages one run (or puts something that is not a run where runs
live). Per kind, in process: a home of healthy runs plus the bad one is
indexed within a time bound, the healthy runs are indexed exactly as without
it, the bad run is reported when it has unreadable files, a second refresh
reads nothing again, `runs list` prints it, and the home is unchanged. Then
the installed `runq` script runs every listing, index and dry-run purge
command on one home holding every kind at once, each under a timeout.
"""

import hashlib
import json
import math
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from runq.commands.app import app
from runq.commands.render import _one_line, started_text
from runq.engine.files import error_text, read_regular
from runq.engine.home import GuildHome
from runq.engine.indexer import Index
from runq.engine.rundir import RACY_WINDOW_NS, disk_path, event_dirs, read_run, unreadable_run
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home
from runq.engine.tfevents import masked_crc32c, write_event_file
from runq.engine.values import storable_text, stored_number

NOW = datetime(2026, 11, 29, 12, 0, 0)
RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
STARTED = 1764400000000000  # 2025-11-29, microseconds
SECONDS_PER_KIND = 30
SECONDS_PER_COMMAND = 120


# ---------------------------------------------------------------------------
# Writing runs


def write_attr(run_dir, name, text):
    path = Path(run_dir, ".guild", "attrs", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape"))
    return path


def write_run(run_dir, **attrs):
    """A small healthy run: opref, times, exit status, flags, label, scalars."""
    guild = Path(run_dir, ".guild")
    guild.mkdir(parents=True)
    (guild / "opref").write_text("guildfile:/p/guild.yml abc '' train\n")
    values = {"id": Path(run_dir).name.encode("utf-8", "surrogateescape").hex(),
              "initialized": STARTED - 10, "started": STARTED, "stopped": STARTED + 5,
              "exit_status": 0, "flags": {"lr": 0.1}, "label": "bad", **attrs}
    for name, value in values.items():
        write_attr(run_dir, name, encode_attr(value))
    write_event_file(guild / "events.out.tfevents.1764400000.host", [("loss", 0.5, 1)], wall_time=1764400000)
    return Path(run_dir)


def sparse_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


def replace_with(path, make):
    """Removes whatever `path` is and makes something else there."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    make(path)


def symlink_to(target):
    return lambda path: os.symlink(target, path)


def attr_bytes(name, data):
    return lambda run: write_attr(run, name, data)


def attr_value(**attrs):
    return lambda run: [write_attr(run, name, encode_attr(value)) for name, value in attrs.items()]


def guild_path(rel, make):
    return lambda run: replace_with(run / ".guild" / rel, make)


def event_file(data):
    return lambda run: Path(run, "events.out.tfevents.1764400001.bad").write_bytes(data)


def nested(run, depth):
    path = Path(run, *["d"] * depth)
    path.mkdir(parents=True)
    write_event_file(path / "events.out.tfevents.1764400002.deep", [("acc", 0.9, 1)], wall_time=1764400002)


def alias_bomb(levels=9, width=9):
    """About 520 bytes of YAML that expand to width**levels strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        refs = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


def valid_event(tag="loss", value=0.25, step=2):
    path = Path("/tmp") / f"runq-malformed-{os.getpid()}.tfevents"
    write_event_file(path, [(tag, value, step)], wall_time=1764400001)
    data = path.read_bytes()
    path.unlink()
    return data


def _corrupt_crc(data):
    data = bytearray(data)
    data[-1] ^= 0xFF
    return bytes(data)


def _huge_length(data):
    length = (2**63 - 1).to_bytes(8, "little")
    return length + masked_crc32c(length).to_bytes(4, "little") + data[12:]


def make_fifo(path):
    os.mkfifo(path)


def make_dir(path):
    path.mkdir()


def make_file(text):
    return lambda path: path.write_text(text)


def self_links(run):
    os.symlink(".", run / "a")
    os.symlink(".", run / "b")
    write_event_file(run / "events.out.tfevents.1764400003.top", [("acc", 0.8, 1)], wall_time=1764400003)


def proto_loop(run):
    os.symlink("..", run / ".guild" / "proto")


def whole_run(make):
    """The run directory itself replaced by something else."""
    return lambda run: replace_with(run, make)


def outside_run(run):
    target = run.parent.parent.parent / "outside" / run.name
    write_run(target)
    shutil.rmtree(run)
    os.symlink(target, run)


def event_dir_mode_000(run):
    path = run / "logs"
    path.mkdir()
    write_event_file(path / "events.out.tfevents.1764400004.x", [("acc", 0.1, 1)], wall_time=1764400004)
    os.chmod(path, 0)


BIG_INT = 2**63
HUGE_INT = 2**70

# name -> (how to damage a healthy run, what the refresh reports about it, or None)
KINDS = {
    # Times and numbers SQLite cannot bind, or Python cannot format
    "started-inf": (attr_bytes("started", ".inf\n"), None),
    "started-minus-inf": (attr_bytes("started", "-.inf\n"), None),
    "started-nan": (attr_bytes("started", ".nan\n"), None),
    "started-1e30": (attr_bytes("started", "1.0e+30\n"), None),
    "started-2**63": (attr_value(started=BIG_INT), None),
    "started-minus-2**70": (attr_value(started=-HUGE_INT), None),
    "started-5000-digits": (attr_bytes("started", "9" * 5000 + "\n"), "attribute started: YAML value cannot be built (ValueError)"),
    "initialized-inf-no-started": (lambda run: (attr_bytes("initialized", ".inf\n")(run),
                                                (run / ".guild/attrs/started").unlink()), None),
    "initialized-2**64-no-started": (lambda run: (attr_value(initialized=2**64)(run),
                                                  (run / ".guild/attrs/started").unlink()), None),
    "stopped-inf": (attr_bytes("stopped", ".inf\n"), None),
    "stopped-2**63": (attr_value(stopped=BIG_INT), None),
    "exit-status-2**63": (attr_value(exit_status=BIG_INT), None),
    "exit-status-inf": (attr_bytes("exit_status", ".inf\n"), None),
    "exit-status-nan": (attr_bytes("exit_status", ".nan\n"), None),
    "comment-time-inf": (attr_bytes("comments", "- body: hi\n  host: h\n  time: .inf\n  user: u\n"), None),
    "comment-time-2**63": (attr_value(comments=[{"body": "hi", "host": "h", "time": BIG_INT, "user": "u"}]), None),
    "flag-2**70": (attr_value(flags={"lr": HUGE_INT, "big": -HUGE_INT}), None),
    "tags-huge-ints": (attr_value(tags=[HUGE_INT, "t"]), None),
    "label-2**70": (attr_value(label=HUGE_INT), None),
    "marked-2**70": (attr_value(marked=HUGE_INT), None),
    # Names that are not UTF-8, or hold line breaks
    "run-name-not-utf8": (lambda run: run.rename(run.with_name("bad-\udcff\udcfe-run")), None),
    "attr-name-not-utf8": (attr_bytes("lab\udce9l", "x\n"), "attribute name lab\\xe9l is not UTF-8"),
    "event-dir-not-utf8": (lambda run: nested(run / "ev\udcff", 0), "event directory ev\\xff: name is not UTF-8"),
    "event-file-name-not-utf8": (lambda run: Path(run, "events.out.tfevents.1.\udcff").write_bytes(valid_event()), "event file events.out.tfevents.1.\\xff: name is not UTF-8"),
    "attr-name-newline": (attr_bytes("two\nlines", "x\n"), None),
    "event-file-name-newline": (lambda run: Path(run, "events.out.tfevents.1\n2").write_bytes(valid_event()), None),
    "event-dir-name-newline": (lambda run: nested(run / "two\nlines", 0), None),
    "label-control-characters": (attr_value(label="line\nbreak \x1b[2J\r\t end"), None),
    "label-lone-surrogate": (attr_bytes("label", '"\\uDCFF bad"\n'), None),
    "flag-name-lone-surrogate": (attr_bytes("flags", '"\\uDCFF": 1\nlr: 0.1\n'), None),
    "comment-lone-surrogate": (attr_bytes("comments", '- body: "\\uDCFF"\n  user: u\n'), None),
    # YAML that explodes, recurses, or names Python objects
    "alias-bomb-label": (attr_bytes("label", alias_bomb()), "aliases expand to more than"),
    "alias-bomb-flags": (attr_bytes("flags", alias_bomb()), "aliases expand to more than"),
    "alias-bomb-lazy-env": (attr_bytes("env", alias_bomb()), None),
    "lazy-env-fifo": (guild_path("attrs/env", make_fifo), None),  # read when a filter names it
    "lazy-env-link-dev-zero": (guild_path("attrs/env", symlink_to("/dev/zero")), None),
    "recursive-alias": (attr_bytes("flags", "a: &x [*x]\n"), "recursive alias"),
    "deep-flow-nesting": (attr_bytes("flags", "[" * 100_000), "attribute flags: YAML value cannot be built (RecursionError)"),
    "deep-block-nesting": (attr_bytes("label", "".join(" " * i + "- \n" for i in range(3000))), "attribute label: YAML value cannot be built (RecursionError)"),
    "nesting-300-deep": (attr_bytes("flags", "a: " + "[" * 300 + "]" * 300 + "\n"), None),
    "python-object-tag": (attr_bytes("label", "!!python/object/apply:os.system ['true']\n"), "could not determine a constructor"),
    "binary-tag": (attr_bytes("label", "!!binary aGVsbG8=\n"), None),
    "set-and-timestamp": (attr_bytes("flags", "s: !!set {a, b}\nd: 2020-01-01\n"), None),
    "flags-non-string-keys": (attr_bytes("flags", "1: a\n[x]: b\nnull: c\nlr: 0.1\n"), "found unhashable key"),
    "flags-hashable-odd-keys": (attr_bytes("flags", "1: a\ntrue: b\n2020-01-01: c\nlr: 0.1\n"), None),
    "flags-not-a-mapping": (attr_bytes("flags", "- 1\n- 2\n"), "attribute flags is not a dict"),
    # Attribute files that are not text, too big, or not files
    "attr-binary": (attr_bytes("label", bytes(range(256))), "attrs/label is not UTF-8"),
    "attr-latin1": (attr_bytes("label", "caf\xe9\n".encode("latin-1")), "attrs/label is not UTF-8"),
    "attr-utf8-bom": (attr_bytes("label", "\ufeffbom\n".encode()), None),
    "attr-huge-sparse": (lambda run: sparse_file(write_attr(run, "label", ""), 2**33), "attrs/label: larger than 67108864 bytes"),
    "attr-fifo": (guild_path("attrs/label", make_fifo), "attrs/label: not a regular file (a FIFO)"),
    "attr-link-dev-zero": (guild_path("attrs/label", symlink_to("/dev/zero")), "attrs/label: not a regular file (a character device)"),
    "attr-link-regular-file": (guild_path("attrs/label", symlink_to("../opref")), None),
    "attr-link-missing": (guild_path("attrs/label", symlink_to("missing")), "attrs/label: No such file"),
    "attr-a-directory": (guild_path("attrs/label", make_dir), "attrs/label: not a regular file (a directory)"),
    "attrs-a-file": (guild_path("attrs", make_file("x\n")), "cannot list .guild/attrs: Not a directory"),
    "attrs-missing": (guild_path("attrs", lambda path: None), None),
    # .guild and opref
    "guild-dir-empty": (guild_path(".", lambda path: path.mkdir()), None),
    "guild-a-file": (guild_path(".", make_file("x")), None),
    "guild-missing": (guild_path(".", lambda path: None), None),
    "opref-empty": (guild_path("opref", make_file("")), "cannot parse .guild/opref"),
    "opref-garbage": (guild_path("opref", make_file("'unterminated\n")), "cannot parse .guild/opref"),
    "opref-binary": (guild_path("opref", lambda path: path.write_bytes(bytes(range(256)))), "opref is not UTF-8"),
    "opref-huge-sparse": (guild_path("opref", lambda path: sparse_file(path, 2**33)), "opref: larger than 65536 bytes"),
    "opref-fifo": (guild_path("opref", make_fifo), "opref: not a regular file (a FIFO)"),
    "opref-link-dev-zero": (guild_path("opref", symlink_to("/dev/zero")), "opref: not a regular file (a character device)"),
    "opref-a-directory": (guild_path("opref", make_dir), "opref: not a regular file (a directory)"),
    "proto-loop": (proto_loop, None),
    "lock-fifo": (lambda run: (write_attr(run, "exit_status", ""), os.mkfifo(run / ".guild" / "LOCK")), None),
    "lock-remote-link-dev-zero": (lambda run: os.symlink("/dev/zero", run / ".guild" / "LOCK.remote"), None),
    # Event files and directories
    "event-truncated": (event_file(valid_event()[:-3]), "cut short"),
    "event-bad-crc": (event_file(_corrupt_crc(valid_event())), "record data crc32c mismatch"),
    "event-huge-length": (event_file(_huge_length(valid_event())), "events.out.tfevents.1764400001.bad: "),
    "event-zero-length": (event_file(b""), None),
    "event-garbage": (event_file(os.urandom(4096)), "events.out.tfevents.1764400001.bad: "),
    "event-file-a-directory": (lambda run: (event_file(valid_event())(run),
                                            (run / "events.out.tfevents.1764400002.dir").mkdir()),
                               "not a regular file (a directory)"),
    "event-fifo": (lambda run: os.mkfifo(run / "events.out.tfevents.1764400001.fifo"), "not a regular file (a FIFO)"),
    "event-link-dev-zero": (lambda run: os.symlink("/dev/zero", run / "events.out.tfevents.1764400001.z"), "not a regular file (a character device)"),
    "event-link-missing": (lambda run: os.symlink("missing", run / "events.out.tfevents.1764400001.m"), "cannot read: No such file"),
    "event-dir-mode-000": (event_dir_mode_000, None),
    "two-links-to-dot": (self_links, None),
    "link-to-root-dir": (lambda run: os.symlink("/", run / "root"), None),
    "deep-directories": (lambda run: nested(run, 300), "more than 200 deep"),
    # Things in the run roots that are not run directories
    "run-a-file": (whole_run(make_file("not a run\n")), None),
    "run-a-fifo": (whole_run(make_fifo), None),
    "run-link-outside-home": (outside_run, None),
    "run-link-missing": (whole_run(symlink_to("/nonexistent/run")), None),
    "run-link-dev-zero": (whole_run(symlink_to("/dev/zero")), None),
    "run-link-to-itself": (lambda run: replace_with(run, lambda path: os.symlink(path.name, path)), None),
}


# Kinds that leave no run directory where the bad run was.
NOT_RUNS = {"guild-a-file", "guild-dir-empty", "guild-missing", "run-a-fifo", "run-a-file",
            "run-link-dev-zero", "run-link-missing", "run-link-to-itself"}


def test_the_corpus_is_large_enough():
    assert len(KINDS) >= 55


# ---------------------------------------------------------------------------
# Homes


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A home of healthy runs (live and deleted) and its index's rows."""
    root = tmp_path_factory.mktemp("healthy") / "home"
    manifest = generate_home(root, HomeSpec(runs=6, seed=3, profile="fidelity", sourcecode_files=1), NOW)
    return root, [run.id for run in manifest.runs], _indexed_rows(root)


def copy_home(source, dest):
    shutil.copytree(source, dest, symlinks=True, ignore=lambda d, names: ["cache"] if d == str(source) else [])


def bad_run_dir(home, kind, deleted=False):
    root = home / ("trash/runs" if deleted else "runs")
    root.mkdir(parents=True, exist_ok=True)
    return root / f"bad{hashlib.sha1(kind.encode()).hexdigest()[:29]}"


def add_bad_run(home, kind, deleted=False):
    run = write_run(bad_run_dir(home, kind, deleted))
    KINDS[kind][0](run)


def tree_hash(root, index_dir):
    """Names, types, modes, sizes, link targets and file contents, never
    following links; all but runq's own index directory."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) != str(index_dir))
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest.update(os.fsencode(os.path.relpath(path, root)) + b"\0")
            digest.update(f"{st.st_mode} {st.st_size}".encode())
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.fsencode(os.readlink(path)))
            elif stat.S_ISREG(st.st_mode) and st.st_blocks:  # sparse files: size only
                digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def invoke(home, *args):
    return CliRunner().invoke(app, ["-H", str(home), "--now", NOW.isoformat(), *args])


class Hung(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` in runq swallows it."""


@contextmanager
def time_limit(seconds):
    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _indexed_rows(home, ids=None):
    """Every stored row of these runs (all runs when None), keyed by run id."""
    index = Index(GuildHome(home))
    try:
        index.refresh()
        conn = index.conn
        rows = {}
        for (run_id,) in conn.execute("SELECT id FROM runs"):
            if ids is not None and run_id not in ids:
                continue
            rows[run_id] = _rows_of(conn, run_id)
        return rows
    finally:
        index.close()


IGNORED_RUN_COLUMNS = {"key", "dir", "listing", "signature"}


def _rows_of(conn, run_id):
    conn.row_factory = sqlite3.Row
    run = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    found = {k: run[k] for k in run.keys() if k not in IGNORED_RUN_COLUMNS}
    for table in ("attrs", "flags", "scalars", "tags", "comments"):
        rows = conn.execute(f"SELECT * FROM {table} WHERE run_key = ?", (run["key"],)).fetchall()
        found[table] = sorted(tuple(row)[1:] for row in rows)
    conn.row_factory = None
    return found


# ---------------------------------------------------------------------------
# One kind at a time, in process


def assert_reported(problems, expected):
    """Only the bad run has problems, the expected one, and it was read, not given up on."""
    if expected is None:
        assert problems == []
        return
    assert len(problems) == 1, problems
    run_id, text = problems[0]
    assert run_id.startswith("bad") and expected in text, problems
    assert "cannot read the run" not in text


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_bad_run_is_indexed_reported_and_left_alone(template, tmp_path, kind):
    healthy_home, healthy_ids, healthy_rows = template
    home = tmp_path / "home"
    copy_home(healthy_home, home)
    add_bad_run(home, kind)
    before = tree_hash(tmp_path, home / "cache")  # the home, and where its links lead
    index = Index(GuildHome(home))
    time.sleep(RACY_WINDOW_NS / 1e9)  # files written just before a read are rightly read again
    try:
        with time_limit(SECONDS_PER_KIND):
            first = index.refresh()
            second = index.refresh()
            indexed = sum(index.counts())
            listings = [invoke(home, "runs", "list", "-a", *flags) for flags in ((), ("--deleted",))]
        assert_reported(first.problems, KINDS[kind][1])
        assert (second.added, second.updated, second.problems) == (0, 0, [])
        assert indexed == len(healthy_ids) + (kind not in NOT_RUNS)
    finally:
        index.close()
    for listing in listings:
        assert listing.exit_code == 0, listing.output
    for run_id in healthy_ids:
        assert any(f":{run_id[:8]}]" in listing.stdout for listing in listings)
    assert _indexed_rows(home, set(healthy_ids)) == healthy_rows
    with time_limit(SECONDS_PER_KIND):  # after the rows: it decodes the healthy runs' env too
        filtered = invoke(home, "runs", "list", "-a", "-F", "env contains lol or label contains lol")
    assert filtered.exit_code == 0, filtered.output
    assert tree_hash(tmp_path, home / "cache") == before


# ---------------------------------------------------------------------------
# Every kind at once, through the installed script


COMMANDS = (
    ("runs", "list", "-a"),
    ("runs", "list", "-a", "--json"),
    ("runs", "list", "--deleted", "-a"),
    ("runs", "list", "--deleted", "-a", "--json"),
    ("index",),
    ("index", "--rebuild"),
    ("runs", "purge", "--dry-run"),
    ("-v", "runs", "list", "-a", "-F", "label contains lol or flag:lr > 1 or env contains lol"),
)


def run_script(home, *args, wrapper=()):
    env = {**os.environ, "GUILD_HOME": str(home), "HOME": str(home.parent), "LC_ALL": "C.UTF-8"}
    return subprocess.run([*wrapper, str(RUNQ_SCRIPT), "--now", NOW.isoformat(), *args], capture_output=True,
                          env=env, timeout=SECONDS_PER_COMMAND)


def healthy_listing(result, healthy_ids):
    runs = json.loads(result.stdout, parse_constant=_refuse)  # strict JSON: no Infinity, no NaN
    return [{k: v for k, v in run.items() if k not in ("index", "run_dir")}
            for run in runs if run["id"] in healthy_ids]


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


def test_every_kind_at_once_through_the_script(template, tmp_path):
    healthy_home, healthy_ids, _ = template
    home = tmp_path / "home"
    copy_home(healthy_home, home)
    expected = {args: run_script(home, *args) for args in COMMANDS if "--json" in args}
    for position, kind in enumerate(sorted(KINDS)):
        add_bad_run(home, kind, deleted=bool(position % 2))
    before = tree_hash(tmp_path, home / "cache")
    for args in COMMANDS:
        result = run_script(home, *args)
        assert result.returncode == 0, (args, result.stderr.decode(errors="replace"))
        assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
        if args in expected:
            assert healthy_listing(result, set(healthy_ids)) == healthy_listing(expected[args], set(healthy_ids))
    assert tree_hash(tmp_path, home / "cache") == before


# ---------------------------------------------------------------------------
# The pieces


def test_only_regular_files_are_read_and_only_up_to_their_limit(tmp_path):
    regular = tmp_path / "regular"
    regular.write_bytes(b"12345")
    os.symlink(regular, tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    cases = {
        regular: b"12345",
        tmp_path / "link": b"12345",  # Guild follows links to files, and so does runq
        tmp_path / "fifo": "not a regular file (a FIFO)",
        tmp_path: "not a regular file (a directory)",
        Path("/dev/zero"): "not a regular file (a character device)",
        tmp_path / "missing": "No such file",
    }
    with time_limit(10):
        for path, expected in cases.items():
            try:
                assert read_regular(path, 5) == expected
            except OSError as e:
                assert expected in error_text(e)
    with pytest.raises(OSError, match="larger than 4 bytes"):
        read_regular(regular, 4)


@pytest.mark.parametrize(
    "value, stored",
    [
        (2**63 - 1, 2**63 - 1),
        (2**63, float(2**63)),
        (-(2**70), -float(2**70)),
        (10**400, math.inf),
        (-(10**400), -math.inf),
        (math.inf, math.inf),
        (math.nan, None),
        (True, 1),
    ],
)
def test_numbers_are_stored_as_sqlite_can_bind_them_in_the_same_order(value, stored):
    assert stored_number(value) == stored
    sqlite3.connect(":memory:").execute("SELECT ?", (stored_number(value),))


@pytest.mark.parametrize(
    "text, stored",
    [
        ("plain", "plain"),
        ("café 日本", "café 日本"),
        ("bad-\udcff\udcfe-run", "bad-\\xff\\xfe-run"),  # bytes of a file name that are not UTF-8
        ("\ud800 lone", "\\ud800 lone"),  # what a YAML \u escape can make
    ],
)
def test_text_is_stored_as_utf8_with_lone_surrogates_escaped(text, stored):
    assert storable_text(text) == stored
    assert disk_path(stored) == text or "\\x" not in stored


def test_table_cells_stay_on_one_line_and_times_out_of_range_show_empty():
    assert _one_line("two\nlines\x1b[2J") == "two\\nlines\\x1b[2J"
    assert _one_line("résumé — ok") == "résumé — ok"
    for timestamp in (math.inf, -math.inf, 1e30, float(2**63)):
        assert started_text(timestamp) == ""


def test_links_back_into_a_run_are_walked_once(tmp_path):
    run = write_run(tmp_path / "run")
    self_links(run)
    with time_limit(10):
        found = [prefix for prefix, _ in event_dirs(str(run))]
    assert found == ["", ".guild"]


def test_a_run_whose_name_is_not_utf8_can_be_deleted_restored_and_purged(template, tmp_path):
    home = tmp_path / "home"
    copy_home(template[0], home)
    add_bad_run(home, "run-name-not-utf8")
    name = "bad-\udcff\udcfe-run"
    listed = invoke(home, "runs", "list", "--json")
    assert "bad-\\\\xff\\\\xfe-run" in listed.stdout  # JSON of the escaped id
    for args, where in (
        (("runs", "delete", "-y", "bad-"), "trash/runs"),
        (("runs", "restore", "-y", "bad-"), "runs"),
        (("runs", "delete", "-y", "bad-"), "trash/runs"),
    ):
        result = invoke(home, *args)
        assert result.exit_code == 0, result.output
        assert (home / where / name).is_dir()
    result = invoke(home, "runs", "purge", "-y", "bad-")
    assert result.exit_code == 0, result.output
    assert not os.path.lexists(home / "trash" / "runs" / name)
    assert invoke(home, "runs", "list", "-a", "--deleted").stdout.count("bad-") == 0


def test_a_run_that_cannot_be_read_at_all_is_stored_with_a_storable_problem(tmp_path):
    record = unreadable_run(str(tmp_path), "bad", 0, 0, ValueError("cannot use bad-\udcff"))
    assert "bad-\\xff" in record.run["problems"]
    sqlite3.connect(":memory:").execute("SELECT ?", (record.run["problems"],))


def test_many_runs_with_the_same_time_or_none_are_all_indexed(tmp_path):
    home = tmp_path / "home"
    for number in range(130):  # several chunks of runs read together
        run = write_run(home / "runs" / f"same{number:028d}")
        if number % 2:
            for name in ("started", "initialized"):
                (run / ".guild" / "attrs" / name).unlink()
    index = Index(GuildHome(home))
    try:
        report = index.refresh(workers=1)
        assert (report.added, report.problems, index.counts()) == (130, [], (130, 0))
    finally:
        index.close()


# ---------------------------------------------------------------------------
# Files runq may not read: root without the capabilities that bypass modes

WITHOUT_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def mode_000(rel):
    return lambda run: os.chmod(run / rel, 0)


# name -> (what is made unreadable, what the refresh reports, or None when it is no run)
UNREADABLE = {
    "attr-mode-000": (mode_000(".guild/attrs/label"), "cannot read .guild/attrs/label: Permission denied"),
    "attrs-dir-mode-000": (mode_000(".guild/attrs"), "cannot list .guild/attrs: Permission denied"),
    "opref-mode-000": (mode_000(".guild/opref"), "cannot read .guild/opref: Permission denied"),
    "event-dir-mode-000": (event_dir_mode_000, "cannot list logs: Permission denied"),
    "event-file-mode-000": (mode_000(".guild/events.out.tfevents.1764400000.host"), "Permission denied"),
    "guild-dir-mode-000": (mode_000(".guild"), None),  # Guild cannot tell it is a run either
    "run-dir-mode-000": (mode_000("."), None),
}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_files_runq_may_not_read_are_reported_not_fatal(template, tmp_path):
    healthy_home, healthy_ids, _ = template
    home = tmp_path / "home"
    copy_home(healthy_home, home)
    bad = {}
    for kind, (make_unreadable, _) in UNREADABLE.items():
        run = write_run(bad_run_dir(home, kind))
        bad[run.name[:8]] = kind
        make_unreadable(run)
    before = tree_hash(tmp_path, home / "cache")
    results = [run_script(home, *args, wrapper=WITHOUT_DAC) for args in
               (("-v", "index", "--rebuild"), ("runs", "list", "-a"), ("runs", "list", "--deleted", "-a"))]
    for result in results:
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    problems = dict(line.strip().split(": ", 1) for line in results[0].stderr.decode().splitlines()[1:])
    for short, kind in bad.items():
        expected = UNREADABLE[kind][1]
        assert expected in problems.get(short, "") if expected else short not in problems, (kind, problems)
    assert all(len(set(text.split("; "))) == len(text.split("; ")) for text in problems.values())  # once each
    listed = (results[1].stdout + results[2].stdout).decode()
    assert all(f":{run_id[:8]}]" in listed for run_id in healthy_ids)
    assert all((f":{short}]" in listed) == bool(UNREADABLE[kind][1]) for short, kind in bad.items())
    assert tree_hash(tmp_path, home / "cache") == before


# ---------------------------------------------------------------------------
# Any bytes in any file a run read: stored, never raised

FUZZED_FILES = {
    "label": ".guild/attrs/label",
    "flags": ".guild/attrs/flags",
    "started": ".guild/attrs/started",
    "exit_status": ".guild/attrs/exit_status",
    "comments": ".guild/attrs/comments",
    "tags": ".guild/attrs/tags",
    "opref": ".guild/opref",
    "events": ".guild/events.out.tfevents.1764400000.host",
}
YAML_ALPHABET = "[]{}&*!|>?:-,# \n\t'\"\\abcxyz019.eE+_~\udcff\u2028\x00"
FUZZ_EXAMPLES = int(os.environ.get("RUNQ_HYPOTHESIS_EXAMPLES", "300"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    file=st.sampled_from(sorted(FUZZED_FILES)),
    data=st.binary(max_size=200)
    | st.text(alphabet=YAML_ALPHABET, max_size=120).map(lambda text: text.encode("utf-8", "surrogatepass")),
)
def test_any_bytes_in_a_run_file_are_read_and_stored(tmp_path_factory, file, data):
    home = tmp_path_factory.mktemp("fuzz")
    run = write_run(home / "runs" / "fuzzed")
    Path(run, FUZZED_FILES[file]).write_bytes(data)
    record = read_run(str(run), "fuzzed", 0, 0)
    index = Index(GuildHome(home))
    try:
        index.write_records([record])
        assert index.counts() == (1, 0)
    finally:
        index.close()
