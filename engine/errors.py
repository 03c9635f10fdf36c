"""One family of errors: every failure a user can cause is a RunqError.

The CLI prints `message` (and `hint`, when there is one) on one line and
exits with `exit_code`; it never shows a traceback for these.
"""


class RunqError(Exception):
    exit_code = 1

    def __init__(self, message, hint=None, position=None, text=None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.position = position
        self.text = text

    def __str__(self):
        parts = [self.message]
        if self.hint:
            parts.append(self.hint)
        return " - ".join(parts)


class FilterSyntaxError(RunqError):
    """A filter expression (-F) that does not parse."""


class RangeError(RunqError):
    """A --started RANGE that does not parse or names an impossible date."""


class SelectionError(RunqError):
    """Options or RUN arguments that cannot select runs."""


class HomeError(RunqError):
    """A Guild home or index that cannot be used."""


class Aborted(RunqError):
    """The user answered no."""

    exit_code = 4


class QueryError(RunqError):
    """Ad-hoc SQL (`runq sql`) that fails, is refused or runs out of time."""


class QueryInterrupted(QueryError):
    """Ad-hoc SQL stopped by Ctrl-C."""

    exit_code = 130
