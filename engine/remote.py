"""Remotes as Guild configures them, and running a command on one over ssh.

The configuration is Guild's user config (`remotes:` in `config.yml`, with
`extends:` between items), found as Guild 0.9.0 finds it; a name that is
not configured is tried as an inline spec (`ssh:[USER@]HOST[:PORT]`,
`s3:BUCKET[/ROOT]`). ssh remotes are handled here, S3 remotes in remote_s3.

A command runs as one shell command line on the remote host: the remote
environment activated with POSIX `.`, `GUILD_HOME` exported, then the
program, every word quoted. One ssh master connection (in a private
directory, persisting briefly) carries every command of a session, so a
select-confirm-act round costs one handshake.
"""

import codecs
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

import yaml

from .errors import RunqError

DEFAULT_CONNECT_TIMEOUT = 10  # seconds, as Guild's ssh remotes
CONTROL_PERSIST = 30  # seconds a forgotten master connection outlives its last use
SSH_CONFIG_ENV = "RUNQ_SSH_CONFIG"  # an ssh config file (`ssh -F`) instead of ~/.ssh/config
STDIN_WORDS = object()  # an argv element replaced by the words read from stdin
SSH_FAILED = 255


class RemoteError(RunqError):
    """A remote that is not configured, cannot be reached, or whose command failed."""

    def __init__(self, message, hint=None, exit_code=1):
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


@dataclass(frozen=True)
class SshRemote:
    name: str
    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    private_key: Optional[str] = None
    connect_timeout: Optional[int] = None
    proxy: Optional[str] = None
    venv_path: Optional[str] = None
    venv_activate: Optional[str] = None
    conda_env: Optional[str] = None
    guild_home: str = ".guild"
    runq_path: Optional[str] = None

    @property
    def destination(self):
        return f"{self.user}@{self.host}" if self.user else self.host


# Guild's user config


def user_config_path(environ, cwd):
    """`$GUILD_CONFIG`, else `guild-config.yml` in the current directory if
    it exists, else `~/.guild/config.yml` (Guild's `config.user_config_path`)."""
    if environ.get("GUILD_CONFIG"):
        return environ["GUILD_CONFIG"]
    in_cwd = os.path.join(cwd, "guild-config.yml")
    if os.path.exists(in_cwd):
        return in_cwd
    return os.path.join(os.path.expanduser("~"), ".guild", "config.yml")


def read_user_config(path):
    """The config's data, `{}` if there is no file (as Guild)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as e:
        raise RemoteError(f"cannot read Guild config {path}: {' '.join(str(e).split())}") from None
    return data if isinstance(data, dict) else {}


def configured_remote(data, name, path):
    """The `remotes:` item `name` with `extends:` applied as Guild applies
    it (parents from `remotes:` or `config:`), or None."""
    section = data.get("remotes") or {}
    if not isinstance(section, dict):
        raise RemoteError(f"'remotes' in {path} is not a mapping")
    if name not in section:
        return None
    shared = data.get("config") if isinstance(data.get("config"), dict) else {}
    return _extended(name, section[name], section, shared, path, ())


def _extended(name, item, section, shared, path, seen):
    if not isinstance(item, dict):
        return item
    if name in seen:
        raise RemoteError(f"'{name}' in {path} extends itself")
    parents = item.get("extends") or []
    result = {k: v for k, v in item.items() if k != "extends"}
    for parent_name in [parents] if isinstance(parents, str) else parents:
        parent = section.get(parent_name, shared.get(parent_name))
        if parent is None:
            raise RemoteError(f"cannot find '{parent_name}' in {path}")
        _merge_missing(_extended(parent_name, parent, section, shared, path, seen + (name,)), result)
    return result


def _merge_missing(parent, target):
    """Guild's inheritance: the child's values win; nested mappings merge."""
    if not isinstance(parent, dict):
        return
    for key, value in parent.items():
        if key not in target:
            target[key] = value
        elif isinstance(value, dict) and isinstance(target[key], dict):
            _merge_missing(value, target[key])


# Remotes by name


def remote_for_name(name, environ=None, cwd=None):
    environ = os.environ if environ is None else environ
    path = user_config_path(environ, cwd or os.getcwd())
    item = configured_remote(read_user_config(path), name, path)
    if item is not None:
        return remote_from_config(name, item, path)
    return remote_from_spec(name, path)


def remote_from_config(name, item, path):
    if not isinstance(item, dict):
        raise RemoteError(f"remote '{name}' in {path} is not a mapping")
    if "type" not in item:
        raise RemoteError(f"remote '{name}' in {path} is missing required config: type")
    if item["type"] == "s3":
        from . import remote_s3  # imports this module

        return remote_s3.remote_from_config(name, item, path)
    _require_ssh(name, item["type"], path)
    if "host" not in item:
        raise RemoteError(f"remote '{name}' in {path} is missing required config: host")
    return SshRemote(
        name=name,
        host=str(item["host"]),
        user=_text(item.get("user")),
        port=_number(name, item, "port", path),
        private_key=_config_relative(item.get("private-key"), path),
        connect_timeout=_number(name, item, "connect-timeout", path),
        proxy=_text(item.get("proxy")),
        venv_path=_text(item.get("venv-path") or item.get("guild-env")),
        venv_activate=_text(item.get("venv-activate")),
        conda_env=_text(item.get("conda-env")),
        guild_home=guild_home_for(name, item),
        runq_path=_text(item.get("runq-path")),
    )


def _require_ssh(name, remote_type, path):
    if remote_type != "ssh":
        raise RemoteError(
            f"remote '{name}' has type '{remote_type}', which runq does not support yet",
            hint=f"only ssh and s3 remotes are supported; use guild for this one ({path})",
        )


def _text(value):
    return None if value is None else str(value)


def _number(name, item, key, path):
    value = item.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RemoteError(f"remote '{name}' in {path}: {key} must be a number, not {value!r}") from None


def _config_relative(value, config_path):
    """Guild's `remote_util.config_path`: `~` and `$VAR` expanded, relative
    to the config file's directory."""
    if value is None:
        return None
    expanded = os.path.expanduser(os.path.expandvars(str(value)))
    return os.path.abspath(os.path.join(os.path.dirname(config_path), expanded))


