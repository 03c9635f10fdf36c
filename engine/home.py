"""Where a Guild home keeps things, and where runq keeps its own.

The home is found as Guild 0.9.0 finds it (guild/config.py), so that runq
never acts on another home than the one `guild` would act on.
"""

import os
from pathlib import Path
from typing import NamedTuple, Optional

from .digest import sha256
from .errors import HomeError

LIVE, DELETED = 0, 1

# How the home was found: the words previews and `runq index` use.
HOME_SOURCES = {
    "option": "given with -H",
    "GUILD_HOME": "from $GUILD_HOME",
    "CONDA_PREFIX": "in the activated conda environment",
    "VIRTUAL_ENV": "in the activated virtual environment",
    "found": "the nearest .guild above the current directory",
    "user": "the user's default",
    "pre-0.9": "Guild's pre-0.9 scheme",
}
# What Guild creates in a home: a directory with none of these is not one.
HOME_ENTRIES = ("runs", "trash", "cache")
# File systems where SQLite's locking and shared memory cannot be trusted.
NETWORK_FS = {"nfs", "nfs4", "cifs", "smbfs", "smb3", "ncpfs", "afs", "9p", "fuse.sshfs", "fuse.rclone",
              "fuse.s3fs", "fuse.gcsfuse", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph", "lustre"}


class GuildHome(NamedTuple):
    path: Path
    source: str = "option"

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

    @property
    def how_found(self):
        return HOME_SOURCES.get(self.source, self.source)

    def describe(self):
        """The home and how it was found, for previews of what a command will change."""
        return f"Guild home {self.path} ({self.how_found})"

    def identity(self):
        """What tells this home from a moved, copied or re-mounted one."""
        st = os.stat(self.path)
        return f"{os.path.realpath(self.path)}\0{st.st_dev}:{st.st_ino}"


def resolve_home(option=None, environ=None, cwd=None):
    """The Guild home: -H/--guild-home, else where Guild 0.9.0 would look; checked."""
    home = find_home(option, os.environ if environ is None else environ, cwd)
    check_home(home)
    return home


def find_home(option, environ, cwd=None):
    """Guild 0.9.0's rules (config.guild_home), -H standing for its own -H."""
    if option:
        return GuildHome(Path(_absolute(os.path.expanduser(str(option)), cwd)), "option")
    cwd = cwd or _current_dir()
    if environ.get("GUILD_HOME"):
        return GuildHome(Path(_absolute(environ["GUILD_HOME"], cwd)), "GUILD_HOME")
    if _home_scheme(environ, cwd) == "pre-0.9":
        return _pre_0_9_home(environ)
    return _activated_env_home(environ) or _dot_guild_above(cwd, environ)


def _absolute(path, cwd):
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(cwd or _current_dir(), path))


def _current_dir():
    try:
        return os.getcwd()
    except OSError:
        raise HomeError("the current directory no longer exists", hint="cd to a directory that does") from None


def _user_home(environ):
    """As os.path.expanduser('~') reads it."""
    return (environ.get("HOME") or os.path.expanduser("~")).rstrip("/") or "/"


def _activated_env(environ):
    for name in ("CONDA_PREFIX", "VIRTUAL_ENV"):
        if environ.get(name):
            return name, environ[name]
    return None, None


def _pre_0_9_home(environ):
    _, env_dir = _activated_env(environ)
    base = env_dir or _user_home(environ)
    return GuildHome(Path(os.path.realpath(os.path.join(base, ".guild"))), "pre-0.9")


def _activated_env_home(environ):
    """Only the first activated environment counts, and only if it has a .guild directory."""
    source, env_dir = _activated_env(environ)
    if not env_dir:
        return None
    path = os.path.realpath(os.path.join(env_dir, ".guild"))
    return GuildHome(Path(path), source) if os.path.isdir(path) else None


def _dot_guild_above(cwd, environ):
    """`.guild` in the current directory or a parent, up to the user's home; else ~/.guild."""
    user_home = _user_home(environ)
    stop = _guild_realpath(user_home)
    current = os.path.abspath(cwd)
    while True:
        candidate = os.path.join(current, ".guild")
        if os.path.isdir(candidate):
            return GuildHome(Path(candidate), "found")
        parent = os.path.dirname(current)
        if _guild_realpath(current) == stop or parent == current:
            return GuildHome(Path(_absolute(os.path.join(user_home, ".guild"), cwd)), "user")
        current = parent


def _guild_realpath(path):
    """Guild's util.realpath: a path that is a link resolves one step only."""
    try:
        link = os.readlink(path)
    except OSError:
        return os.path.realpath(path)
    return os.path.abspath(os.path.join(os.path.dirname(path), link))


