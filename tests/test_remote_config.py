"""Remotes as Guild configures them, and the command lines runq builds for
them: no network here (tests/test_remote_ssh.py runs them for real)."""

import os
import shlex
import subprocess

import pytest
from typer.testing import CliRunner

from guildenv import guild_script

from runq.commands.app import app
from runq.engine.remote import (
    RemoteError,
    SshRemote,
    activation_lines,
    remote_for_name,
    remote_script,
    ssh_options,
    user_config_path,
)

CONFIG = """
remotes:
  base:
    type: ssh
    host: gpu.example.com
    user: al
    private-key: keys/id_gpu
    connect-timeout: 5
  gpu:
    extends: base
    port: 2222
    venv-path: /opt/envs/ml/
    runq-path: /opt/runq/bin/runq
  gpu2:
    extends: [gpu]
    host: gpu2.example.com
    guild-home: ~/my guild
  conda:
    type: ssh
    host: c.example.com
    conda-env: /opt/conda/envs/train
  conda-named:
    type: ssh
    host: c.example.com
    conda-env: train
  proxied:
    extends: shared
    host: p.example.com
    guild-env: /srv/env
  bucket:
    type: s3
    bucket: my-runs
  spot:
    type: ec2
  no-host:
    type: ssh
  loop-a:
    extends: loop-b
  loop-b:
    extends: loop-a
  orphan:
    extends: nowhere
config:
  shared:
    type: ssh
    proxy: nc -X 5 -x socks:1080 %h %p
    private-key: $KEY_DIR/id
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "cfg" / "config.yml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def remote(name, config, **environ):
    return remote_for_name(name, {"GUILD_CONFIG": str(config), **environ}, cwd=str(config.parent))


# Where the config is


def test_config_path_is_guild_config_env_then_cwd_file_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cwd = tmp_path / "project"
    cwd.mkdir()
    assert user_config_path({}, str(cwd)) == str(tmp_path / "home" / ".guild" / "config.yml")
    (cwd / "guild-config.yml").write_text("remotes: {}\n")
    assert user_config_path({}, str(cwd)) == str(cwd / "guild-config.yml")
    assert user_config_path({"GUILD_CONFIG": "/etc/g.yml"}, str(cwd)) == "/etc/g.yml"


# Keys, extends, the Guild home


def test_configured_remote_with_extends(config):
    gpu = remote("gpu", config)
    assert gpu == SshRemote(
        name="gpu",
        host="gpu.example.com",
        user="al",
        port=2222,
        private_key=str(config.parent / "keys" / "id_gpu"),  # relative to the config file
        connect_timeout=5,
        venv_path="/opt/envs/ml/",
        guild_home="/opt/envs/ml/.guild",  # the venv's .guild
        runq_path="/opt/runq/bin/runq",
    )
    gpu2 = remote("gpu2", config)
    assert (gpu2.host, gpu2.port, gpu2.user, gpu2.guild_home) == ("gpu2.example.com", 2222, "al", "~/my guild")


def test_extends_an_item_of_the_config_section(config):
    proxied = remote("proxied", config)
    assert proxied.proxy == "nc -X 5 -x socks:1080 %h %p"
    assert proxied.venv_path == "/srv/env" and proxied.guild_home == "/srv/env/.guild"  # guild-env: venv-path's alias


def test_private_key_expands_variables_and_user(tmp_path, monkeypatch):
    monkeypatch.setenv("KEY_DIR", "/keys")
    monkeypatch.setenv("HOME", "/home/al")
    path = tmp_path / "config.yml"
    path.write_text("remotes:\n  a: {type: ssh, host: h, private-key: $KEY_DIR/id}\n  b: {type: ssh, host: h, private-key: ~/k}\n")
    assert remote("a", path).private_key == "/keys/id"
    assert remote("b", path).private_key == "/home/al/k"


@pytest.mark.parametrize(
    "name, guild_home",
    [("conda", "/opt/conda/envs/train/.guild"), ("base", ".guild"), ("gpu2", "~/my guild")],
)
def test_guild_home_as_guild_resolves_it(config, name, guild_home):
    assert remote(name, config).guild_home == guild_home


def test_inline_specs(config):
    assert remote("ssh:box", config) == SshRemote("ssh:box", "box")
    spec = remote("ssh:al@box:2200", config)
    assert (spec.user, spec.host, spec.port, spec.guild_home) == ("al", "box", 2200, ".guild")
    with_env = remote("ssh:box:22:/srv/env", config)
    assert (with_env.port, with_env.venv_path, with_env.guild_home) == (22, "/srv/env", "/srv/env/.guild")


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("nowhere", ["remote 'nowhere' is not defined", "config.yml"]),
        ("spot", ["type 'ec2'", "does not support yet"]),
        ("gist:someone/runs", ["type 'gist'", "does not support yet"]),
        ("no-host", ["missing required config: host"]),
        ("conda-named", ["conda-env 'train'", "guild-home"]),
        ("orphan", ["cannot find 'nowhere'"]),
        ("loop-a", ["extends itself"]),
        ("ssh:", ["invalid ssh spec"]),
    ],
)
def test_bad_remotes(config, name, fragments):
    with pytest.raises(RemoteError) as error:
        remote(name, config)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_cli_reports_an_unknown_remote_on_one_line(config):
    result = CliRunner().invoke(app, ["runs", "purge", "-r", "nowhere", "-y"], env={"GUILD_CONFIG": str(config)})
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runq: remote 'nowhere' is not defined"), result.stderr


def test_a_local_home_with_a_remote_is_refused(config):
    result = CliRunner().invoke(app, ["-H", "/tmp", "runs", "list", "-r", "gpu"], env={"GUILD_CONFIG": str(config)})
    assert result.exit_code == 1
    assert result.stderr.startswith("runq: -H/--guild-home and --index name a home here")


def test_cli_reports_an_unreadable_config(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("remotes: [unclosed\n")
    result = CliRunner().invoke(app, ["runs", "list", "-r", "gpu"], env={"GUILD_CONFIG": str(path)})
    assert result.exit_code == 1
    assert result.stderr.startswith("runq: cannot read Guild config") and len(result.stderr.splitlines()) == 1


# The command line there


def test_remote_script_activates_with_dot_and_quotes_every_word():
    gpu = SshRemote("gpu", "h", venv_path="/opt/my envs/ml", guild_home="~/runs; rm -rf /")
    script = remote_script(gpu, ["runq", "runs", "list", "-F", "loss < 0.5 and label = 'a b'", "--", "$(reboot)"])
    assert script == (
        "set -e; . '/opt/my envs/ml'/bin/activate; export GUILD_HOME=\"$HOME\"/'runs; rm -rf /'; "
        "exec runq runs list -F 'loss < 0.5 and label = '\"'\"'a b'\"'\"'' -- '$(reboot)'"
    )
    # The words arrive as they were given.
    words = shlex.split(script.split("exec ", 1)[1])
    assert words == ["runq", "runs", "list", "-F", "loss < 0.5 and label = 'a b'", "--", "$(reboot)"]


def test_activation_follows_guilds_order():
    assert activation_lines(SshRemote("a", "h", venv_activate="source ~/x/activate", conda_env="/c", venv_path="/v")) == [
        "source ~/x/activate"
    ]
    conda = activation_lines(SshRemote("a", "h", conda_env="/opt/conda/envs/t", venv_path="/v"))
    assert conda[0].startswith(". /opt/conda/envs/t/etc/profile.d/conda.sh") and conda[1] == "conda activate /opt/conda/envs/t"
    assert activation_lines(SshRemote("a", "h")) == []


def test_ssh_options_batch_mode_timeout_and_no_host_key_override():
    gpu = SshRemote("gpu", "h", user="al", port=2222, private_key="/k", proxy="nc %h %p")
    options = ssh_options(gpu, "/tmp/x/master", {"RUNQ_SSH_CONFIG": "/etc/test_ssh_config"})
    assert options == [
        "-oBatchMode=yes",
        "-oConnectTimeout=10",
        "-oControlPath=/tmp/x/master",
        "-F",
        "/etc/test_ssh_config",
        "-p",
        "2222",
        "-i",
        "/k",
        "-oProxyCommand=nc %h %p",
    ]
    assert not any("StrictHostKeyChecking" in option for option in options)


# --ids-from-stdin: what the remote runs after the confirmation here


def test_ids_from_stdin_acts_only_on_those_that_still_pass(tmp_path):
    from test_cli import dir_names, make_home, runq

    manifest = make_home(tmp_path, runs=12, seed=3, deleted_fraction=0.5)
    deleted = [r.id for r in manifest.deleted]
    trash = tmp_path / "trash" / "runs"
    confirmed = deleted[:3] + ["f" * 32]  # one id that is not (or no longer) there
    result = runq(tmp_path, "runs", "purge", "-y", "--ids-from-stdin", input="\n".join(confirmed) + "\n")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 run(s)" in result.stderr and "ffffffff" in result.stderr
    assert dir_names(trash) == sorted(deleted[3:])


# Guild accepts a config with runq's key


GUILD_READABLE = """
remotes:
  base: {type: ssh, host: gpu.example.com, user: al}
  gpu: {extends: base, venv-path: /opt/envs/ml, runq-path: /opt/runq/bin/runq}
"""


def test_guild_reads_a_config_with_runq_path(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(GUILD_READABLE)
    result = subprocess.run(
        [str(guild_script()), "remotes"],
        env={**os.environ, "GUILD_CONFIG": str(config), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "gpu" in result.stdout and "ssh" in result.stdout

