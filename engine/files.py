"""Reading a run's files without blocking or exhausting memory.

Anyone can leave anything in a run directory: a FIFO where an attribute
should be (opening it waits for a writer that never comes), a link to
/dev/zero (reading it never ends), a sparse file of many gigabytes. runq
reads regular files only, following links as Guild does, and refuses files
larger than what they can sensibly hold.
"""

import errno
import os
import stat

# Size limits, in bytes, of what runq reads from a run.
ATTR_MAX_BYTES = 64 * 2**20  # an attribute file (pip_freeze and env are the big ones)
OPREF_MAX_BYTES = 64 * 2**10  # .guild/opref: four words
MARKER_MAX_BYTES = 64 * 2**10  # LOCK, LOCK.remote: a pid, a host name
EVENT_FILE_MAX_BYTES = 2**30  # a TensorBoard event file (read whole)

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """A path that names something other than a regular file."""


def read_regular(path, limit):
    """The bytes of the regular file at `path` (links followed); OSError when
    it is missing, not a regular file, or larger than `limit` bytes."""
    fd = os.open(path, _OPEN_FLAGS)  # O_NONBLOCK: a FIFO opens at once, to be refused below
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({_file_type(st.st_mode)})")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        return _read_at_most(fd, st.st_size, limit)
    finally:
        os.close(fd)


def _read_at_most(fd, expected, limit):
    """Everything up to `limit` bytes; a file that grows past it while being read is refused.
    The first read asks for one byte more than the size fstat gave (os.read
    allocates what it is asked for): a regular file's read that returns less
    than it asked for has reached the end, which saves a second read of
    almost every file."""
    chunks, size, ask = [], 0, expected + 1
    while True:
        wanted = min(ask, limit + 1 - size)
        chunk = os.read(fd, wanted)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes")
        if len(chunk) < wanted:  # the end (an empty read too)
            return b"".join(chunks)
        ask = 2**16


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _file_type(mode):
    return next((name for test, name in _FILE_TYPES if test(mode)), "not a file")


def error_text(error):
    """An OSError as a short phrase for a problems line."""
    return error.strerror or str(error)
