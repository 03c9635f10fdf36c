"""Where a Guild home keeps things, and where runq keeps its own."""

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import HomeError

LIVE, DELETED = 0, 1


@dataclass(frozen=True)
class GuildHome:
    path: Path

    @property
    def runs_dir(self):
        return self.path / "runs"

    @property
    def trash_runs_dir(self):
        return self.path / "trash" / "runs"

    @property
    def purge_dir(self):
        """Runs being purged: moved out of trash/runs, not yet unlinked."""
        return self.path / "trash" / "runq-purging"

    @property
    def default_index_path(self):
        return self.path / "cache" / "runq" / "index.db"

    def root_dir(self, deleted):
        return self.trash_runs_dir if deleted else self.runs_dir

    def run_dir(self, run_id, deleted):
        return self.root_dir(deleted) / run_id


def resolve_home(option=None, environ=None):
    """The Guild home: -H/--guild-home, else $GUILD_HOME, else ~/.guild."""
    environ = os.environ if environ is None else environ
    raw = option or environ.get("GUILD_HOME") or os.path.join("~", ".guild")
    path = Path(os.path.abspath(os.path.expanduser(raw)))
    if not path.is_dir():
        raise HomeError(
            f"Guild home {path} does not exist",
            hint="pass -H PATH or set GUILD_HOME, or create a sample home with 'runq demo'",
        )
    return GuildHome(path)
