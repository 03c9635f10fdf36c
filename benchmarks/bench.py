"""runq against Guild 0.9.0, side by side on the same generated Guild home.

    .venv/bin/python benchmarks/bench.py --runs 10000 [--repeat 3] [--only list,purge]

Every command is timed as a whole process (start to exit, wall clock, with
its stdout and stderr going to files, never a terminal); its peak memory and
CPU time are the kernel's accounting for that process and the children it
waited for, as GNU time reports them. Groups:

  parse  in-process: parsing, compiling and rendering long filter expressions
  startup  `runs list` on a small home of its own (300 runs), many repeats:
         runq's time as a share of Guild's, where starting is most of it
  list   `runs list --deleted -a SEL` (and one RUN range through `runs purge`
         answered 'n'): Guild, runq with its default refresh, runq --no-refresh
  purge  the same runs purged by Guild, runq and `rm -rf` (the floor), each on
         its own fresh copy of the home
  index  runq's index: rebuilt, refreshed with nothing changed, refreshed
         after 1% of the runs changed
  build  a user's first command on the home: runq's first index against
         Guild's `runs list -a` and `runs list --deleted -a`, and against
         reading every file of every run once in one process (the floor)

Homes are generated into a fresh directory (a temporary one unless --work)
and removed afterwards unless --keep. Results go to a table on stdout and
to JSON (benchmarks/results/<date>-<runs>.json unless --json).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from guildenv import guild_script  # noqa: E402

from runq.engine.compiler import compile_selection  # noqa: E402
from runq.engine.samplehome import mutate_home  # noqa: E402
from runq.engine.selection import build_selection  # noqa: E402

GROUPS = ("parse", "startup", "list", "purge", "index", "build")
ABORTED = 4  # exit code of Guild and runq when a prompt is answered no
DEFAULT_TIMEOUT = 1800.0
SETTLE_DIRTY_KB = 16 * 1024  # writeback left after `sync` that we wait out


class BenchError(Exception):
    """A step the benchmark cannot go on without failed."""


# ---------------------------------------------------------------------------
# One process, measured
# ---------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    max_rss_kb: int  # the largest single process in the tree, not a sum
    cpu_seconds: float  # user + system, the process and its waited-for children
    disk_busy: float  # share of the wall time the disks were busy (anyone's I/O, not only this process's)
    returncode: int
    timed_out: bool
    stdout_sha: str
    stdout_lines: int
    stderr_sha: str
    stderr_lines: int
    stderr_tail: str

    def failed(self, expect_rc):
        return self.timed_out or self.returncode != expect_rc


def run_process(argv, *, env, timeout, cwd=None, stdin=b""):
    """Runs argv once; a Sample of its wall time, peak RSS and output."""
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as usage_file:
        inp.write(stdin)
        inp.seek(0)
        timer_fired = threading.Event()
        busy_before = disk_busy_ms()
        started = time.perf_counter()
        proc = subprocess.Popen(
            _with_time(argv, usage_file.name), stdin=inp, stdout=out, stderr=err, env=env, cwd=cwd,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid, timer_fired))
        timer.start()
        try:
            status, usage = _wait(proc)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        busy = (disk_busy_ms() - busy_before) / 1000 / seconds
        max_rss_kb, cpu_seconds = _usage(usage_file, usage)
        return Sample(
            seconds=seconds,
            max_rss_kb=max_rss_kb,
            cpu_seconds=cpu_seconds,
            disk_busy=busy,
            returncode=os.waitstatus_to_exitcode(status),
            timed_out=timer_fired.is_set(),
            **_digest(out, "stdout"),
            **_digest(err, "stderr"),
            stderr_tail=_tail(err),
        )


# A process forked from this one starts with this process's resident pages
# counted in its peak RSS (the kernel carries the old memory's high-water
# mark over exec), so the peak of a command is read by GNU time, which is
# small, from its own child. Without it, peaks include this process's RSS.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
TIME_FORMAT = "runq-bench %M %U %S"


def _with_time(argv, usage_path):
    return [GNU_TIME, "-o", usage_path, "-f", TIME_FORMAT, *argv] if GNU_TIME else list(argv)


def _usage(usage_file, usage):
    """(peak RSS in KB, user + system seconds) of the command."""
    lines = [line.split() for line in usage_file.read().splitlines() if line.startswith("runq-bench ")]
    if GNU_TIME and lines:
        _, rss, user, system = lines[-1]
        return int(rss), float(user) + float(system)
    return usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def _wait(proc):
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # Ctrl-C: do not leave the process group behind
        _kill_group(proc.pid, None)
        os.wait4(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    return status, usage


def disk_busy_ms():
    """Milliseconds the whole disks (not loop or RAM devices) have spent busy, summed."""
    try:
        disks = {name for name in os.listdir("/sys/block") if not name.startswith(("loop", "ram", "zram"))}
        with open("/proc/diskstats") as f:
            rows = [line.split() for line in f]
    except OSError:
        return 0
    return sum(int(row[12]) for row in rows if len(row) > 12 and row[2] in disks)


def _kill_group(pid, fired):
    if fired is not None:
        fired.set()
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _digest(stream, name):
    stream.seek(0)
    sha, count = hashlib.sha256(), 0
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        sha.update(chunk)
        count += chunk.count(b"\n")
    return {f"{name}_sha": sha.hexdigest(), f"{name}_lines": count}


def _tail(stream, size=600):
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - size))
    return stream.read().decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass
class Row:
    """Repeated samples of one command (or in-process step)."""

    group: str
    case: str
    tool: str
    command: str  # exactly what was timed
    expect_rc: int = 0
    samples: list = field(default_factory=list)
    note: str = ""

    @property
    def good(self):
        return [s for s in self.samples if not s.failed(self.expect_rc)]

    @property
    def error(self):
        bad = next((s for s in self.samples if s.failed(self.expect_rc)), None)
        if bad is None:
            return None
        if bad.timed_out:
            return f"timed out after {bad.seconds:.0f} s"
        return f"exit {bad.returncode} (expected {self.expect_rc}): {bad.stderr_tail.strip()[-300:]}"

    def median(self, attr="seconds"):
        values = [getattr(s, attr) for s in self.good]
        return statistics.median(values) if values and not self.error else None

    def summary(self):
        return {
            "group": self.group,
            "case": self.case,
            "tool": self.tool,
            "command": self.command,
            "note": self.note,
            "error": self.error,
            "median_seconds": self.median(),
            "min_seconds": min((s.seconds for s in self.good), default=None),
            "max_seconds": max((s.seconds for s in self.good), default=None),
            "median_peak_rss_mb": _mb(self.median("max_rss_kb")),
            "median_cpu_seconds": self.median("cpu_seconds"),
            "samples": [asdict(s) for s in self.samples],
        }


def _mb(kb):
    return None if kb is None else kb / 1024


@dataclass
class Bench:
    """Where things are and how to run them; collects rows as groups run."""

    args: argparse.Namespace
    work: Path
    guild: Path
    runq: Path
    rows: list = field(default_factory=list)
    loads: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)

    @property
    def home(self):
        return self.work / "home"

    @property
    def env(self):
        # A HOME of our own: neither tool can touch the user's ~/.guild.
        return {**os.environ, "HOME": str(self.work / "user-home"), "GUILD_HOME": str(self.home)}

    def env_for(self, home):
        return {**self.env, "GUILD_HOME": str(home)}

    def guild_argv(self, home, *words):
        return [str(self.guild), "-H", str(home), *words]

    def runq_argv(self, home, *words, refresh=True):
        return [str(self.runq), "-H", str(home), *(() if refresh else ("--no-refresh",)), *words]

    def run(self, argv, home=None, **kw):
        home = home or self.home
        return run_process(argv, env=self.env_for(home), timeout=self.args.timeout, **kw)

    def must(self, argv, home=None, expect_rc=0, what=None, **kw):
        """Runs an untimed step the benchmark depends on; BenchError if it fails."""
        sample = self.run(argv, home, **kw)
        if sample.failed(expect_rc):
            problem = "timed out" if sample.timed_out else f"exit {sample.returncode}"
            raise BenchError(f"{what or shown(argv, self.work)}: {problem}\n{sample.stderr_tail.strip()}")
        return sample

    def add(self, row):
        self.rows.append(row)
        return row

    def note_load(self, label):
        """Load average and runq's commit as a group starts (runq may change under a long run)."""
        self.loads[label] = {"loadavg": os.getloadavg(), "uptime": _uptime(), "runq_commit": runq_version()}