def guild_home_for(name, item):
    """The remote's Guild home as Guild resolves it: `guild-home`, else the
    conda env's `.guild`, else the venv's, else `.guild` in the login directory."""
    if item.get("guild-home"):
        return str(item["guild-home"])
    conda_env = item.get("conda-env")
    if conda_env is not None:
        if "/" not in str(conda_env):
            raise RemoteError(
                f"cannot determine Guild home of remote '{name}' from conda-env {conda_env!r}",
                hint="give conda-env as a path, or set guild-home",
            )
        return str(conda_env).rstrip("/") + "/.guild"
    venv = item.get("venv-path") or item.get("guild-env")
    return str(venv).rstrip("/") + "/.guild" if venv else ".guild"


SPEC_PATTERN = re.compile(r"(?:(\w+)@)?([^/:]+)(?::(\d+))?(?::(.+))?$")  # Guild's ssh spec


def remote_from_spec(name, config_path):
    match = re.match(r"([\w-]+):(.*)", name)
    if not match:
        raise RemoteError(
            f"remote '{name}' is not defined",
            hint=f"configure it under 'remotes:' in {config_path}, or give ssh:[USER@]HOST[:PORT] or s3:BUCKET[/ROOT]",
        )
    remote_type, spec = match.groups()
    if remote_type == "s3":
        from . import remote_s3  # imports this module

        return remote_s3.remote_from_spec(spec, config_path)
    _require_ssh(name, remote_type, config_path)
    parts = SPEC_PATTERN.match(spec)
    if not parts:
        raise RemoteError(f"invalid ssh spec '{spec}'", hint="expected format [USER@]HOST[:PORT][:ENV_PATH]")
    user, host, port, venv = parts.groups()
    guild_home = guild_home_for(name, {"venv-path": venv})
    return SshRemote(name, host, user, int(port) if port else None, venv_path=venv, guild_home=guild_home)


# The remote command line


def shell_path(path):
    """`path` quoted for the remote shell, keeping a leading `~/` meaning
    the remote user's home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def activation_lines(remote):
    """Guild's order: `venv-activate` as written, else the conda env, else the venv."""
    if remote.venv_activate:
        return [remote.venv_activate]
    if remote.conda_env:
        env = shell_path(remote.conda_env)
        return [
            f". {env}/etc/profile.d/conda.sh >/dev/null 2>&1 || . {env}/../../etc/profile.d/conda.sh >/dev/null 2>&1",
            f"conda activate {env}",
        ]
    if remote.venv_path:
        return [f". {shell_path(remote.venv_path)}/bin/activate"]
    return []


def _word(arg):
    return "$(cat)" if arg is STDIN_WORDS else shlex.quote(arg)


def remote_script(remote, argv):
    """One shell command line: activate, export GUILD_HOME, exec argv[0]
    (a path, `~/` allowed) with every other word quoted."""
    program = shell_path(argv[0])
    command = " ".join(["exec", program] + [_word(arg) for arg in argv[1:]])
    return "; ".join(["set -e", *activation_lines(remote), f"export GUILD_HOME={shell_path(remote.guild_home)}", command])


def locate_script(remote):
    """Prints which program answers there: runq, else guild, else none."""
    runq = shell_path(remote.runq_path or "runq")
    found = (
        f"if command -v {runq} >/dev/null 2>&1; then echo runq; "
        "elif command -v guild >/dev/null 2>&1; then echo guild; else echo none; fi"
    )
    return "; ".join(["set -e", *activation_lines(remote), found])


# ssh


