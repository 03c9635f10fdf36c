"""Debian packages the tests need, installed when missing and this is root
on a machine with apt (as CI and a fresh developer machine are), once,
whichever test process gets there first."""

import fcntl
import os
import shutil
import subprocess


def install_missing(name, packages, installed):
    """Installs `packages` unless `installed()` says they are there; `name`
    names the lock that lets only one test process install them."""
    if installed() or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    with open(f"/tmp/runq-tests-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, **quiet)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, **quiet)
