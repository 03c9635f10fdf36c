"""runq's two index backends side by side: SQLite (the file in the home)
and PostgreSQL (`--index postgresql://...`), on the same generated home.

    .venv/bin/python benchmarks/backends.py --runs 10000
    .venv/bin/python benchmarks/backends.py --runs 10000 --url postgresql://USER:PW@HOST/DB

Without --url a private PostgreSQL server is started for the run (the
tests' tests/pgserver.py: the machine's PostgreSQL binaries, on
127.0.0.1, fsync off) and stopped after. Every figure is a whole `runq`
process (start-up included), the median of --repeat runs, warm page
cache: building the index from nothing, refreshing it with nothing
changed and after 1% of the runs changed, and selections with the
default refresh and with --no-refresh (the query alone). With
--synthetic-runs N, the PostgreSQL index also gets N - --runs more runs
of other homes (rows copied under other home ids: the shared tables'
size, not this home's), to see selections in a big shared database.
"""

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from runq.engine.samplehome import mutate_home  # noqa: E402

RUNQ = Path(sys.executable).parent / "runq"
LISTING = ("runs", "list", "--deleted", "-a")
SELECTIONS = {
    "no filter": LISTING,
    "-F 'lr > 0.001 and batch-size = 32'": (*LISTING, "-F", "lr > 0.001 and batch-size = 32"),
    "-F 'loss < 0.5' (a scalar)": (*LISTING, "-F", "loss < 0.5"),
    "-Sc": (*LISTING, "-Sc"),
    "--started 'last 30 days'": (*LISTING, "--started", "last 30 days"),
    "-Fo train": (*LISTING, "-Fo", "train"),
}
MUTATE_FRACTION = 0.01


def main():
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="runq-backends-", dir=args.work))
    server = None
    try:
        url = args.url
        if not url:
            import pgserver

            server = pgserver.start(work / "postgres")
            url = server.url()
        home = Path(args.home) if args.home else _generate(work / "home", args)
        (home / "cache" / "runq").mkdir(parents=True, exist_ok=True)  # an --index path's directory must exist
        indexes = {"SQLite": str(home / "cache" / "runq" / "index.db"), "PostgreSQL": f"{url}?home=bench"}
        results = {name: _bench_backend(home, index, args) for name, index in indexes.items()}
        if args.synthetic_runs > args.runs:
            _add_other_homes(url, args.synthetic_runs // args.runs - 1)
            results["PostgreSQL, shared"] = _bench_selections(home, indexes["PostgreSQL"], args)
        print(_table(results, args))
    finally:
        if server:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="realistic",
                        help="samplehome profile: realistic, or fast (only what a listing reads; large homes)")
    parser.add_argument("--url", help="a PostgreSQL database to use (default: a private server)")
    parser.add_argument("--work", help="where the work directory goes (default: the system temp dir)")
    parser.add_argument("--synthetic-runs", type=int, default=0,
                        help="fill the shared PostgreSQL tables with other homes' copies up to this many runs")
    parser.add_argument("--home", help="an existing home to use (its runq indexes are rebuilt) instead of a generated one")
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args()


def _generate(home, args):
    print(f"Generating {args.runs:,} runs into {home} ...", flush=True)
    subprocess.run([sys.executable, "-m", "runq.engine.samplehome", str(home), "--runs", str(args.runs),
                    "--profile", args.profile, "--seed", str(args.seed)], check=True, cwd=REPO, capture_output=True)
    return home


def _runq(home, index, *argv):
    began = time.perf_counter()
    result = subprocess.run([str(RUNQ), "-H", str(home), "--index", index, *argv], capture_output=True,
                            env={**os.environ, "HOME": str(home.parent)})
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"runq {' '.join(argv)} failed: {result.stderr.decode(errors='replace')}")
    return seconds, result.stdout


def _median(home, index, argv, repeat, before=None):
    samples = []
    for i in range(repeat):
        if before:
            before(i)
        samples.append(_runq(home, index, *argv)[0])
    print(f"    {' '.join(argv)}: {statistics.median(samples):.2f} s", flush=True)
    return statistics.median(samples)


def _bench_backend(home, index, args):
    print(f"  {index.split('@')[-1]}: index", flush=True)
    rows = {"build from nothing": _median(home, index, ("index", "--rebuild"), args.repeat)}
    rows["refresh, nothing changed"] = _median(home, index, ("index",), args.repeat)
    mutate = lambda i: mutate_home(home, MUTATE_FRACTION, seed=args.seed * 1000 + i, now=datetime.datetime.now())
    rows[f"refresh after {MUTATE_FRACTION:.0%} of the runs changed"] = _median(
        home, index, ("index",), args.repeat, before=mutate)
    _runq(home, index, "index")
    return {**rows, **_bench_selections(home, index, args)}


def _bench_selections(home, index, args):
    rows = {}
    for name, argv in SELECTIONS.items():
        print(f"  {index.split('@')[-1]}: {name}", flush=True)
        rows[name] = _median(home, index, argv, args.repeat)
        rows[f"{name}, --no-refresh"] = _median(home, index, ("--no-refresh", *argv), args.repeat)
    return rows


def _add_other_homes(url, copies):
    """Copies of the bench home's rows under new home ids (one transaction each)."""
    import psycopg

    from runq.engine.pgschema import quoted, sqlite_tables

    with psycopg.connect(f"{url}", autocommit=True) as conn:
        source = conn.execute("SELECT id FROM runq.homes WHERE name = 'bench'").fetchone()[0]
        for number in range(copies):
            with conn.transaction():
                home = conn.execute("INSERT INTO runq.homes (host, path, name) VALUES ('synthetic', %s, %s)"
                                    " RETURNING id", (f"/copy/{number}", f"copy-{number}")).fetchone()[0]
                for table, columns in sqlite_tables().items():
                    names = ", ".join(map(quoted, columns))
                    conn.execute(f"INSERT INTO runq.{table} (home, {names}) SELECT %s, {names} FROM runq.{table}"
                                 " WHERE home = %s", (home, source))
        conn.execute("ANALYZE")
        print(f"  PostgreSQL: {copies} more homes' copies added", flush=True)


def _table(results, args):
    names = list(results)
    lines = [f"{args.runs:,} runs (half deleted), median of {args.repeat}, seconds per whole process", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    cases = list(dict.fromkeys(case for rows in results.values() for case in rows))
    for case in cases:
        cells = [f"{results[n][case]:.2f}" if case in results[n] else "" for n in names]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