SSH_FAILURES = (  # what ssh's last words mean, most specific first
    ("Permission denied", "authentication refused by {host}"),
    ("Host key verification failed", "host key verification failed for {host}"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host key verification failed for {host}"),
    ("Connection refused", "cannot reach {host}: connection refused"),
    ("timed out", "cannot reach {host}: connection timed out"),
    ("Could not resolve hostname", "cannot reach {host}: unknown host"),
    ("No route to host", "cannot reach {host}: no route to host"),
)


def ssh_failure_message(remote, stderr_text):
    target = remote.host if remote.port is None else f"{remote.host} port {remote.port}"
    for fragment, message in SSH_FAILURES:
        if fragment in stderr_text:
            return message.format(host=target)
    last = next((line for line in reversed(stderr_text.strip().splitlines()) if line.strip()), "no details")
    return f"ssh to {target} failed: {last.strip()}"


def ssh_options(remote, control_path, environ):
    options = ["-oBatchMode=yes", f"-oConnectTimeout={remote.connect_timeout or DEFAULT_CONNECT_TIMEOUT}"]
    options.append(f"-oControlPath={control_path}")
    if environ.get(SSH_CONFIG_ENV):
        options += ["-F", environ[SSH_CONFIG_ENV]]
    if remote.port:
        options += ["-p", str(remote.port)]
    if remote.private_key:
        options += ["-i", remote.private_key]
    if remote.proxy:
        options.append(f"-oProxyCommand={remote.proxy}")
    return options


class SshSession:
    """One master connection to a remote, and commands run through it."""

    def __init__(self, remote, environ=None):
        self.remote = remote
        self.environ = os.environ if environ is None else environ
        self._dir = None

    def __enter__(self):
        self._dir = tempfile.mkdtemp(prefix="runq-ssh-")  # private (0700): holds the control socket
        try:
            self._open_master()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        return self

    def __exit__(self, *_exc):
        try:
            subprocess.run(self._ssh("-Oexit"), stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass  # ControlPersist ends it anyway
        shutil.rmtree(self._dir, ignore_errors=True)

    def _ssh(self, *extra):
        control_path = os.path.join(self._dir, "master")
        return ["ssh", *ssh_options(self.remote, control_path, self.environ), *extra, "--", self.remote.destination]

    def _open_master(self):
        # -f: ssh returns once authenticated and keeps the connection in the
        # background; its output goes to a file, not to a pipe it would hold open.
        command = self._ssh("-oControlMaster=yes", f"-oControlPersist={CONTROL_PERSIST}", "-fN")
        timeout = 2 * (self.remote.connect_timeout or DEFAULT_CONNECT_TIMEOUT) + 20
        with tempfile.TemporaryFile() as errors:
            try:
                status = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=errors, timeout=timeout).returncode
            except FileNotFoundError:
                raise RemoteError("ssh is not installed", hint="install OpenSSH's client") from None
            except subprocess.TimeoutExpired:
                raise RemoteError(f"no answer from {self.remote.host} within {timeout} s", exit_code=SSH_FAILED) from None
            errors.seek(0)
            text = errors.read().decode(errors="replace")
        if status != 0:
            raise RemoteError(ssh_failure_message(self.remote, text), exit_code=status)

    def run(self, argv, stdin_text=None, capture=False):
        """(exit status, stdout if captured): argv run there; its stderr (and
        its stdout unless captured) copied here as it comes."""
        command = self._ssh("-oControlMaster=no") + [remote_script(self.remote, argv)]
        return run_streaming(command, stdin_text, capture)

    def locate(self):
        """'runq', 'guild' or 'none': what answers run commands there."""
        command = self._ssh("-oControlMaster=no") + [locate_script(self.remote)]
        found = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
        if found.returncode != 0:
            why = " ".join(found.stderr.decode(errors="replace").split()) or f"exit status {found.returncode}"
            raise RemoteError(f"setting up the environment on {self.remote.host} failed: {why}",
                              hint="check venv-path, venv-activate or conda-env", exit_code=found.returncode)
        return found.stdout.decode(errors="replace").strip() or "none"


def _pump(source, target):
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two chunks
    for chunk in iter(lambda: source.read1(65536), b""):
        target.write(decoder.decode(chunk))
        target.flush()


def _feed(sink, text):
    try:
        sink.write(text.encode())
        sink.close()
    except BrokenPipeError:
        pass  # the remote stopped reading: its exit status says why


def run_streaming(command, stdin_text, capture):
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    helpers = [threading.Thread(target=_pump, args=(process.stderr, sys.stderr), daemon=True)]
    if stdin_text is not None:
        helpers.append(threading.Thread(target=_feed, args=(process.stdin, stdin_text), daemon=True))
    for helper in helpers:
        helper.start()
    out = process.stdout.read() if capture else _pump(process.stdout, sys.stdout)
    for helper in helpers:
        helper.join()
    return process.wait(), out
