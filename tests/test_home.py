"""Finding the Guild home as Guild 0.9.0 finds it (checked side by side with
`guild check` over a table of situations), refusing directories that are
not Guild homes, and where the index goes for homes runq cannot write in."""

import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from guildenv import guild_script  # noqa: E402

from runq.commands.app import app  # noqa: E402
from runq.engine.home import GuildHome, locate_index, network_fs_type, user_cache_index  # noqa: E402

RUNQ_SCRIPT = Path(sys.executable).parent / "runq"

# Each situation: directories to create (a `.guild` gets a `runs/` inside, as
# Guild leaves it), files to write, symlinks, the environment and the
# current directory. U is the user's home, P a project below it.
SITUATIONS = {
    "nothing: the user's default": dict(cwd="U/proj/sub"),
    "GUILD_HOME": dict(dirs=["gh", "U/.guild"], env={"GUILD_HOME": "{base}/gh"}, cwd="U/proj/sub"),
    ".guild of a parent": dict(dirs=["U/proj/.guild"], cwd="U/proj/sub"),
    "the nearest .guild wins": dict(dirs=["U/proj/.guild", "U/proj/sub/.guild"], cwd="U/proj/sub"),
    "a .guild file is passed over": dict(dirs=["U/proj/.guild"], files=["U/proj/sub/.guild"], cwd="U/proj/sub"),
    "the search stops at the user's home": dict(dirs=[".guild"], cwd="U/proj/sub"),
    "the user's home's own .guild": dict(dirs=["U/.guild"], cwd="U/proj/sub"),
    "a user's home that links to a link: resolved one step, as Guild does": dict(
        dirs=[".guild"], links={"link2": "U", "link1": "link2"}, env={"HOME": "{base}/link1"}, cwd="U/proj/sub"),
    "a user's home that links to it: the search stops there": dict(
        dirs=[".guild"], links={"link1": "U"}, env={"HOME": "{base}/link1"}, cwd="U/proj/sub"),
    "outside the user's home, up to /": dict(dirs=["out/.guild"], cwd="out/a/b"),
    "virtualenv with .guild": dict(dirs=["venv/.guild", "U/proj/.guild"], env={"VIRTUAL_ENV": "{base}/venv"},
                                   cwd="U/proj/sub"),
    "virtualenv without .guild": dict(dirs=["venv", "U/proj/.guild"], env={"VIRTUAL_ENV": "{base}/venv"},
                                      cwd="U/proj/sub"),
    "conda first, even without .guild": dict(
        dirs=["conda", "venv/.guild", "U/proj/.guild"],
        env={"CONDA_PREFIX": "{base}/conda", "VIRTUAL_ENV": "{base}/venv"}, cwd="U/proj/sub"),
    "conda with .guild": dict(dirs=["conda/.guild", "venv/.guild"],
                              env={"CONDA_PREFIX": "{base}/conda", "VIRTUAL_ENV": "{base}/venv"}, cwd="U"),
    "an env's .guild as a link: its real path": dict(
        dirs=["real/.guild", "venv"], links={"venv/.guild": "real/.guild"}, env={"VIRTUAL_ENV": "{base}/venv"},
        cwd="U"),
    "GUILD_HOME before an env": dict(dirs=["gh", "venv/.guild"],
                                     env={"GUILD_HOME": "{base}/gh", "VIRTUAL_ENV": "{base}/venv"}, cwd="U"),
    "pre-0.9 scheme: the env's, existing or not": dict(
        dirs=["venv", "U/proj/.guild"], env={"GUILD_HOME_SCHEME": "pre-0.9", "VIRTUAL_ENV": "{base}/venv"},
        cwd="U/proj/sub"),
    "pre-0.9 scheme: the user's": dict(dirs=["U/proj/.guild"], env={"GUILD_HOME_SCHEME": "pre-0.9"},
                                       cwd="U/proj/sub"),
    "pre-0.9 from the user config": dict(
        dirs=["U/.guild", "U/proj/.guild", "conda"], files={"U/.guild/config.yml": "legacy:\n  guild-home: pre-0.9\n"},
        env={"CONDA_PREFIX": "{base}/conda"}, cwd="U/proj/sub"),
    "pre-0.9 from guild-config.yml in the current directory": dict(
        dirs=["U/proj/sub/.guild"], files={"U/proj/sub/guild-config.yml": "legacy:\n  guild-home: pre-0.9\n"},
        cwd="U/proj/sub"),
    "pre-0.9 from GUILD_CONFIG": dict(
        dirs=["U/proj/.guild"], files={"cfg.yml": "legacy:\n  guild-home: pre-0.9\n"},
        env={"GUILD_CONFIG": "{base}/cfg.yml"}, cwd="U/proj/sub"),
    "an unknown scheme: the current one": dict(dirs=["U/proj/.guild"], env={"GUILD_HOME_SCHEME": "0.1"},
                                               cwd="U/proj/sub"),
    "an unreadable user config: the current scheme": dict(
        dirs=["U/.guild", "U/proj/.guild"], files={"U/.guild/config.yml": "legacy: [unclosed\n"},
        cwd="U/proj/sub"),
}