def _home_scheme(environ, cwd):
    return environ.get("GUILD_HOME_SCHEME") or _user_config(environ, cwd).get("guild-home")


def _user_config(environ, cwd):
    """The `legacy` section of Guild's user config ({} when unreadable, as Guild treats it)."""
    path = environ.get("GUILD_CONFIG")
    if not path:
        local = os.path.join(cwd, "guild-config.yml")
        path = local if os.path.exists(local) else os.path.join(_user_home(environ), ".guild", "config.yml")
    try:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except Exception:  # Guild warns and reads no config
        return {}
    legacy = data.get("legacy") if isinstance(data, dict) else None
    return legacy if isinstance(legacy, dict) else {}


def check_home(home):
    """Refuses what is not a Guild home before anything is created in it."""
    path = home.path
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise HomeError(
            f"Guild home {path} {what}",
            hint="pass -H PATH or set GUILD_HOME, or create a sample home with 'runq demo'",
        )
    if not any(os.path.lexists(path / name) for name in HOME_ENTRIES):
        raise HomeError(
            f"{path} is not a Guild home: it has no runs, trash or cache directory",
            hint="pass -H with the directory Guild keeps its runs in",
        )
    for root in (home.runs_dir, home.path / "trash", home.trash_runs_dir):
        if os.path.lexists(root) and not root.is_dir():
            raise HomeError(f"{root} is not a directory", hint="Guild keeps runs in directories there")


# Where the index lives


class IndexLocation(NamedTuple):
    path: Path
    reason: str  # why there: shown by `runq index`
    owned: bool  # runq chose the path: a file there that is not an index is runq's own, broken
    url: Optional[str] = None  # a PostgreSQL index's URL (`path` then shows it without the password)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(text):
    return str(text).startswith(POSTGRES_SCHEMES)


def _postgres_location(url, reason):
    from .pgindex import shown_url  # only for a PostgreSQL index: its module stays out of start-up

    return IndexLocation(shown_url(url), reason, False, url)


def locate_index(home, option=None, environ=None, mounts=None):
    """--index, else $RUNQ_INDEX, else <home>/cache/runq/index.db, else (a
    read-only or network home) the user's cache directory."""
    environ = os.environ if environ is None else environ
    if option and is_postgres_url(option):
        return _postgres_location(str(option), "given with --index")
    if environ.get("RUNQ_INDEX") and not option and is_postgres_url(environ["RUNQ_INDEX"]):
        return _postgres_location(environ["RUNQ_INDEX"], "from $RUNQ_INDEX")
    if option:
        return IndexLocation(Path(os.path.abspath(os.path.expanduser(str(option)))), "given with --index", False)
    if environ.get("RUNQ_INDEX"):
        return IndexLocation(Path(os.path.abspath(environ["RUNQ_INDEX"])), "from $RUNQ_INDEX", False)
    fs_type = network_fs_type(os.path.realpath(home.path), read_mounts() if mounts is None else mounts)
    if fs_type:
        return IndexLocation(user_cache_index(home, environ), f"in the user cache: the home is on {fs_type}", True)
    if not _writable_cache(home):
        return IndexLocation(user_cache_index(home, environ), "in the user cache: the home is read-only", True)
    return IndexLocation(home.default_index_path, "in the home", True)


def user_cache_index(home, environ):
    base = environ.get("XDG_CACHE_HOME") or os.path.join(_user_home(environ), ".cache")
    real = os.path.realpath(home.path)
    key = f"{sha256(real.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}-{os.path.basename(real)}"
    return Path(os.path.abspath(base)) / "runq" / key / "index.db"


def _writable_cache(home):
    """Whether runq can keep its files in <home>/cache/runq (a file in the
    way is not a reason to go elsewhere: opening the index reports it)."""
    for path in (home.default_index_path.parent, home.path / "cache", home.path):
        if os.path.lexists(path):
            return not path.is_dir() or os.access(path, os.W_OK | os.X_OK)
    return False


def read_mounts(path="/proc/mounts"):
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def network_fs_type(path, mounts):
    """The type of the network file system `path` lies on, or None; `mounts`
    is the text of /proc/mounts (the mount point deepest above `path` wins)."""
    best: Optional[tuple] = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount(fields[1])
        if _is_under(path, point) and (best is None or len(point) >= len(best[0])):
            best = (point, fields[2])
    return best[1] if best and best[1] in NETWORK_FS else None


def _unescape_mount(text):
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def _is_under(path, point):
    return point == "/" or path == point or path.startswith(point.rstrip("/") + "/")
