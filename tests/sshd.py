"""A private OpenSSH server on 127.0.0.1 for the remote tests.

Its own host key, client key, `sshd_config` and `known_hosts`, all in a
temporary directory; the login user is the current user. The client side
is an ssh config file (`ssh_config`) that runq is pointed at through
`RUNQ_SSH_CONFIG`, so host keys are checked strictly against the server's
real key and nothing of the user's own ~/.ssh is read or written.
"""

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import debian

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10


@dataclass
class Sshd:
    root: Path
    port: int
    user: str
    client_key: Path  # authorized
    stranger_key: Path  # not authorized
    ssh_config: Path
    process: subprocess.Popen

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _installed():
    return os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")


def install_openssh():
    debian.install_missing("openssh", ["openssh-server", "openssh-client"], _installed)


def unavailable_reason():
    """Why the tests cannot run an sshd here, or None."""
    install_openssh()
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "OpenSSH server and client are not installed (apt-get install openssh-server openssh-client)"
    if os.geteuid() != 0 and not os.path.isdir("/run/sshd"):
        return "sshd needs /run/sshd, which only root can create"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _write_server_config(root, port):
    lines = [
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {root / 'host_key'}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        f"PermitRootLogin {'yes' if os.geteuid() == 0 else 'no'}",
        "MaxSessions 50",
        "LogLevel INFO",  # one "Accepted publickey" line per connection
    ]
    (root / "sshd_config").write_text("\n".join(lines) + "\n")


def _write_client_config(root, port):
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    lines = [
        "Host *",
        f"  UserKnownHostsFile {root / 'known_hosts'}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
    ]
    (root / "ssh_config").write_text("\n".join(lines) + "\n")


def _wait_listening(port, process):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("sshd did not start listening")


def start(root):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    _keygen(root / "host_key")
    client_key = _keygen(root / "client_key")
    stranger_key = _keygen(root / "stranger_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = free_port()
    _write_server_config(root, port)
    _write_client_config(root, port)
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(root / "sshd.log", "w"),
    )
    _wait_listening(port, process)
    return Sshd(root, port, getpass.getuser(), client_key, stranger_key, root / "ssh_config", process)