def shown(argv, work):
    """A command as text, with the work directory written as $WORK."""
    text = " ".join(_quoted(str(a)) for a in argv)
    return text.replace(str(work), "$WORK")


def _quoted(word):
    return word if word and all(c.isalnum() or c in "-_./:=$@%+," for c in word) else repr(word)


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------
# Homes
# ---------------------------------------------------------------------------


def generate_home(bench, home=None, runs=None, facts=True):
    """Generates the benchmark's home (or `home` of `runs` runs); with `facts`,
    records its size in the results."""
    home, runs = home or bench.home, runs or bench.args.runs
    argv = [sys.executable, "-m", "runq.engine.samplehome", str(home), "--runs", str(runs),
            "--profile", "realistic", "--seed", str(bench.args.seed)]
    print(f"Generating {runs:,} runs into {home} ...", flush=True)
    began = time.perf_counter()
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=bench.args.timeout)
    if result.returncode != 0:
        raise BenchError(f"generating the home failed:\n{result.stderr.strip()[-2000:]}")
    if not facts:
        return
    bench.facts["generate_seconds"] = time.perf_counter() - began
    bench.facts["live_runs"] = len(os.listdir(bench.home / "runs"))
    bench.facts["deleted_runs"] = len(os.listdir(trash(bench.home)))
    bench.facts["home_bytes"] = _du_bytes(bench.home, "--apparent-size")
    bench.facts["home_disk_bytes"] = _du_bytes(bench.home)
    bench.facts["home_files"] = sum(len(dirs) + len(files) for _, dirs, files in os.walk(bench.home))
    print(f"  {result.stdout.strip()}", flush=True)


def trash(home):
    return home / "trash" / "runs"


def _du_bytes(path, *options):
    result = subprocess.run(["du", "-s", "-B1", *options, str(path)], capture_output=True, text=True)
    return int(result.stdout.split()[0]) if result.returncode == 0 else None


