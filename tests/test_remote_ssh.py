"""`-r/--remote` for real: an OpenSSH server on 127.0.0.1 (tests/sshd.py),
the remote's runq from this test environment's venv, its Guild home a
generated one, and the same home copied here as the reference: what runq
selects and changes there must be what it selects and changes here."""

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

import sshd
from guildenv import venv_dir
from test_cli import assert_one_line_error, dir_names, disk_state, make_home, runq

RUNQ_VENV = Path(sys.executable).parent.parent  # the remote's runq: the one installed here (pip install .)


def _unavailable_reason():
    if not (RUNQ_VENV / "bin" / "runq").exists():
        return f"runq is not installed in {RUNQ_VENV} (pip install '.[test]')"
    return sshd.unavailable_reason()


pytestmark = pytest.mark.skipif(_unavailable_reason() is not None, reason=str(_unavailable_reason()))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = sshd.start(tmp_path_factory.mktemp("sshd"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def seed_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("seed")
    make_home(root, runs=48, seed=11, deleted_fraction=0.5)
    return root


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory, server, seed_home):
    """For the tests that change nothing."""
    return make_site(tmp_path_factory.mktemp("shared"), server, seed_home)


@pytest.fixture
def site(tmp_path, server, seed_home):
    """For a test that changes the homes."""
    return make_site(tmp_path, server, seed_home)


def make_site(tmp_path, server, seed_home):
    """A remote home, its copy here, and a Guild config naming remotes of every kind."""
    remote_home, local_home = tmp_path / "there", tmp_path / "here"
    shutil.copytree(seed_home, remote_home, symlinks=True)
    shutil.copytree(seed_home, local_home, symlinks=True)
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    key = os.path.relpath(server.client_key, config_dir)  # relative to the config file, as Guild reads it
    base = {"type": "ssh", "host": "127.0.0.1", "port": server.port, "user": server.user, "private-key": key}
    remotes = {
        "base": base,
        "box": {"extends": "base", "venv-path": str(RUNQ_VENV), "guild-home": str(remote_home)},
        "pinned": {"extends": "base", "runq-path": str(RUNQ_VENV / "bin" / "runq"), "guild-home": str(remote_home)},
        "g": {"extends": "base", "venv-path": str(venv_dir()), "guild-home": str(remote_home)},
        "stranger": {"extends": "box", "private-key": str(server.stranger_key)},
        "closed": {"extends": "box", "port": sshd.free_port()},
        "novenv": {"extends": "box", "venv-path": str(tmp_path / "no-such-venv")},
    }
    (config_dir / "config.yml").write_text(json.dumps({"remotes": remotes}))  # JSON is YAML
    env = {"GUILD_CONFIG": str(config_dir / "config.yml"), "RUNQ_SSH_CONFIG": str(server.ssh_config)}
    return remote_home, local_home, env


def there(site, *args, input=None):
    return runq(None, *args, input=input, env=site[2])


def here(site, *args, input=None):
    return runq(site[1], *args, input=input)


def without_dirs(text):
    return [{k: v for k, v in run.items() if k != "run_dir"} for run in json.loads(text)]


def handshakes(server):
    return (server.root / "sshd.log").read_text().count("Accepted publickey")


# Selections there are selections here


LIST_CASES = [
    (),
    ("--deleted", "-F", "loss < 0.5"),
    ("-Fo", "train", "-Fl", "-"),
    ("--started", "last 60 days", "--not-completed"),
    ("-a", "-Set", "--deleted"),
    ("--deleted", "2:5", "1"),
]


@pytest.mark.parametrize("args", LIST_CASES, ids=" ".join)
def test_list_there_equals_list_here(shared_site, args):
    remote = there(shared_site, "runs", "list", "-r", "box", "--json", *args)
    local = here(shared_site, "runs", "list", "--json", *args)
    assert remote.exit_code == local.exit_code == 0, remote.stderr
    assert without_dirs(remote.stdout) == without_dirs(local.stdout)
    assert remote.stderr == local.stderr


def test_dry_run_json_and_sql_over_a_remote(shared_site):
    args = ("-Fo", "train", "-F", "lr >= 0.001")
    remote = there(shared_site, "runs", "purge", "-r", "box", "--dry-run", "--json", *args)
    assert without_dirs(remote.stdout) == without_dirs(here(shared_site, "runs", "purge", "--dry-run", "--json", *args).stdout)
    assert there(shared_site, "runs", "purge", "-r", "box", "--sql", *args).stdout == here(shared_site, "runs", "purge", "--sql", *args).stdout


# Acting there, after asking here


def test_purge_asks_here_and_removes_exactly_the_selection_there_in_one_handshake(site, server):
    remote_home, local_home, _ = site
    trash_before = len(dir_names(remote_home / "trash" / "runs"))
    before = handshakes(server)
    remote = there(site, "runs", "purge", "-r", "box", "-Fo", "train", "-Se", input="y\n")
    assert remote.exit_code == 0, remote.stderr
    assert handshakes(server) - before == 1
    local = here(site, "runs", "purge", "-y", "-Fo", "train", "-Se")
    assert local.exit_code == 0
    assert "WARNING: You are about to permanently delete the following runs:" in remote.stderr
    assert "Permanently delete" in remote.stderr and "(y/N)" in remote.stderr
    assert dir_names(remote_home / "trash" / "runs") == dir_names(local_home / "trash" / "runs")
    assert 0 < len(dir_names(remote_home / "trash" / "runs")) < trash_before


def test_answering_no_changes_nothing_and_exits_4(shared_site):
    remote_home = shared_site[0]
    state = disk_state(remote_home)
    result = there(shared_site, "runs", "purge", "-r", "box", "1:5", input="n\n")
    assert result.exit_code == 4
    assert disk_state(remote_home) == state


def test_delete_then_restore_there_as_here(site):
    remote_home, local_home, _ = site
    deleted = there(site, "runs", "delete", "-r", "box", "-Sc", "1:4", input="\n")  # Delete's default is yes
    assert deleted.exit_code == 0, deleted.stderr
    assert here(site, "runs", "delete", "-y", "-Sc", "1:4").exit_code == 0
    restored = there(site, "runs", "restore", "-r", "box", "-y", "-Fo", "train")
    assert restored.exit_code == 0, restored.stderr
    assert here(site, "runs", "restore", "-y", "-Fo", "train").exit_code == 0
    for root in ("runs", "trash/runs"):
        assert dir_names(remote_home / root) == dir_names(local_home / root)


def test_index_there_with_runq_path(shared_site):
    result = there(shared_site, "index", "-r", "pinned")
    assert result.exit_code == 0, result.stderr
    assert f"Guild home:   {shared_site[0]}" in result.stdout


# A remote without runq: its guild


def test_guild_there_lists_and_purges(site):
    remote_home, local_home, _ = site
    listed = there(site, "runs", "list", "-r", "g", "-a", "--deleted", "-Fu")
    assert listed.exit_code == 0, listed.stderr
    local = here(site, "runs", "list", "--json", "--deleted", "-Fu")
    shown = [line.split("]")[0].split(":")[1] for line in listed.stdout.splitlines()]
    assert shown == [run["id"][:8] for run in json.loads(local.stdout)] and shown
    purged = there(site, "runs", "purge", "-r", "g", "-Fo", "train", input="y\n")
    assert purged.exit_code == 0, purged.stderr
    assert "Permanently delete" in purged.stderr
    assert here(site, "runs", "purge", "-y", "-Fo", "train").exit_code == 0
    assert dir_names(remote_home / "trash" / "runs") == dir_names(local_home / "trash" / "runs")


def test_guild_there_cannot_take_runq_only_options(shared_site):
    state = disk_state(shared_site[0])
    result = there(shared_site, "runs", "purge", "-r", "g", "--sql")
    line = assert_one_line_error(result, "runq is not installed on 127.0.0.1", "--sql", "runq-path")
    assert "remote 'g'" in line
    # Guild cannot say here which runs RUN arguments select, so it cannot be asked first.
    result = there(shared_site, "runs", "purge", "-r", "g", "1:3", input="y\n")
    assert_one_line_error(result, "runq is not installed on 127.0.0.1", "pass -y")
    assert disk_state(shared_site[0]) == state


# Errors, one line each


def test_nothing_listening(shared_site):
    result = there(shared_site, "runs", "list", "-r", "closed")
    assert_one_line_error(result, "cannot reach 127.0.0.1", "connection refused")
    assert result.exit_code == 255


def test_a_server_that_never_answers_times_out(shared_site, tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts; nobody ever speaks
        port = silent.getsockname()[1]
        config = tmp_path / "config.yml"
        config.write_text(f"remotes:\n  mute: {{type: ssh, host: 127.0.0.1, port: {port}, connect-timeout: 1}}\n")
        result = runq(None, "runs", "list", "-r", "mute", env={**shared_site[2], "GUILD_CONFIG": str(config)})
    assert_one_line_error(result, "cannot reach 127.0.0.1", "timed out")
    assert result.exit_code == 255


def test_authentication_refused(shared_site):
    result = there(shared_site, "runs", "list", "-r", "stranger")
    assert_one_line_error(result, "authentication refused by 127.0.0.1")
    assert result.exit_code == 255


def test_remote_command_failing_passes_its_error_and_status(shared_site):
    remote = there(shared_site, "runs", "list", "-r", "box", "-F", "loss <")
    local = here(shared_site, "runs", "list", "-F", "loss <")
    assert_one_line_error(remote)
    assert (remote.exit_code, remote.stderr) == (local.exit_code, local.stderr)


def test_environment_that_cannot_be_activated(shared_site):
    result = there(shared_site, "runs", "purge", "-r", "novenv", "-y")
    assert_one_line_error(result, "setting up the environment on 127.0.0.1 failed", "no-such-venv")

