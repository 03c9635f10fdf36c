"""A selection on a home of a million runs, nothing changed since the last command.

    .venv/bin/python benchmarks/million.py --home HOME [--repeat 5] [--guild]

HOME is a Guild home that already exists (a million runs take a while to
write: see benchmarks/README.md for the `fast` sample-home profile and a
file system with enough inodes). Steps, each a whole process timed from
start to exit, as bench.py times them:

  build     `runq index --rebuild`: the index from nothing (once; --no-build
            keeps the index there is)
  walk      `runq runs list`, nothing changed: the refresh stats every run
  watch     `runq watch start`: the watcher watches every run, then the
            command checks every run once (what changed before the watch)
  watched   the same `runq runs list` with the watcher running: the refresh
            asks the watcher
  watched:  with the watcher, other selections: deleted runs, an operation
  ...       filter, a flag filter (counting what they select reads every
            run that passes the root)
  guild     `guild runs list` once (with --guild; minutes at this size)

The watcher is stopped after the `watched` steps.
"""


from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]

from bench import run_process, shown  # noqa: E402
from guildenv import guild_script  # noqa: E402

WATCH_READY_SECONDS = 3600
# Other selections timed with the watcher running, after the plain listing.
WATCHED_SELECTIONS = (
    ("watched: --deleted", ["runs", "list", "--deleted"]),
    ("watched: -Fo mnist:train", ["runs", "list", "-Fo", "mnist:train"]),
    ("watched: -F 'lr > 0.001'", ["runs", "list", "-F", "lr > 0.001"]),
)


def main(argv=None):
    args = parse_args(argv)
    home = args.home.resolve()
    env = dict(os.environ, HOME=str(args.work), NO_COLOR="1")
    env.pop("RUNQ_INDEX", None)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []

    def timed(step, argv, repeat, expect=0, warm_up=False):
        samples = []
        for _ in range(repeat):
            sample = run_process(argv, env=env, timeout=args.timeout)
            if sample.failed(expect):
                raise SystemExit(f"{shown(argv, home)} failed ({sample.returncode}): {sample.stderr_tail}")
            samples.append(sample)
        if warm_up:  # run for the page cache's sake: not a result
            return
        row = {"step": step, "command": shown(argv, home.parent), "seconds": [s.seconds for s in samples],
               "cpu_seconds": [s.cpu_seconds for s in samples], "max_rss_mb": max(s.max_rss_kb for s in samples) / 1024,
               "stdout_lines": samples[-1].stdout_lines}
        rows.append(row)
        print(f"  {step}: median {statistics.median(row['seconds']):.3f} s over {repeat} "
              f"(min {min(row['seconds']):.3f}, max {max(row['seconds']):.3f}), peak {row['max_rss_mb']:.0f} MB",
              flush=True)

    runq = [str(args.runq), "-H", str(home)]
    print(f"Home {home}: {count_runs(home):,} runs", flush=True)
    if not args.no_build:
        timed("build", [*runq, "index", "--rebuild"], 1)
    timed("walk", [*runq, "runs", "list"], 1, warm_up=True)
    timed("walk", [*runq, "runs", "list"], args.repeat)
    watched(args, env, runq, timed)
    if args.guild:
        timed("guild", [str(args.guild_script), "-H", str(home), "runs", "list"], 1)
    write_results(args, home, rows)


def watched(args, env, runq, timed):
    began = time.perf_counter()
    start = subprocess.run([*runq, "watch", "start"], env=env, capture_output=True, text=True,
                           timeout=WATCH_READY_SECONDS)
    if start.returncode != 0:
        print(f"  watched: runq watch start failed: {start.stderr.strip()}", flush=True)
        return
    try:
        wait_until_watching(runq, env)
        print(f"  watch: `runq watch start` took {time.perf_counter() - began:.1f} s", flush=True)
        timed("watched", [*runq, "runs", "list"], args.repeat)
        for step, selection in WATCHED_SELECTIONS:
            timed(step, [*runq, *selection], args.repeat)
    finally:
        subprocess.run([*runq, "watch", "stop"], env=env, capture_output=True, timeout=120)


def wait_until_watching(runq, env):
    began = time.monotonic()
    while time.monotonic() - began < WATCH_READY_SECONDS:
        status = subprocess.run([*runq, "watch", "status"], env=env, capture_output=True, text=True, timeout=60)
        if status.returncode == 0 and "ready" in status.stdout.lower():
            print(f"  watcher ready after {time.monotonic() - began:.1f} s: {status.stdout.strip()}", flush=True)
            return
        time.sleep(1)
    raise SystemExit("the watcher did not become ready")


def count_runs(home):
    return sum(len(os.listdir(home / root)) for root in ("runs", "trash/runs") if (home / root).is_dir())


def write_results(args, home, rows):
    facts = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
             "cpus": os.cpu_count(), "load": os.getloadavg(), "home": str(home), "runs": count_runs(home),
             "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                      text=True).stdout.strip()}
    path = args.json or REPO / "benchmarks" / "results" / f"{datetime.date.today()}-million.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"facts": facts, "rows": rows}, indent=2))
    print(f"Results: {path}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--guild", action="store_true", help="also time one `guild runs list`")
    parser.add_argument("--no-build", action="store_true", help="keep the home's index: do not time a rebuild")
    parser.add_argument("--work", type=Path, default=Path("/tmp/runq-million-work"),
                        help="an empty HOME for both tools (never the user's)")
    parser.add_argument("--runq", type=Path, default=REPO / ".venv" / "bin" / "runq")
    parser.add_argument("--guild-script", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.guild and args.guild_script is None:
        args.guild_script = guild_script()
    return args


if __name__ == "__main__":
    main()