def build_situation(base, situation):
    base.mkdir(parents=True, exist_ok=True)
    (base / "U").mkdir(exist_ok=True)
    (base / situation["cwd"]).mkdir(parents=True, exist_ok=True)
    for rel in situation.get("dirs", ()):
        path = base / rel
        path.mkdir(parents=True, exist_ok=True)
        if path.name in (".guild", "gh"):
            (path / "runs").mkdir(exist_ok=True)
    files = situation.get("files", {})
    for rel in files:
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(files[rel] if isinstance(files, dict) else "")
    for link, target in situation.get("links", {}).items():
        (base / link).symlink_to(base / target)
    env = {name: value.format(base=base) for name, value in situation.get("env", {}).items()}
    return {"PATH": os.environ["PATH"], "HOME": str(base / "U"), "NO_COLOR": "1", **env}, base / situation["cwd"]


def guild_home_of_guild(env, cwd):
    done = subprocess.run([str(guild_script()), "check", "--offline"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return re.search(r"^guild_home:\s+(.*)$", done.stdout, re.M).group(1)


GUILD_VARIABLES = ("GUILD_HOME", "GUILD_HOME_SCHEME", "GUILD_CONFIG", "VIRTUAL_ENV", "CONDA_PREFIX",
                   "XDG_CACHE_HOME", "RUNQ_INDEX")


def guild_home_of_runq(env, cwd, monkeypatch):
    """The home `runq index` uses (in-process, in `cwd`, with only `env`'s
    Guild variables), or the one it says does not exist."""
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, ["index"], env={**dict.fromkeys(GUILD_VARIABLES), **env})
    gc.collect()
    if result.exit_code == 0:
        return re.search(r"^Guild home:\s+(.*) \(", result.stdout, re.M).group(1)
    return re.fullmatch(r"runq: Guild home (.*) does not exist .*\n", result.stderr).group(1)


@pytest.mark.parametrize("name", list(SITUATIONS))
def test_home_is_the_one_guild_finds(tmp_path, monkeypatch, name):
    env, cwd = build_situation(tmp_path / "base", SITUATIONS[name])
    expected = guild_home_of_guild(env, cwd)
    assert guild_home_of_runq(env, cwd, monkeypatch) == expected


def test_guild_home_option_beats_every_other_rule(tmp_path):
    env, cwd = build_situation(tmp_path / "base", SITUATIONS["conda with .guild"])
    given = tmp_path / "given"
    (given / "runs").mkdir(parents=True)
    env["GUILD_HOME"] = str(tmp_path / "base" / "conda" / ".guild")
    done = subprocess.run([str(RUNQ_SCRIPT), "-H", str(given), "index"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"Guild home:   {given} (given with -H)" in done.stdout


@pytest.mark.parametrize(
    "source, words",
    [
        ("option", "given with -H"),
        ("GUILD_HOME", "from $GUILD_HOME"),
        ("VIRTUAL_ENV", "in the activated virtual environment"),
        ("pre-0.9", "Guild's pre-0.9 scheme"),
        ("found", "the nearest .guild above the current directory"),
        ("user", "the user's default"),
    ],
)
def test_describe_names_the_home_and_how_it_was_found(source, words):
    assert GuildHome(Path("/x/.guild"), source).describe() == f"Guild home /x/.guild ({words})"


# Directories that are not Guild homes


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def run_cli(*args, env=None):
    return subprocess.run([str(RUNQ_SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def assert_one_line(done, *fragments):
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("runq: "), done.stderr
    for fragment in fragments:
        assert fragment in done.stderr


@pytest.mark.parametrize("command", [["index"], ["runs", "list"], ["runs", "purge", "-y"], ["sql", "SELECT 1"]])
def test_a_directory_that_is_not_a_guild_home_is_refused_and_left_alone(tmp_path, command):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "src").mkdir()
    before = _tree(tmp_path)
    assert_one_line(run_cli("-H", str(tmp_path), *command), str(tmp_path), "not a Guild home")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("entry", ["runs", "trash", "cache"])
def test_any_of_guilds_directories_makes_a_home(tmp_path, entry):
    (tmp_path / entry).mkdir()
    done = run_cli("-H", str(tmp_path), "runs", "list")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("root", ["runs", "trash", "trash/runs"])
def test_a_run_root_that_is_a_file_is_one_line_not_zero_runs(tmp_path, root):
    (tmp_path / "trash").mkdir()
    (tmp_path / "runs").mkdir(exist_ok=True)
    target = tmp_path / root
    if target.is_dir():
        target.rmdir()
    target.write_text("")
    assert_one_line(run_cli("-H", str(tmp_path), "runs", "list"), str(target), "not a directory")
    assert not (tmp_path / "cache").exists()


def test_a_current_directory_that_was_removed_is_one_line_unless_the_home_is_given(tmp_path):
    gone = tmp_path / "gone"
    (tmp_path / "home" / "runs").mkdir(parents=True)
    script = f'mkdir "{gone}" && cd "{gone}" && rmdir "{gone}" && exec "$0" "$@"'
    env = {**os.environ, "GUILD_HOME": ""}
    done = subprocess.run(["sh", "-c", script, str(RUNQ_SCRIPT), "runs", "list"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert_one_line(done, "the current directory no longer exists")
    given = subprocess.run(["sh", "-c", script, str(RUNQ_SCRIPT), "-H", str(tmp_path / "home"), "index"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert given.returncode == 0, given.stderr


def test_a_home_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "home").write_text("")
    assert_one_line(run_cli("-H", str(tmp_path / "home"), "index"), "is not a directory")


# Where the index goes


MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/vda1 / ext4 rw,relatime 0 0
server:/export /mnt/data nfs4 rw,vers=4.2 0 0
server:/export/fast /mnt/data/fast ext4 rw 0 0
//nas/share /mnt/smb cifs rw 0 0
me@host:/x /home/me/remote fuse.sshfs rw 0 0
server:/s /mnt/with\\040space nfs rw 0 0
tmpfs /mnt/datax tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/home/me/.guild", None),
        ("/mnt/data", "nfs4"),
        ("/mnt/data/proj/.guild", "nfs4"),
        ("/mnt/data/fast/.guild", None),  # a local mount below the NFS one
        ("/mnt/datax/.guild", None),  # a name that only starts like an NFS mount point
        ("/mnt/smb/guild", "cifs"),
        ("/home/me/remote/.guild", "fuse.sshfs"),
        ("/mnt/with space/.guild", "nfs"),
    ],
)
def test_network_file_systems_are_found_in_the_mounts_table(path, expected):
    assert network_fs_type(path, MOUNTS) == expected


def test_a_home_on_nfs_keeps_its_index_in_the_user_cache(tmp_path):
    home = GuildHome(tmp_path / "home")
    (home.path / "runs").mkdir(parents=True)
    mounts = f"/dev/vda1 / ext4 rw 0 0\nserver:/e {tmp_path} nfs4 rw 0 0\n"
    env = {"HOME": str(tmp_path / "user"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    location = locate_index(home, environ=env, mounts=mounts)
    assert location.path == user_cache_index(home, env)
    assert location.path.parent.parent == tmp_path / "xdg" / "runq"
    assert location.path.parent.name.endswith("-home") and location.owned
    assert "nfs4" in location.reason
    assert locate_index(home, environ=env, mounts="/dev/vda1 / ext4 rw 0 0\n").path == home.default_index_path
    without_xdg = locate_index(home, environ={"HOME": str(tmp_path / "user")}, mounts=mounts).path
    assert without_xdg.parent.parent == tmp_path / "user" / ".cache" / "runq"


def test_the_cache_key_tells_homes_of_the_same_name_apart(tmp_path):
    one, two = GuildHome(tmp_path / "a" / ".guild"), GuildHome(tmp_path / "b" / ".guild")
    env = {"HOME": str(tmp_path)}
    assert user_cache_index(one, env) != user_cache_index(two, env)
    assert user_cache_index(one, env) == user_cache_index(GuildHome(tmp_path / "a" / "x" / ".." / ".guild"), env)
