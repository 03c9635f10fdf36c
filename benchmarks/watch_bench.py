"""Times `runq runs list` with nothing changed, with and without `runq watch`.

    .venv/bin/python benchmarks/watch_bench.py --home PATH [--repeat 5]
    .venv/bin/python benchmarks/watch_bench.py --runs 10000 --work DIR   # generates DIR/home first

Whole processes of the installed `runq` script (next to this Python), warm
page cache, on a home whose index is built first. For each way (no watcher,
watcher) it prints the median and the range of the repeats, and what the
refresh itself took (`last_refresh_seconds` in the index's meta table);
then the watcher's start time and `runq watch status`. The home is only
read (the index and the watcher's files go to its cache/runq/).
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNQ = Path(sys.executable).parent / "runq"
LIST = ("runs", "list")


def run(home, *args, check=True):
    env = {**os.environ, "GUILD_HOME": str(home)}
    env.pop("RUNQ_WATCH", None)
    began = time.perf_counter()
    done = subprocess.run([str(RUNQ), *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if check and done.returncode != 0:
        sys.exit(f"runq {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds, done


def refresh_seconds(home):
    conn = sqlite3.connect(f"file:{home}/cache/runq/index.db?mode=ro", uri=True)
    try:
        return float(conn.execute("SELECT value FROM meta WHERE key = 'last_refresh_seconds'").fetchone()[0])
    finally:
        conn.close()


def timed_lists(home, repeat):
    samples = []
    for _ in range(repeat):
        seconds, _ = run(home, *LIST)
        samples.append((seconds, refresh_seconds(home)))
    return samples


def summary(name, samples):
    whole = [s for s, _ in samples]
    refresh = [r for _, r in samples]
    return (f"{name:<12} runs list: median {statistics.median(whole):.3f} s "
            f"(min {min(whole):.3f}, max {max(whole):.3f}); refresh median {statistics.median(refresh):.3f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="an existing Guild home")
    parser.add_argument("--runs", type=int, help="generate a realistic home of this many runs")
    parser.add_argument("--work", type=Path, help="where to generate it")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    home = args.home or generate(args)
    began = time.perf_counter()
    run(home, "index")
    print(f"index ready in {time.perf_counter() - began:.1f} s (built or refreshed)")
    run(home, "watch", "stop")
    run(home, *LIST)  # warm
    print(summary("no watcher", timed_lists(home, args.repeat)))
    seconds, started = run(home, "watch", "start")
    print(f"watch start: {seconds:.1f} s")
    try:
        first, _ = run(home, *LIST)
        print(f"first list after the start (checks every run): {first:.3f} s")
        print(summary("watcher", timed_lists(home, args.repeat)))
        print(run(home, "watch", "status", check=False)[1].stdout.rstrip())
    finally:
        run(home, "watch", "stop")


def generate(args):
    if not (args.runs and args.work):
        sys.exit("give --home, or --runs and --work")
    home = args.work / "home"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runq.engine.samplehome", str(home), "--runs", str(args.runs),
                    "--profile", "realistic", "--seed", "1"], check=True)
    print(f"generated {args.runs} runs in {time.perf_counter() - began:.0f} s")
    return home


if __name__ == "__main__":
    main()