def copy_home(bench, name):
    dest = bench.work / name
    remove_tree(dest)
    subprocess.run(["cp", "-a", str(bench.home), str(dest)], check=True, timeout=bench.args.timeout)
    return dest


def remove_tree(path):
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def settle(timeout=30.0):
    """`sync`, then wait until the kernel's dirty and writeback pages are
    small, so one measurement does not pay for the last one's writes."""
    subprocess.run(["sync"], check=False)
    deadline = time.monotonic() + timeout
    while _dirty_kb() > SETTLE_DIRTY_KB and time.monotonic() < deadline:
        time.sleep(0.2)


def _dirty_kb():
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
    except OSError:
        return 0
    return sum(int(fields.get(k, "0 kB").split()[0]) for k in ("Dirty", "Writeback"))


# ---------------------------------------------------------------------------
# Profiles (--profile DIR): one extra, untimed run of a runq command
# ---------------------------------------------------------------------------


LONG_PATH = re.compile(r"\S*/(?:site-packages|lib/python3\.\d+)/")


def _short_paths(text):
    """Profile text with paths relative to site-packages, the stdlib or the repo."""
    return LONG_PATH.sub("", text.replace(f"{REPO}/", ""))


def profile_runq(bench, name, argv, home=None, stdin=b""):
    """Runs a runq argv under cProfile; writes NAME.prof and NAME.txt (top functions)."""
    if not bench.args.profile:
        return
    out = Path(bench.args.profile) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    python = Path(bench.runq).parent / "python"
    profiled = [str(python), "-m", "cProfile", "-o", f"{out}.prof", *argv]
    sample = bench.run(profiled, home, stdin=stdin)
    if not Path(f"{out}.prof").exists():
        print(f"  profile {name}: no profile written (exit {sample.returncode})", flush=True)
        return
    with open(f"{out}.txt", "w") as report:
        report.write(f"{shown(argv, bench.work)}\nwall {sample.seconds:.3f} s under cProfile\n\n")
        text = io.StringIO()
        stats = pstats.Stats(f"{out}.prof", stream=text)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
        report.write(_short_paths(text.getvalue()))


# ---------------------------------------------------------------------------
# parse: long filter expressions, in process
# ---------------------------------------------------------------------------

TERM_KINDS = (
    "lr > {f}",
    "batch-size = {i}",
    "loss < 0.{i}",
    "optimizer = adam",
    "label contains x{i}",
    "status in [completed, error]",
    "epochs is undefined",
    "acc >= 0.{i}",
    "flag:dropout != 0.{i}",
    "operation not in [a{i}, b]",
)


def filter_terms(count):
    return [TERM_KINDS[i % len(TERM_KINDS)].format(i=i, f=i / 1000) for i in range(count)]


def chain_expression(count):
    """`t1 and t2 and ... tN`: how people write long filters (nests N deep)."""
    return " and ".join(filter_terms(count))


def balanced_expression(count):
    """The same terms in a parenthesised balanced tree (nests log2 N deep)."""

    def build(terms, depth):
        if len(terms) == 1:
            return terms[0]
        mid = len(terms) // 2
        op = "and" if depth % 2 else "or"
        return f"({build(terms[:mid], depth + 1)}) {op} ({build(terms[mid:], depth + 1)})"

    return build(filter_terms(count), 0)


PARSE_CASES = (
    ("chain", 100, chain_expression),
    ("chain", 1000, chain_expression),
    ("balanced", 1000, balanced_expression),
    ("chain", 10000, chain_expression),
)
PARSE_STEPS = ("parse", "compile", "render SQL")


def bench_parse(bench):
    now = datetime.datetime.now()
    iterations = max(3, bench.args.repeat)
    for shape, count, make in PARSE_CASES:
        text = make(count)
        rows = {step: Row("parse", f"{shape} of {count} terms", step, _parse_step_text(step)) for step in PARSE_STEPS}
        for _ in range(iterations):
            for step, seconds, error in _parse_once(text, now):
                rows[step].samples.append(_inprocess_sample(seconds, error))
        for row in rows.values():
            row.note = f"{len(text):,} characters"
            bench.add(row)
        print(f"  parse {shape} {count}: " + ", ".join(_ms_text(r) for r in rows.values()), flush=True)


def _parse_step_text(step):
    return {
        "parse": "engine.selection.build_selection(deleted=True, filter_expr=TEXT, now=now)",
        "compile": "engine.compiler.compile_selection(selection, now)",
        "render SQL": "compiled.sql() (what the executor hands to sqlite3)",
    }[step]


def _parse_once(text, now):
    """[(step, seconds, error)] for parse, compile and render, stopping at the first error."""
    steps = (
        ("parse", lambda _: build_selection(deleted=True, filter_expr=text, now=now)),
        ("compile", lambda selection: compile_selection(selection, now)),
        ("render SQL", lambda compiled: compiled.sql()),
    )
    results, value = [], None
    for step, fn in steps:
        began = time.perf_counter()
        try:
            value = fn(value)
        except Exception as e:  # a failure is a result here, reported as such
            results.append((step, time.perf_counter() - began, f"{type(e).__name__}: {str(e)[:120]}"))
            return results
        results.append((step, time.perf_counter() - began, None))
    return results


