"""The `runq` process: signal handling first, then the application.

Ctrl-C and SIGTERM must stop runq at any moment, also while it is still
importing its libraries (a few tenths of a second), so this module imports
nothing heavy and installs its handlers as soon as it is imported (only
the `runq` script and `python -m runq` import it), before the application.

On either signal runq stops at once: one line, exit 130 or 143. Nothing
needs unwinding first: a refresh commits all at once (SQLite rolls back the
rest), a purge finishes on the next command, and forked children end with
their parent (see engine/indexer.py).
"""

import os
import signal
import sys

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def main():
    from .app import app  # typer, click, sqlglot...: the slow part of starting

    try:
        app()
    except SystemExit as done:
        raise SystemExit(_flushed(done.code)) from None


def _stop_on_signals(owner):
    def stop(signum, frame):
        # A forked child inherits this handler; only runq itself speaks.
        if os.getpid() == owner:
            _say(b"\nrunq: interrupted\n" if os.isatty(2) else b"runq: interrupted\n")  # past the ^C echo
        os._exit(EXIT_CODES[signum])

    for signum in EXIT_CODES:
        signal.signal(signum, stop)


def _say(line):
    try:
        os.write(2, line)
    except OSError:  # no stderr to speak to
        pass


def _flushed(code):
    """Flushes stdout now, so that a reader gone away (`runq ... | head -1`)
    or a full disk is met here rather than by the interpreter's last flush,
    which would print a warning and exit with 120; the exit code."""
    from .failure import quiet_stdout

    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
    except OSError as e:
        quiet_stdout()  # the rest cannot be written either
        if code in (0, None):  # else the failure was already told
            _say(f"runq: cannot write the output: {e.strerror or e}\n".encode())
            return 1
    except ValueError:  # stdout already closed: nothing to lose
        pass
    return code


_stop_on_signals(owner=os.getpid())
