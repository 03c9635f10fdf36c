"""Guild AI 0.9.0 as a test oracle: which runs does a selection pick?

`GuildOracle` sends selections to one long-lived Guild python process
(guild_select.py in --serve mode, shared by every oracle in the test
session); each `select_many` call is one request, answered without acting
on any run. `run_guild` runs the real `guild` CLI for end-to-end checks.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from guildenv import guild_python, guild_script  # noqa: E402

SCRIPT = Path(__file__).resolve().with_name("guild_select.py")
COMMANDS = ("list", "delete", "rm", "purge", "restore")
CLI_TIMEOUT = 120


class OracleError(RuntimeError):
    """The oracle could not answer (bad request or a dead Guild process)."""


@dataclass
class GuildResult:
    ids: list[str] | None
    error: str | None = None
    exit_code: int = 0

    @classmethod
    def from_json(cls, data: dict) -> GuildResult:
        if "ids" in data:
            return cls(ids=data["ids"])
        return cls(ids=None, error=data["error"], exit_code=data["exit"])


class GuildOracle:
    """Guild's answers for selections on one Guild home, at `now` if given."""

    def __init__(self, home: Path, now: datetime | None = None):
        self.home = Path(home)
        self.now = now

    def select(self, command: str, args: list[str]) -> GuildResult:
        """What `guild runs COMMAND ARGS...` selects (or refuses with)."""
        return self.select_many([(command, args)])[0]

    def select_many(self, cases: list[tuple[str, list[str]]]) -> list[GuildResult]:
        """Answers for many cases in one request to the Guild process."""
        answers = _GUILD.ask(self._request(cases))
        return [GuildResult.from_json(answer) for answer in answers]

    def _request(self, cases):
        for command, _args in cases:
            if command not in COMMANDS:
                raise ValueError(f"unsupported command {command!r}; use one of {COMMANDS}")
        return {
            "home": str(self.home),
            "now": self.now.isoformat() if self.now else None,
            "cases": [{"command": command, "args": list(args)} for command, args in cases],
        }


def run_guild(
    home: Path,
    args: list[str],
    input: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """The real `guild ARGS...` with GUILD_HOME=home; output captured as text."""
    env = {**os.environ, "GUILD_HOME": str(home), **(env_extra or {})}
    return subprocess.run(
        [str(guild_script()), *args],
        input=input,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


class _GuildProcess:
    """guild_select.py --serve: one JSON request line in, one answer line out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._process = None
        self._stderr = None

    def ask(self, request):
        line = json.dumps(request) + "\n"
        with self._lock:
            process = self._running_process()
            try:
                process.stdin.write(line)
                process.stdin.flush()
                answer = process.stdout.readline()
            except BrokenPipeError:
                answer = ""
            if not answer:
                raise OracleError(f"Guild oracle process died:\n{self.close()}")
        response = json.loads(answer)
        if isinstance(response, dict):
            raise OracleError(response["oracle_error"])
        return response

    def _running_process(self):
        if self._process is None or self._process.poll() is not None:
            self.close()
            self._stderr = tempfile.TemporaryFile(mode="w+")
            self._process = subprocess.Popen(
                [str(guild_python()), str(SCRIPT), "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                encoding="utf-8",
            )
        return self._process

    def close(self):
        """Ends the process (if any); returns what it wrote to stderr."""
        process, self._process = self._process, None
        if process is not None:
            process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        return self._read_stderr()

    def _read_stderr(self):
        stderr, self._stderr = self._stderr, None
        if stderr is None:
            return ""
        stderr.seek(0)
        text = stderr.read()
        stderr.close()
        return text[-4000:]


_GUILD = _GuildProcess()
atexit.register(_GUILD.close)