def _inprocess_sample(seconds, error):
    return Sample(seconds, 0, seconds, 0.0, 1 if error else 0, False, "", 0, "", 0, error or "")


def _ms_text(row):
    return f"{row.tool} {row.median() * 1000:.1f} ms" if row.median() is not None else f"{row.tool} FAILED"


# ---------------------------------------------------------------------------
# list: the same selection through Guild and runq
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ListCase:
    name: str
    words: tuple  # command and its options, after the root options
    stdin: bytes = b""
    expect_rc: int = 0
    compare: str = "stdout"  # the stream Guild and runq should print the same ("" for none)


def list_cases(deleted_runs):
    listing = ("runs", "list", "--deleted", "-a")
    last = min(1000, max(1, deleted_runs // 2))
    return (
        ListCase("startup (runs list --help)", ("runs", "list", "--help"), compare=""),
        ListCase("no filter", listing),
        ListCase("-F flags", (*listing, "-F", "lr > 0.001 and batch-size = 32")),
        ListCase("-F scalar", (*listing, "-F", "loss < 0.5")),
        ListCase("-Sc", (*listing, "-Sc")),
        ListCase("-Set", (*listing, "-Set")),
        ListCase("--started 'last 30 days'", (*listing, "--started", "last 30 days")),
        ListCase("-Fo train", (*listing, "-Fo", "train")),
        ListCase(
            f"RUN 1:{last} (purge, answer n)",
            ("runs", "purge", f"1:{last}"),
            stdin=b"n\n",
            expect_rc=ABORTED,
            compare="stderr",
        ),
    )


LIST_TOOLS = ("guild", "runq", "runq --no-refresh")


def bench_list(bench):
    home = bench.home
    for case in list_cases(bench.facts["deleted_runs"]):
        argvs = {
            "guild": bench.guild_argv(home, *case.words),
            "runq": bench.runq_argv(home, *case.words),
            "runq --no-refresh": bench.runq_argv(home, *case.words, refresh=False),
        }
        rows = {tool: Row("list", case.name, tool, shown(argv, bench.work), case.expect_rc) for tool, argv in argvs.items()}
        for tool in ("guild", "runq"):  # warm: Guild's caches, runq's index built and fresh
            bench.run(argvs[tool], stdin=case.stdin)
        for _ in range(bench.args.repeat):
            for tool in LIST_TOOLS:
                rows[tool].samples.append(bench.run(argvs[tool], stdin=case.stdin))
        for tool in LIST_TOOLS:
            rows[tool].note = _agreement(rows, tool, case.compare)
            bench.add(rows[tool])
        profile_runq(bench, f"list-{_slug(case.name)}", argvs["runq"], stdin=case.stdin)
        profile_runq(bench, f"list-{_slug(case.name)}-no-refresh", argvs["runq --no-refresh"], stdin=case.stdin)
        print(f"  list {case.name}: " + ", ".join(_seconds_text(rows[t]) for t in LIST_TOOLS), flush=True)


def _agreement(rows, tool, compare):
    """How many lines this tool printed, and whether Guild printed the same."""
    stream = compare or "stdout"
    mine, guilds = rows[tool].samples[-1:], rows["guild"].samples[-1:]
    if not mine:
        return ""
    lines = f"{getattr(mine[0], stream + '_lines')} lines on {stream}"
    if not compare or tool == "guild" or not guilds:
        return lines
    same = getattr(mine[0], stream + "_sha") == getattr(guilds[0], stream + "_sha")
    return f"{lines}; {'same as' if same else 'DIFFERS from'} Guild's"


def _slug(text):
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()[:40]


def _seconds_text(row):
    return f"{row.tool} {row.median():.3f} s" if row.median() is not None else f"{row.tool} FAILED"


# ---------------------------------------------------------------------------
# startup: `runs list` on a small home, where starting is most of the time
# ---------------------------------------------------------------------------

STARTUP_CASES = (
    ListCase("runs list", ("runs", "list")),
    ListCase("runs list --help", ("runs", "list", "--help"), compare=""),
)


def bench_startup(bench):
    """Guild and runq listing a home of --startup-runs runs (its own, half of
    them deleted), each command repeated at least STARTUP_REPEATS times,
    interleaved; runq's median as a share of Guild's."""
    home = bench.work / "startup-home"
    generate_home(bench, home, bench.args.startup_runs, facts=False)
    repeat = max(bench.args.repeat, STARTUP_REPEATS)
    for case in STARTUP_CASES:
        argvs = {
            "guild": bench.guild_argv(home, *case.words),
            "runq": bench.runq_argv(home, *case.words),
            "runq --no-refresh": bench.runq_argv(home, *case.words, refresh=False),
        }
        rows = {tool: Row("startup", case.name, tool, shown(argv, bench.work)) for tool, argv in argvs.items()}
        for argv in argvs.values():  # warm: Guild's caches, runq's index and its compiled selection
            bench.run(argv, home)
        for _ in range(repeat):
            for tool in LIST_TOOLS:
                rows[tool].samples.append(bench.run(argvs[tool], home))
        for tool in LIST_TOOLS:
            rows[tool].note = _agreement(rows, tool, case.compare)
            bench.add(rows[tool])
        profile_runq(bench, f"startup-{_slug(case.name)}", argvs["runq"], home=home)
        print(f"  startup {case.name}: " + ", ".join(_seconds_text(rows[t]) for t in LIST_TOOLS), flush=True)


STARTUP_REPEATS = 20


# ---------------------------------------------------------------------------
# purge: the same runs removed by Guild, runq and rm -rf
# ---------------------------------------------------------------------------

# About half of the deleted runs in a realistic home (lr >= 0.001 is
# 0.1, 0.05, 0.01, 0.005, 0.001; runs whose operation has no lr flag are
# not selected). The exact count is measured and reported.
PURGE_FILTER = "lr >= 0.001"
PURGE_TOOLS = ("guild", "runq", "runq --background", "rm -rf")
PURGE_OPTIONS = {"runq": (), "runq --background": ("--background",)}


def bench_purge(bench):
    expected = purge_selection(bench)
    bench.facts["purge_filter"] = PURGE_FILTER
    bench.facts["purge_selected"] = len(expected)
    print(f"  purge selects {len(expected):,} of {bench.facts['deleted_runs']:,} deleted runs ({PURGE_FILTER!r})", flush=True)
    rows = {tool: Row("purge", f"-F '{PURGE_FILTER}'", tool, "") for tool in PURGE_TOOLS}
    for i in range(bench.args.repeat):
        shift = i % len(PURGE_TOOLS)
        for tool in PURGE_TOOLS[shift:] + PURGE_TOOLS[:shift]:  # no tool always goes first
            rows[tool].samples.append(purge_once(bench, tool, expected, rows[tool]))
            print(f"    {tool}: {rows[tool].samples[-1].seconds:.3f} s", flush=True)
    unlinked = bench.facts.get("background_unlink_seconds")
    if unlinked:
        rows["runq --background"].note += f"; unlinking finished {statistics.median(unlinked):.1f} s after it returned"
    for row in rows.values():
        bench.add(row)
    if bench.args.profile:
        purge_once(bench, "runq", expected, Row("purge", "profile", "runq", ""), profile=True)


def purge_selection(bench):
    """The ids runq selects for PURGE_FILTER (checked against Guild's
    selection after every purge)."""
    argv = bench.runq_argv(bench.home, "runs", "list", "--deleted", "-a", "--json", "-F", PURGE_FILTER)
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(argv, env=bench.env, stdout=out, stderr=subprocess.PIPE, timeout=bench.args.timeout)
        if result.returncode != 0:
            raise BenchError(f"runq could not list the runs to purge: {result.stderr.decode()[-1000:]}")
        out.seek(0)
        return {run["id"] for run in json.load(out)}


PURGE_WARMUP = {
    # Each copy was just written by cp -a, so its files are in the page
    # cache; each tool then reads it once the way it will when timed.
    "guild": lambda b, home: b.guild_argv(home, "runs", "list", "--deleted", "-a", "-F", PURGE_FILTER),
    "runq": lambda b, home: b.runq_argv(home, "index"),  # builds the index the timed purge refreshes
    "runq --background": lambda b, home: b.runq_argv(home, "index"),
    "rm -rf": lambda b, home: ["du", "-s", str(trash(home))],
}


def purge_once(bench, tool, expected, row, profile=False):
    """One timed purge on a fresh copy of the home (None when only profiling)."""
    home = copy_home(bench, f"purge-{_slug(tool)}")
    try:
        settle()
        bench.must(PURGE_WARMUP[tool](bench, home), home, what=f"warm-up for {tool}")
        settle()
        argv, cwd, stdin = _purge_command(bench, tool, home, expected)
        row.command = _purge_command_text(argv, tool, len(expected), bench.work)
        if profile:
            profile_runq(bench, "purge", argv, home)
            return None
        sample = bench.run(argv, home, cwd=cwd, stdin=stdin)
        row.note = _check_purged(home, expected, bench.facts["deleted_runs"])
        if row.note.startswith("WRONG"):
            sample.returncode = -1000  # a purge that removed the wrong runs is a failure
            sample.stderr_tail = row.note
        if tool == "runq --background" and not sample.failed(0):
            bench.facts.setdefault("background_unlink_seconds", []).append(_wait_for_unlinking(home, bench.args.timeout))
        return sample
    finally:
        remove_tree(home)
        settle()


def _purge_command(bench, tool, home, expected):
    """(argv, cwd, stdin) of the timed purge."""
    if tool == "guild":
        return bench.guild_argv(home, "runs", "purge", "-y", "-F", PURGE_FILTER), None, b""
    if tool in PURGE_OPTIONS:
        return bench.runq_argv(home, "runs", "purge", "-y", *PURGE_OPTIONS[tool], "-F", PURGE_FILTER), None, b""
    names = sorted(expected)
    if sum(len(n) + 1 for n in names) < os.sysconf("SC_ARG_MAX") // 2:
        return ["rm", "-rf", "--", *names], trash(home), b""
    return ["xargs", "-0", "rm", "-rf", "--"], trash(home), "\0".join(names).encode()


def _purge_command_text(argv, tool, count, work):
    if tool != "rm -rf":
        return shown(argv, work)
    return f"{' '.join(argv[:3])} <the {count} selected run dirs> (run in $WORK/<copy>/trash/runs)"


def _wait_for_unlinking(home, timeout):
    """Seconds until runq's detached unlinking has emptied the purge area."""
    area = home / "trash" / "runq-purging"
    began = time.perf_counter()
    while area.is_dir() and any(area.iterdir()):
        if time.perf_counter() - began > timeout:
            raise BenchError(f"runq's background unlinking did not finish within {timeout:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - began


def _check_purged(home, expected, deleted_runs):
    left = set(os.listdir(trash(home)))
    removed = deleted_runs - len(left)
    wrong = expected & left
    if wrong or removed != len(expected):
        return f"WRONG: removed {removed} runs, expected exactly the {len(expected)} selected"
    return f"removed the {removed} selected runs"


# ---------------------------------------------------------------------------
# index: runq's own index
# ---------------------------------------------------------------------------

MUTATE_FRACTION = 0.01


def bench_index(bench):
    home = bench.home
    index_argv = bench.runq_argv(home, "index")
    rebuild_argv = bench.runq_argv(home, "index", "--rebuild")
    cold = bench.add(Row("index", "build from nothing (--rebuild)", "runq", shown(rebuild_argv, bench.work)))
    for _ in range(bench.args.repeat):
        cold.samples.append(bench.run(rebuild_argv))
    profile_runq(bench, "index-rebuild", rebuild_argv)
    bench.must(index_argv)
    fresh = bench.add(Row("index", "refresh, nothing changed", "runq", shown(index_argv, bench.work)))
    for _ in range(bench.args.repeat):
        fresh.samples.append(bench.run(index_argv))
    profile_runq(bench, "index-refresh-unchanged", index_argv)
    changed = bench.add(Row("index", f"refresh after {MUTATE_FRACTION:.0%} of runs changed", "runq", shown(index_argv, bench.work)))
    counts = []
    for i in range(bench.args.repeat + bool(bench.args.profile)):
        counts.append(len(mutate_home(home, MUTATE_FRACTION, seed=bench.args.seed * 1000 + i, now=datetime.datetime.now())))
        settle()
        if i == bench.args.repeat:
            profile_runq(bench, "index-refresh-1pct", index_argv)
        else:
            changed.samples.append(bench.run(index_argv))
    changed.note = f"mutate_home changed {counts[0]} runs before each refresh"
    for row in (cold, fresh, changed):
        print(f"  index {row.case}: {_seconds_text(row)}", flush=True)


# What reading every file of every run once costs, in one process: the floor
# of any first index (argv[1]: the home).
READ_EVERY_FILE = """
import os, sys
total = 0
stack = [os.path.join(sys.argv[1], "runs"), os.path.join(sys.argv[1], "trash", "runs")]
while stack:
    try:
        entries = list(os.scandir(stack.pop()))
    except OSError:
        continue
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            stack.append(entry.path)
        elif entry.is_file(follow_symlinks=False):
            with open(entry.path, "rb") as f:
                total += len(f.read())
print(total)
"""


def bench_build(bench):
    """The first command on the home, side by side: runq builds its index from
    nothing; Guild lists the live runs and the deleted ones (it keeps no
    index, so each of its listings is a first one). The page cache is warm
    for all of them: each tool's repeats interleave with the others'."""
    home = bench.home
    rebuild = bench.runq_argv(home, "index", "--rebuild")
    commands = [
        ("guild runs list -a", "guild", bench.guild_argv(home, "runs", "list", "-a")),
        ("guild runs list --deleted -a", "guild", bench.guild_argv(home, "runs", "list", "--deleted", "-a")),
        ("runq first index (index --rebuild)", "runq", rebuild),
        ("read every file once (one process)", "floor", [sys.executable, "-c", READ_EVERY_FILE, str(home)]),
    ]
    rows = [bench.add(Row("build", case, tool, shown(argv, bench.work))) for case, tool, argv in commands]
    bench.must(commands[-1][2], what="reading every file")  # page cache warm-up: not a result
    for _ in range(bench.args.repeat):
        for row, (_, _, argv) in zip(rows, commands):
            row.samples.append(bench.run(argv))
    profile_runq(bench, "build", rebuild)
    for row in rows:
        print(f"  build {row.case}: {_seconds_text(row)}", flush=True)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def report(bench):
    lines = [_header(bench)]
    tables = (("parse", _parse_table), ("startup", _startup_table), ("list", _list_table), ("purge", _purge_table),
              ("index", _index_table), ("build", _build_table))
    for group, render in tables:
        rows = [r for r in bench.rows if r.group == group]
        if rows:
            lines += ["", *render(rows, bench)]
    errors = [f"  {r.group}/{r.case}/{r.tool}: {r.error}" for r in bench.rows if r.error and r.group != "parse"]
    if errors:
        lines += ["", "Failures:", *errors]
    return "\n".join(lines)


def _header(bench):
    facts = bench.facts
    size = ""
    if "live_runs" in facts:
        size = (f"{facts['live_runs'] + facts['deleted_runs']:,} runs ({facts['deleted_runs']:,} deleted), "
                f"{facts['home_files']:,} files, {(facts['home_bytes'] or 0) / 2**30:.2f} GiB "
                f"({(facts['home_disk_bytes'] or 0) / 2**30:.2f} GiB on disk), "
                f"generated in {facts['generate_seconds']:.1f} s;\n")
    loads = "; ".join(f"{label}: {' '.join(f'{x:.2f}' for x in v['loadavg'])}" for label, v in bench.loads.items())
    commit = facts["runq_commit"]
    commits = {label: v["runq_commit"] for label, v in bench.loads.items()}
    if set(commits.values()) - {commit}:
        commit += " (WARNING: runq changed during the run; at the start of each group: "
        commit += ", ".join(f"{label} {c}" for label, c in commits.items()) + ")"
    return (
        f"runq benchmark {facts['date']} on {facts['machine']}: {size}repeat {bench.args.repeat}\n"
        f"{facts['guild']} against runq {commit}\n"
        f"load average (1/5/15 min) {loads}\n"
        "Seconds are medians of wall time for the whole process; MB is the peak RSS of the largest\n"
        "process in its tree; ratios are Guild's time over runq's."
    )


def _list_table(rows, bench):
    by = {(r.case, r.tool): r for r in rows}
    cases = list(dict.fromkeys(r.case for r in rows))
    header = ("selection (runs list --deleted -a)", "lines out", "guild s", "runq s", "no-refresh s",
              "guild/runq", "guild/no-ref", "guild MB", "runq MB", "output")
    table = []
    for case in cases:
        g, q, n = by[case, "guild"], by[case, "runq"], by[case, "runq --no-refresh"]
        table.append((case, _lines(q), _s(g), _s(q), _s(n), _ratio(g, q), _ratio(g, n),
                      _mem(g), _mem(q), _same(q.note)))
    return ["Listing (stdout and stderr to files; runq's index fresh, Guild warmed up once)", *_format(header, table)]


def _startup_table(rows, bench):
    by = {(r.case, r.tool): r for r in rows}
    cases = list(dict.fromkeys(r.case for r in rows))
    header = ("command", "guild s", "runq s", "no-refresh s", "runq/guild", "no-ref/guild", "guild cpu s", "runq cpu s",
              "output")
    table = []
    for case in cases:
        g, q, n = by[case, "guild"], by[case, "runq"], by[case, "runq --no-refresh"]
        table.append((case, _s(g), _s(q), _s(n), _share(q, g), _share(n, g), _s(g, "cpu_seconds"),
                      _s(q, "cpu_seconds"), _same(q.note)))
    runs = bench.args.startup_runs
    return [f"Start-up: a {runs:,}-run home ({runs // 2:,} live), medians of {len(rows[0].samples)} whole processes",
            *_format(header, table)]


def _share(runq, guild):
    a, b = runq.median(), guild.median()
    return f"{a / b:.2f}" if a and b else "-"


def _lines(row):
    return row.note.split(" lines")[0] if " lines" in row.note else "-"


def _same(note):
    return "same" if "same as" in note else ("DIFFERS" if "DIFFERS" in note else "-")


def _purge_table(rows, bench):
    by = {r.tool: r for r in rows}
    floor = by["rm -rf"].median()
    header = ("purge -y " + rows[0].case, "s", "min s", "max s", "cpu s", "disk busy", "peak MB", "x floor", "result")
    table = [
        (tool, _s(r), _extreme(r, min), _extreme(r, max), _s(r, "cpu_seconds"), _percent(r.median("disk_busy")),
         _mem(r), f"{r.median() / floor:.1f}" if r.median() and floor else "-", r.error or r.note)
        for tool, r in by.items()
    ]
    ratio = _ratio(by["guild"], by["runq"])
    return [
        f"Purge ({bench.facts.get('purge_selected', '?')} of {bench.facts.get('deleted_runs', '?')} deleted runs, "
        f"each on a fresh cp -a copy; guild/runq = {ratio})",
        *_format(header, table),
    ]


def _index_table(rows, bench):
    header = ("runq index", "s", "cpu s", "peak MB", "note")
    table = [(r.case, _s(r), _s(r, "cpu_seconds"), _mem(r), r.error or r.note) for r in rows]
    return ["runq's index (warm page cache)", *_format(header, table)]


def _build_table(rows, bench):
    by = {r.case.split(" (")[0]: r for r in rows}
    runq = by["runq first index"]
    header = ("first command", "s", "cpu s", "peak MB", "runq/this (wall)", "runq/this (cpu)")
    table = [(r.case, _s(r), _s(r, "cpu_seconds"), _mem(r), _share(runq, r), _share(runq, r, "cpu_seconds"))
             for r in rows]
    return ["A first command: runq's first index against one Guild listing and against reading every file once",
            *_format(header, table)]


def _share(runq, other, attr="seconds"):
    a, b = runq.median(attr), other.median(attr)
    return f"{a / b:.2f}" if a and b else "-"


def _parse_table(rows, bench):
    by = {(r.case, r.tool): r for r in rows}
    cases = list(dict.fromkeys(r.case for r in rows))
    header = ("filter expression (in process)", "parse ms", "compile ms", "SQL ms", "total ms", "result")
    table = []
    for case in cases:
        steps = [by.get((case, step)) for step in PARSE_STEPS]
        times = [s.median() if s else None for s in steps]
        error = next((f"{s.tool} failed: {s.samples[0].stderr_tail.split(':')[0]}" for s in steps if s and s.error), None)
        total = sum(times) if all(t is not None for t in times) else None
        table.append((case, *(_ms(t) for t in times), _ms(total), error or "ok"))
    return ["Filter expressions: engine.selection.build_selection -> compile_selection -> .sql()", *_format(header, table)]


def _s(row, attr="seconds"):
    value = row.median(attr)
    return "FAILED" if row.error else (f"{value:.3f}" if value is not None else "-")


def _extreme(row, pick):
    return f"{pick(s.seconds for s in row.good):.3f}" if row.good else "-"


def _percent(fraction):
    return "-" if fraction is None else f"{fraction:.0%}"


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _mem(row):
    mb = _mb(row.median("max_rss_kb"))
    return "-" if mb is None else f"{mb:.0f}"


def _ratio(guild, runq):
    a, b = guild.median(), runq.median()
    return f"{a / b:.1f}x" if a and b else "-"


def _format(header, table):
    widths = [max(len(str(row[i])) for row in (header, *table)) for i in range(len(header))]
    last = len(header) - 1  # names first and words last read best left-aligned
    line = lambda row: "  ".join(
        str(v).ljust(w) if i in (0, last) else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))
    ).rstrip()
    return [line(header), line(["-" * w for w in widths]), *map(line, table)]


def write_json(bench, path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "facts": bench.facts,
        "options": {k: v for k, v in vars(bench.args).items() if k != "only"} | {"only": list(bench.args.only)},
        "load": bench.loads,
        "rows": [r.summary() for r in bench.rows],
        "table": table,
    }
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Time runq against Guild 0.9.0 on a generated Guild home.",
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs in the generated home, half of them deleted (default 1000: a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of each command; the median is reported (default 3)")
    parser.add_argument("--only", type=_groups, default=GROUPS, help=f"comma-separated groups to run, of {','.join(GROUPS)} (default all)")
    parser.add_argument("--work", type=Path, help="directory to create the benchmark's fresh work directory in (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (homes and copies) afterwards")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--startup-runs", type=int, default=300, help="runs in the start-up group's own home (default 300)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds before one process is killed (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--json", type=Path, help="where to write the JSON results (default benchmarks/results/<date>-<runs>.json)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="also run each runq command once under cProfile, writing DIR/<name>.prof and .txt")
    parser.add_argument("--guild", type=Path, help="the guild script (default: tests/guildenv.py's, guildai 0.9.0)")
    parser.add_argument("--runq", type=Path, default=REPO / ".venv" / "bin" / "runq", help="the runq script (default .venv/bin/runq)")
    args = parser.parse_args(argv)
    if args.runs < 10 or args.repeat < 1:
        parser.error("--runs must be at least 10 and --repeat at least 1")
    return args


def _groups(text):
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"unknown group(s) {', '.join(unknown) or '(none)'}; use {','.join(GROUPS)}")
    return groups


def make_work_dir(args):
    parent = (args.work or Path(tempfile.gettempdir())).resolve()
    guild_dir = (Path.home() / ".guild").resolve()
    if parent == guild_dir or guild_dir in parent.parents:
        raise BenchError(f"refusing to work inside {guild_dir}")
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"runq-bench-{args.runs}-", dir=parent))
    (work / "user-home").mkdir()
    return work


