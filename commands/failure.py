"""What runq says when a command fails: one line, whatever happened.

Messages quote what the user typed and what runs hold, so the line is made
safe for a terminal (control characters and escape sequences shown
escaped, never sent) and short (a 1 MB argument is not echoed back).
"""

import errno
import os
import sqlite3
import sys
import unicodedata

from ..engine.errors import RunqError

LONG_WORD = 200  # a word (a value without spaces) longer than this is cut
LONG_LINE = 1000  # a message longer than this keeps its start and its end
LINE_TAIL = 300
ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
DEBUG_HINT = "-v or RUNQ_DEBUG=1 shows the traceback"
WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}


class UnexpectedError(RunqError):
    """An error runq has no message of its own for."""


def one_line(text):
    """`text` as one safe, bounded line (cut before escaping too: a huge text is not walked)."""
    return _shortened(escaped(_shortened(text)))


def escaped(text):
    if text.isprintable():
        return text
    return "".join(_escaped_char(c) for c in text)


def _escaped_char(char):
    if char in ESCAPES:
        return ESCAPES[char]
    if char.isprintable() or unicodedata.category(char) not in UNSAFE_CATEGORIES:
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _shortened(line):
    words = [w if len(w) <= LONG_WORD else w[:LONG_WORD] + "..." for w in line.split(" ")]
    line = " ".join(words)
    if len(line) > LONG_LINE:
        line = line[: LONG_LINE - LINE_TAIL] + " ... " + line[-LINE_TAIL:]
    return line


def unexpected_error(error):
    """A RunqError that says what went wrong, for an exception runq did not expect."""
    for kind, describe in DESCRIPTIONS:
        if isinstance(error, kind):
            text = describe(error)
            if text:
                return UnexpectedError(text)
    return UnexpectedError(f"internal error: {type(error).__name__}: {error}", hint=DEBUG_HINT)


def _os_error(error):
    reason = error.strerror or str(error)
    verb = "write" if error.errno in WRITE_ERRORS else "access"
    if error.filename is None:
        return f"cannot {verb}: {reason}" if verb == "write" else reason
    path = _path_text(error.filename)
    if error.filename2 is not None:
        return f"cannot move {path} to {_path_text(error.filename2)}: {reason}"
    return f"cannot {verb} {path}: {reason}"


def _path_text(path):
    if isinstance(path, bytes):
        return path.decode("utf-8", "surrogateescape")
    return str(path)


def _unicode_error(error):
    if not isinstance(error.object, str):
        return None
    bad = error.object[error.start : error.end]
    return f"text that is not valid UTF-8 cannot be used here ({escaped(bad)} in '{error.object}')"


def _sqlite_error(error):
    return f"the index database failed: {error}"


DESCRIPTIONS = [
    (OSError, _os_error),
    (UnicodeEncodeError, _unicode_error),
    (sqlite3.Error, _sqlite_error),
    (MemoryError, lambda error: "out of memory"),
    (RecursionError, lambda error: "input nested too deeply to handle"),
]


def quiet_stdout():
    """Points stdout at /dev/null (what Python's docs advise on SIGPIPE):
    what is still buffered for a closed pipe is dropped without a word."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (e.g. captured): nothing to point
        pass
