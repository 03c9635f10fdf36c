"""`runq demo`: runq's main job, shown step by step.

With no Guild home around (none at -H, $GUILD_HOME or ~/.guild), it
generates a sample home in the user's cache directory
($XDG_CACHE_HOME/runq/demo-home, else ~/.cache/runq/demo-home) and purges
part of its trash for real. On an existing home it only reads: it lists,
shows the SQL, and dry-runs the purge, with its index in the cache
directory too, so that nothing is written into that home.
"""

import os
import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..engine.digest import sha256
from ..engine.errors import HomeError
from ..engine.home import resolve_home

SAMPLE_FILTER = "loss > 0.5 or status = error"


def demo(
    ctx: typer.Context,
    runs: Annotated[int, typer.Option("--runs", min=10, help="Runs in a generated sample home.")] = 2000,
    sample: Annotated[
        Optional[Path], typer.Option("--sample", metavar="DIR", help="Use (or generate) a sample home in DIR.")
    ] = None,
):
    """Show runq at work: on a generated sample home, or read-only on yours."""
    settings = ctx.obj
    home, is_sample = _home_for_demo(settings.guild_home, sample, runs)
    steps = SAMPLE_STEPS if is_sample else READ_ONLY_STEPS
    root_options = ["-H", str(home)]
    if not is_sample:
        index = _demo_index(home)
        root_options += ["--index", str(index)]
        typer.echo(f"Using your Guild home {home} (read-only: nothing is deleted, its index is {index}).\n")
    for args in steps:
        _run_step(root_options, args)


def _home_for_demo(guild_home, sample, runs):
    if sample is None:
        try:
            return resolve_home(guild_home).path, False
        except HomeError:
            sample = cache_dir() / "demo-home"
    sample = sample.resolve()
    if (sample / "runs").is_dir():
        typer.echo(f"Using the sample Guild home in {sample}.\n")
        return sample, True
    from ..engine.samplehome import HomeSpec, generate_home  # only the demo needs it

    typer.echo(f"Generating a sample Guild home with {runs} runs in {sample} ...")
    started = time.perf_counter()
    generate_home(sample, HomeSpec(runs=runs, profile="realistic"), datetime.now())
    typer.echo(f"Done in {time.perf_counter() - started:.1f} s.\n")
    return sample, True


def cache_dir():
    """runq's directory in the user's cache ($XDG_CACHE_HOME, else ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "runq"


def _demo_index(home):
    """An index for a demo on someone's home, kept out of that home."""
    name = sha256(os.fsencode(home)).hexdigest()[:16]
    directory = cache_dir() / "demo-index"
    directory.mkdir(parents=True, exist_ok=True)  # runq creates no directory for an --index it is given
    return directory / f"{name}.db"


READ_ONLY_STEPS = [
    ["index"],
    ["runs", "list", "--deleted", "-n", "10"],
    ["runs", "purge", "--sql", "-F", SAMPLE_FILTER],
    ["runs", "purge", "--dry-run", "-F", SAMPLE_FILTER],
    ["sql", "SELECT status, deleted, COUNT(*) AS runs FROM runs GROUP BY status, deleted"],
]
SAMPLE_STEPS = [
    *READ_ONLY_STEPS,
    ["runs", "purge", "-y", "-F", SAMPLE_FILTER],
    ["index"],
]


def _run_step(root_options, args):
    from .app import app  # the root imports this module

    argv = [*root_options, *args]
    typer.echo("$ runq " + " ".join(shlex.quote(a) for a in argv))
    started = time.perf_counter()
    try:
        app(args=argv, prog_name="runq")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    typer.echo(f"({time.perf_counter() - started:.2f} s)\n")