def tool_paths(args):
    guild = args.guild or guild_script()
    for name, path in (("guild", guild), ("runq", args.runq)):
        if not Path(path).is_file():
            raise BenchError(f"{name} not found at {path}")
    return Path(guild), Path(args.runq)


def runq_version():
    """The commit runq is at, with '+changes' if tracked files differ from it."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return commit + ("+changes" if dirty else "")


def facts(args, guild):
    version = subprocess.run([str(guild), "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.system()} {platform.release()})",
        "python": platform.python_version(),
        "guild": version,
        "runq_commit": runq_version(),
        "runs": args.runs,
    }


RUNNERS = {"parse": bench_parse, "startup": bench_startup, "list": bench_list, "purge": bench_purge, "index": bench_index,
           "build": bench_build}


def main(argv=None):
    args = parse_args(argv)
    try:
        guild, runq = tool_paths(args)
        work = make_work_dir(args)
    except BenchError as e:
        sys.exit(f"bench: {e}")
    bench = Bench(args, work, guild, runq, facts=facts(args, guild))
    bench.note_load("start")
    try:
        if set(args.only) - {"parse", "startup"}:
            generate_home(bench)
        for group in GROUPS:  # this order: index last, as it changes the home
            if group in args.only:
                print(f"[{group}] {_uptime()}", flush=True)
                bench.note_load(group)
                RUNNERS[group](bench)
        bench.note_load("end")
    except BenchError as e:
        sys.exit(f"bench: {e}")
    except KeyboardInterrupt:
        sys.exit("bench: interrupted")
    finally:
        _finish(bench)


def _finish(bench):
    if bench.rows:
        table = report(bench)
        print("\n" + table)
        path = bench.args.json or REPO / "benchmarks" / "results" / f"{datetime.date.today()}-{bench.args.runs}.json"
        if path.exists() and not bench.args.json:
            path = path.with_name(f"{path.stem}-{datetime.datetime.now():%H%M%S}.json")
        write_json(bench, path, table)
        print(f"\nJSON: {path}")
    if bench.args.keep:
        print(f"Kept {bench.work}")
    else:
        remove_tree(bench.work)


if __name__ == "__main__":
    main()
