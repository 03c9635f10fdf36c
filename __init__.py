"""runq: fast, SQL-backed run selection for Guild AI homes.

Installed, this folder is the `runq` package: `runq.engine` (everything
that is not the command line) and `runq.commands` (the Typer CLI).

As a library:

    import runq
    index = runq.open()                  # or runq.open(home=..., index=...)
    runs = index.select(filter="lr >= 0.001", deleted=True)
    [run.id for run in runs]

See runq.engine.api for the whole interface.
"""

__version__ = "0.1.0"


def open(home=None, index=None, **options):  # noqa: A001 - the library's entry point
    """The refreshed index of a Guild home: a runq.engine.api.RunIndex.

    Imported on first use, so that `import runq` (and the command line's
    start) stays light.
    """
    from .engine.api import open as open_index

    return open_index(home, index, **options)
