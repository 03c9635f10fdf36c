"""A private PostgreSQL server for the tests that put an index in PostgreSQL.

The machine's own PostgreSQL binaries (Debian's `postgresql`, installed
when missing and this is root on a machine with apt), run as an
unprivileged user (`postgres` when the tests run as root, else the current
user) with its data, socket and log in a temporary directory, listening on
127.0.0.1 at a free high port, and ended by its pid. The server's one role
`runq` has a password, so tests can also try a wrong one.
"""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import debian
from sshd import free_port

START_TIMEOUT = 30
ROLE = "runq"
PASSWORD = "runq-test-password"


@dataclass
class Postgres:
    root: Path
    port: int
    bindir: Path
    process: subprocess.Popen
    user: str  # the system user the server runs as

    def url(self, database=ROLE, password=PASSWORD):
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql, database=ROLE):
        """Runs SQL as the server's superuser over its socket; returns stdout."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.root / "socket"), "-p", str(self.port), "-U", ROLE, "-d", database, "-c", sql],
            capture_output=True, text=True, check=True, env=_env(),
        )
        return result.stdout

    def create_database(self, name):
        """A new empty database; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"', database="postgres")
        return self.url(name)

    def stop(self):
        self.process.send_signal(signal.SIGINT)  # fast shutdown: sessions still open are ended
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return {**env, "LC_ALL": "C", "PGPASSWORD": PASSWORD}


def bindir():
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def install_postgresql():
    debian.install_missing("postgresql", ["postgresql"], bindir)


def unavailable_reason():
    """Why the tests cannot run a PostgreSQL server here, or None."""
    install_postgresql()
    if not bindir():
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and not _system_user():
        return "running as root and there is no unprivileged user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'runq[postgres]')"
    return None


def _system_user():
    """Who runs the server: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    return None


def _as_user(user):
    """A preexec function that drops root for `user`, or None when not root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user)

    def drop():
        os.setgid(entry.pw_gid)
        os.setgroups([])
        os.setuid(entry.pw_uid)

    return drop


def _own(root, user):
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for path in [root, *root.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        # The temporary directory's parents must let the server's user in.
        for parent in root.parents:
            if parent == Path("/tmp") or parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)


def _initdb(root, binaries, user):
    (root / "pwfile").write_text(PASSWORD + "\n")
    (root / "socket").mkdir()
    _own(root, user)
    subprocess.run(
        [str(binaries / "initdb"), "-D", str(root / "data"), "-U", ROLE, f"--pwfile={root / 'pwfile'}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
        check=True, capture_output=True, preexec_fn=_as_user(user), env=_env(), cwd=root,
    )


def _wait_ready(server):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = (server.root / "postgres.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"postgres exited with status {server.process.returncode}: {log}")
        try:
            server.psql("SELECT 1", database="postgres")
            return
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    raise RuntimeError("postgres did not start")


def start(root):
    """Starts a new server with its files in `root` (made here); returns a Postgres."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    binaries, user = bindir(), _system_user()
    _initdb(root, binaries, user)
    port = free_port()
    settings = {
        "listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(root / "socket"),
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "100",
        "shared_buffers": "64MB",
    }
    options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
    log = open(root / "postgres.log", "w")
    if os.geteuid() == 0:
        os.chown(root / "postgres.log", pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    process = subprocess.Popen(
        [str(binaries / "postgres"), "-D", str(root / "data"), *options],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_as_user(user), env=_env(), cwd=root,
    )
    server = Postgres(root, port, binaries, process, user)
    try:
        _wait_ready(server)
        server.psql(f'CREATE DATABASE "{ROLE}"', database="postgres")
    except BaseException:
        server.stop()
        raise
    return server
