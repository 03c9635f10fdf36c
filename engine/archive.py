"""Archives: directories of runs written by `guild export`, listed with `runs list -A`.

An archive is indexed as a home of runq's own in the user's cache
directory whose `runs` is a symbolic link to the archive: the index and
everything else runq keeps stay out of the archive, and nothing in the
archive is ever written, moved or removed.
"""

import os
from pathlib import Path

from .errors import HomeError
from .home import GuildHome


def cache_dir():
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runq"


def archive_path(path):
    """The archive directory at `path`; raises HomeError when it cannot be one."""
    resolved = Path(os.path.abspath(os.path.expanduser(str(path))))
    if not resolved.exists():
        raise HomeError(f"{path} does not exist")
    if not resolved.is_dir():
        raise HomeError(
            f"archive {path} is not a directory",
            hint="zip archives are not supported: unzip it and pass the directory",
        )
    return resolved


def archive_home(archive):
    """The home that stands for an archive directory, made on first use."""
    import hashlib  # only for archives: it loads OpenSSL

    key = hashlib.sha1(str(archive).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    home = cache_dir() / "archives" / f"{archive.name or 'root'}-{key}"
    runs = home / "runs"
    if not (runs.is_symlink() and os.readlink(runs) == str(archive)):
        try:
            home.mkdir(parents=True, exist_ok=True)
            if runs.is_symlink():
                runs.unlink()
            runs.symlink_to(archive, target_is_directory=True)
        except OSError as e:
            raise HomeError(f"cannot prepare {home} to index the archive: {e.strerror or e}") from None
    return GuildHome(home)
