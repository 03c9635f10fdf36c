"""Ctrl-C and SIGTERM stop the installed `runq` at any moment: one line,
exit 130 or 143, no traceback, no process left behind, and an index that
the next command can use.

Each signal is sent at a delay counted from the moment runq's own handlers
are in place (read from /proc: SIGTERM becomes caught), which is its first
line of code: before that the interpreter itself is starting, and a signal
gets Python's default treatment.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robust_homes import NOW, alive, children_of, many_runs_home
from runq.engine.samplehome import HomeSpec, generate_home

RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
DELAYS = [float(d) for d in os.environ.get("RUNQ_SIGNAL_DELAYS", "0.01,0.3,1").split(",")]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """2000 small runs: a cold build takes long enough to be interrupted anywhere."""
    return many_runs_home(tmp_path_factory.mktemp("signals") / "home", 2000)


def handlers_installed(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def interrupt(args, signum, delay):
    """Runs the script, signals it `delay` s after its handlers are in; (process, out, err, children seen)."""
    process = subprocess.Popen(
        [str(RUNQ_SCRIPT), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    started = time.monotonic()
    while not handlers_installed(process.pid):
        if process.poll() is not None or time.monotonic() - started > 20:
            process.kill()
            raise AssertionError(f"runq never caught SIGTERM: {process.communicate()[1][-2000:]!r}")
        time.sleep(0.001)
    seen = set()
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and process.poll() is None:
        seen.update(children_of(process.pid))
        time.sleep(0.002)
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    return process, out, err, seen


def assert_stopped(process, out, err, seen, signum):
    if process.returncode == 0:  # it finished before the signal came
        assert b"Traceback" not in err
        return False
    assert process.returncode == EXIT_CODES[signum], err
    assert err.decode().splitlines()[-1:] == ["runq: interrupted"], err
    assert b"Traceback" not in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in seen):
        time.sleep(0.02)
    assert not [pid for pid in seen if alive(pid)], "children outlived runq"
    return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_listing_that_builds_the_index(home, tmp_path, signum):
    stopped = 0
    for number, delay in enumerate(DELAYS):
        args = ["-H", str(home), "--index", str(tmp_path / f"index-{number}.db"), "runs", "list", "-a"]
        stopped += assert_stopped(*interrupt(args, signum, delay), signum)
    assert stopped >= len(DELAYS) - 1  # a fast machine may finish before the last one
    after = subprocess.run([str(RUNQ_SCRIPT), *args], capture_output=True, timeout=120)  # an index left midway
    assert after.returncode == 0, after.stderr
    assert len(after.stdout.splitlines()) == len(os.listdir(home / "runs"))


def test_a_signal_stops_a_rebuild(home, tmp_path):
    index = tmp_path / "index.db"
    args = ["-H", str(home), "--index", str(index), "index", "--rebuild"]
    stopped = 0
    for delay, signum in zip(DELAYS, [signal.SIGINT, signal.SIGTERM] * len(DELAYS)):
        stopped += assert_stopped(*interrupt(args, signum, delay), signum)
    assert stopped >= len(DELAYS) - 1
    after = subprocess.run([str(RUNQ_SCRIPT), "-H", str(home), "--index", str(index), "sql", "SELECT COUNT(*) FROM runs"],
                           capture_output=True, text=True, timeout=120)
    assert after.returncode == 0 and after.stdout.split()[-1] == "2000", after.stderr


def test_a_signal_at_the_confirmation_prompt(tmp_path):
    home = tmp_path / "home"
    generate_home(home, HomeSpec(runs=10, seed=2, profile="realistic", sourcecode_files=0), NOW)
    trash = len(os.listdir(home / "trash" / "runs"))
    process = subprocess.Popen(
        [str(RUNQ_SCRIPT), "-H", str(home), "runs", "purge", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    line = b""
    while b"(y/N)" not in line:
        line += process.stderr.read1(4096)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert (line + err).decode().splitlines()[-1].endswith("runq: interrupted")
    assert len(os.listdir(home / "trash" / "runs")) == trash
