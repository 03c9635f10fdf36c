"""A selection: everything `runs list/delete/purge/restore` take to pick runs.

`build_selection` checks and parses the options the way Guild does (its
errors become SelectionError/FilterSyntaxError/RangeError); the compiler
turns the result into SQL.
"""

import re
from typing import NamedTuple, Optional, Tuple

from .errors import RangeError, SelectionError

STATUSES = {
    "r": "running",
    "c": "completed",
    "e": "error",
    "t": "terminated",
    "p": "pending",
    "s": "staged",
}
SLICE = re.compile(r"(\d+)?:(\d+)?")


class RunArg(NamedTuple):
    """A RUN argument: an index range tried first, else a run id prefix.

    `lo` and `hi` are Python slice bounds over the filtered runs (`hi` None
    means to the end); `by_index` False means the argument can only be an
    id prefix.
    """

    text: str
    by_index: bool
    lo: int = 0
    hi: Optional[int] = None


class Selection(NamedTuple):
    deleted: bool = False
    filter: Optional[object] = None  # engine.parser.ParsedFilter
    operations: Tuple[str, ...] = ()
    labels: Tuple[str, ...] = ()
    unlabeled: bool = False
    tags: Tuple[str, ...] = ()
    comments: Tuple[str, ...] = ()
    marked: Optional[bool] = None  # True: marked only, False: unmarked only
    started: Optional[object] = None  # engine.timerange.TimeRange
    digest: Optional[str] = None
    statuses: Tuple[str, ...] = ()  # any of these
    not_statuses: Tuple[str, ...] = ()  # none of these
    runs: Tuple[RunArg, ...] = ()

    @property
    def warnings(self):
        return list(self.filter.warnings) if self.filter else []


def build_selection(
    *,
    deleted=False,
    filter_expr=None,
    operations=(),
    labels=(),
    unlabeled=False,
    tags=(),
    comments=(),
    marked=False,
    unmarked=False,
    started=None,
    digest=None,
    status_flags=None,
    status_chars=None,
    runs=(),
    now=None,
):
    """Checks and parses selection options; raises RunqError subclasses.

    `status_flags` maps status names to True (only runs with that status),
    False (no runs with it) or None; `status_chars` is the value of `-S`.
    Checks run in Guild's order, so the first problem reported is Guild's.
    With `now`, a time range that names an impossible date is refused here.
    """
    wanted, unwanted = _status_filter(status_flags or {}, status_chars)
    if labels and unlabeled:
        raise SelectionError(
            "--label and --unlabeled cannot both be used",
            hint="use --label - to include unlabeled runs along with labels",
        )
    if marked and unmarked:
        raise SelectionError("--marked and --unmarked cannot both be used")
    time_range = _time_range(started, now) if started else None
    return Selection(
        deleted=deleted,
        filter=_parsed_filter(filter_expr) if filter_expr else None,
        operations=tuple(operations),
        labels=tuple(labels),
        unlabeled=bool(unlabeled),
        tags=tuple(tags),
        comments=tuple(comments),
        marked=True if marked else (False if unmarked else None),
        started=time_range,
        digest=digest or None,
        statuses=wanted,
        not_statuses=unwanted,
        runs=parse_run_args(runs),
    )


def _parsed_filter(text):
    from .parser import parse_filter  # only -F needs it

    return parse_filter(text)


def _time_range(spec, now):
    """The parsed --started RANGE, checked against `now` when given."""
    from .timerange import parse_range  # only --started needs it

    try:
        time_range = parse_range(spec)
        if now:
            time_range.bounds(now)
    except RangeError as e:
        raise RangeError(f"invalid --started RANGE '{spec}': {e.message}", e.hint, e.position, e.text) from None
    return time_range


def _status_filter(status_flags, status_chars):
    flags = dict(status_flags)
    for char in status_chars or "":
        if char not in STATUSES:
            raise SelectionError(
                f"unrecognized status char '{char}' in option '-S'",
                hint="use letters from rcetps (running, completed, error, "
                "terminated, pending, staged)",
            )
        if not flags.get(STATUSES[char]):
            flags[STATUSES[char]] = True
    ordered = sorted(flags)
    return (
        tuple(s for s in ordered if flags[s] is True),
        tuple(s for s in ordered if flags[s] is False),
    )


def parse_run_args(args):
    """RUN arguments, duplicates dropped, in order."""
    unique = list(dict.fromkeys(args))
    return tuple(_run_arg(text) for text in unique)


def _run_arg(text):
    bounds = _slice_bounds(text)
    if bounds is None or bounds[0] is not None and bounds[0] < 0:
        return RunArg(text, by_index=False)
    lo, hi = bounds
    return RunArg(text, by_index=True, lo=lo or 0, hi=hi)


def _slice_bounds(text):
    """Guild's reading of a RUN argument as (start, end) slice bounds, or None."""
    try:
        index = int(text)
    except ValueError:
        match = SLICE.match(text)
        if not match:
            return None
        start, end = match.groups()
        return (int(start) - 1 if start else None, int(end) if end else None)
    return index - 1, index
