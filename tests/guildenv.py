"""The reference peer: guildai 0.9.0 in a virtual environment of its own.

runq never imports guild; tests that compare with Guild run this venv's
python (or its `guild` script) as a separate process. The venv is created
on first use, at $RUNQ_GUILD_VENV or <repo>/.venv-guild, and reused.
"""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

GUILD_VERSION = "0.9.0"
REPO = Path(__file__).resolve().parent.parent


def venv_dir():
    return Path(os.environ.get("RUNQ_GUILD_VENV") or REPO / ".venv-guild")


def guild_python():
    """Path of a python that can `import guild` (guildai 0.9.0)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    marker = venv / f".guildai-{GUILD_VERSION}"
    if marker.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            _create(venv, python)
            marker.touch()
    return python


def guild_script():
    return guild_python().parent / "guild"


def _create(venv, python):
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"guildai=={GUILD_VERSION}"],
        check=True,
    )
