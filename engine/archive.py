"""Archives: directories of runs written by `guild export`, listed with `runs list -A`.

An archive is read as a home whose runs/ is the directory itself and
which has no trash. Its index lives in the user's cache directory, not in
the archive, so listing never writes into it.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import HomeError
from .home import GuildHome

# Below a file, so no directory can be there: an archive has no trash, and
# nothing may ever be moved into or purged from one.
NOWHERE = Path(os.devnull) / "runq-archive"


@dataclass(frozen=True)
class ArchiveHome(GuildHome):
    @property
    def runs_dir(self):
        return self.path

    @property
    def trash_runs_dir(self):
        return NOWHERE

    @property
    def purge_dir(self):
        return NOWHERE

    @property
    def default_index_path(self):
        key = hashlib.sha1(str(self.path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return cache_dir() / "archives" / f"{self.path.name or 'root'}-{key}" / "index.db"

    def root_dir(self, deleted):
        return NOWHERE if deleted else self.path


def cache_dir():
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runq"


def archive_home(path):
    """The archive at `path`; raises HomeError when it cannot be one."""
    resolved = Path(os.path.abspath(os.path.expanduser(str(path))))
    if not resolved.exists():
        raise HomeError(f"{path} does not exist")
    if not resolved.is_dir():
        raise HomeError(
            f"archive {path} is not a directory",
            hint="zip archives are not supported: unzip it and pass the directory",
        )
    return ArchiveHome(resolved)
