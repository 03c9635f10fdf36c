"""runq: fast, SQL-backed run selection for Guild AI homes.

Installed, this folder is the `runq` package: `runq.engine` (everything
that is not the command line) and `runq.commands` (the Typer CLI).
"""

__version__ = "0.1.0"
