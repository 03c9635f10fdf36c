"""`--started RANGE`: Guild 0.9.0's time-range language and its boundaries.

Three stages, one direction: `tokenize` (ordered regex rules; the first
rule that matches wins, as in Guild's lexer) -> a recursive-descent parser
(one token of lookahead, dispatch tables keyed by token kind) that builds a
small tree of range nodes -> `TimeRange.bounds(now)`, which evaluates the
tree to naive local datetimes (start inclusive, end exclusive).

Grammar, Guild's plus one deliberate deviation (marked *):

    spec       := unit-range | operator | last | between | moment
    unit-range := TODAY | YESTERDAY | THIS unit | NUMBER unit AGO
    operator   := (BEFORE | AFTER) (unit-range | moment)
    last       := LAST [NUMBER] (MINUTE | HOUR | DAY)
                | LAST (WEEK | MONTH | YEAR)        * the previous calendar unit
    between    := BETWEEN operand AND operand
    operand    := unit-range | operator | moment
    moment     := date [time] | time

Guild's boundaries are kept, quirks included, because a purge must select
exactly what Guild would: a month range ends at 00:00 of the month's *last*
day; a moment inside `between` is an instant, so `between 1-1 and 1-31`
ends at 1-31 00:00; `between` puts the operand with the earlier start
first and takes the other's end; `last N ...` keeps `now`'s microseconds.

Errors are RangeError with the 0-based position of the offending text.
Syntax errors are reported first, left to right, at the same position as
Guild's parser; impossible calendar values found from the text alone
(`24:00`, `2018-4-31`) are reported by `parse_range`, those that depend on
`now` (`2-29` in a common year) by `bounds`.
"""

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Optional, Union

from dateutil.relativedelta import MO, relativedelta

from .errors import RangeError

__all__ = ["Token", "TimeRange", "epoch_bounds", "parse_range", "tokenize"]

# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

# Guild's lexer skips exactly these; any other whitespace is an error.
IGNORED = " \t\n"

# Order matters: at each position the first rule that matches wins, even
# when a later one would match more (so `dayafter` is DAY then AFTER).
TOKEN_RULES = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("LONGDATE", r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})"),
        ("MEDIUMDATE", r"([0-9]{2})-([0-9]{1,2})-([0-9]{1,2})"),
        ("SHORTDATE", r"([0-9]{1,2})-([0-9]{1,2})"),
        ("LONGTIME", r"([0-9]{1,2}):([0-9]{2}):([0-9]{2})"),
        ("SHORTTIME", r"([0-9]{1,2}):([0-9]{2})"),
        ("DAY", r"days?"),
        ("WEEK", r"weeks?"),
        ("MONTH", r"months?"),
        ("YEAR", r"years?"),
        ("NUMBER", r"[0-9]+"),
        ("HOUR", r"hours?|hr"),
        ("MINUTE", r"minutes?|min"),
        ("WORD", r"[a-zA-Z]+"),
    )
)

KEYWORDS = {
    word: word.upper()
    for word in (
        "today", "yesterday", "this", "last", "ago",
        "before", "after", "between", "and",
    )
}

DATE_KINDS = ("LONGDATE", "MEDIUMDATE", "SHORTDATE")
TIME_KINDS = ("SHORTTIME", "LONGTIME")
UNIT_KINDS = ("MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")
SINCE_UNIT_KINDS = ("MINUTE", "HOUR", "DAY")
PREVIOUS_UNIT_KINDS = ("WEEK", "MONTH", "YEAR")

# Far more digits than any count that stays inside the calendar; also
# keeps int() clear of Python's limit on digits in a string.
MAX_NUMBER_DIGITS = 30

_NON_BLANK = re.compile(f"[^{IGNORED}]+")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int
    value: object = None

    @property
    def end(self):
        return self.pos + len(self.text)


def tokenize(spec):
    """Yield the tokens of `spec` lazily, so the parser meets a syntax
    error before any unlexable text that follows it (as Guild does)."""
    pos = 0
    while pos < len(spec):
        if spec[pos] in IGNORED:
            pos += 1
            continue
        token = _token_at(spec, pos)
        yield token
        pos = token.end


def _token_at(spec, pos):
    for kind, rule in TOKEN_RULES:
        match = rule.match(spec, pos)
        if match:
            return TOKEN_BUILDERS.get(kind, _plain_token)(kind, match, spec)
    raise _unexpected_text(spec, pos, _NON_BLANK.match(spec, pos).group())


def _plain_token(kind, match, _spec):
    return Token(kind, match.group(), match.start(), match.group())


def _fields_token(kind, match, _spec):
    fields = tuple(int(group) for group in match.groups())
    return Token(kind, match.group(), match.start(), fields)


def _number_token(kind, match, _spec):
    # An oversized count is reported by the parser, after any syntax error.
    digits = match.group()
    value = int(digits) if len(digits.lstrip("0")) <= MAX_NUMBER_DIGITS else None
    return Token(kind, digits, match.start(), value)


def _keyword_token(_kind, match, spec):
    word = match.group()
    keyword = KEYWORDS.get(word.lower())
    if keyword is None:
        raise _unexpected_text(spec, match.start(), word)
    return Token(keyword, word, match.start(), word)


TOKEN_BUILDERS = {
    **{kind: _fields_token for kind in DATE_KINDS + TIME_KINDS},
    "NUMBER": _number_token,
    "WORD": _keyword_token,
}

# --------------------------------------------------------------------------
# Range nodes: each evaluates to (start, end) for a reference time `now`
# --------------------------------------------------------------------------

_DAY_FLOOR = relativedelta(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class CalendarUnit:
    floor: relativedelta  # moves `now` to the start of its unit
    name: str  # relativedelta's keyword for a number of these units
    length: Optional[relativedelta] = None  # start to end, when not one unit

    def steps(self, count):
        return relativedelta(**{self.name: count})

    def end(self, start):
        return start + (self.length or self.steps(1))


CALENDAR_UNITS = {
    "MINUTE": CalendarUnit(relativedelta(second=0, microsecond=0), "minutes"),
    "HOUR": CalendarUnit(relativedelta(minute=0, second=0, microsecond=0), "hours"),
    "DAY": CalendarUnit(_DAY_FLOOR, "days"),
    # Weeks start on Monday; MO(-1) is today when today is a Monday.
    "WEEK": CalendarUnit(_DAY_FLOOR + relativedelta(weekday=MO(-1)), "weeks"),
    # Guild ends a month at 00:00 of its last day, not at the next month.
    "MONTH": CalendarUnit(_DAY_FLOOR + relativedelta(day=1), "months", relativedelta(day=31)),
    "YEAR": CalendarUnit(_DAY_FLOOR + relativedelta(month=1, day=1), "years"),
}


class _CalendarError(Exception):
    """A date outside the calendar; TimeRange turns it into a RangeError."""

    def __init__(self, reason, span):
        super().__init__(reason)
        self.reason = reason
        self.span = span


@contextmanager
def _calendar_errors(span):
    try:
        yield
    except OverflowError as e:
        raise _CalendarError("date is out of range", span) from e
    except ValueError as e:
        raise _CalendarError(str(e), span) from e


@dataclass(frozen=True)
class Period:
    """The calendar unit holding `now`, `ago` units back (`3 days ago`)."""

    unit: str
    ago: int
    span: tuple  # (start, end) of its text in the spec

    def interval(self, now):
        unit = CALENDAR_UNITS[self.unit]
        with _calendar_errors(self.span):
            start = now + unit.floor - unit.steps(self.ago)
            return start, unit.end(start)


# A year written with two digits lies in the century of `now`.
YEAR_RESOLVERS = {
    "LONGDATE": lambda fields, _now: fields[0],
    "MEDIUMDATE": lambda fields, now: now.year // 100 * 100 + fields[0],
    "SHORTDATE": lambda _fields, now: now.year,
}

# How long a moment written alone lasts: a date a day, HH:MM a minute,
# HH:MM:SS a second.
MOMENT_LENGTHS = {
    None: timedelta(days=1),
    "SHORTTIME": timedelta(minutes=1),
    "LONGTIME": timedelta(seconds=1),
}

# A year in which every month/day pair exists, to check dates whose year
# only `now` can tell.
LEAP_YEAR = 2000


@dataclass(frozen=True)
class Moment:
    """A written date and/or time; a missing date is `now`'s day."""

    date_kind: Optional[str]
    date_fields: tuple  # ([year,] month, day) as written
    time_kind: Optional[str]
    time_fields: tuple  # (hour, minute[, second]) as written
    span: tuple  # (start, end) of its text in the spec

    @property
    def length(self):
        return MOMENT_LENGTHS[self.time_kind]

    def at(self, now):
        with _calendar_errors(self.span):
            return datetime(*self._date(now), *self.time_fields)

    def _date(self, now):
        if self.date_kind is None:
            return now.year, now.month, now.day
        year = YEAR_RESOLVERS[self.date_kind](self.date_fields, now)
        return (year, *self.date_fields[-2:])

    def invalid_reason(self):
        """Why the text alone cannot be a date and time, or None."""
        year = self.date_fields[0] if self.date_kind == "LONGDATE" else LEAP_YEAR
        try:
            time(*self.time_fields)
            if self.date_kind:
                date(year, *self.date_fields[-2:])
        except ValueError as e:
            return str(e)
        return None


@dataclass(frozen=True)
class Within:
    """A moment written alone: the day, minute or second it names."""

    moment: Moment

    def interval(self, now):
        start = self.moment.at(now)
        with _calendar_errors(self.moment.span):
            return start, start + self.moment.length


@dataclass(frozen=True)
class Point:
    """A moment used as an operand: an instant, start and end alike."""

    moment: Moment

    def interval(self, now):
        instant = self.moment.at(now)
        return instant, instant


@dataclass(frozen=True)
class Before:
    operand: Union[Period, Point]
    span: tuple  # (start, end) of its text in the spec

    def interval(self, now):
        return None, self.operand.interval(now)[0]


@dataclass(frozen=True)
class After:
    operand: Union[Period, Point]
    span: tuple  # (start, end) of its text in the spec

    def interval(self, now):
        return self.operand.interval(now)[1], None


@dataclass(frozen=True)
class Since:
    """`last N minutes|hours|days`: exactly N units before `now`."""

    unit: str
    count: int
    span: tuple  # (start, end) of its text in the spec

    def interval(self, now):
        with _calendar_errors(self.span):
            # Wall-clock arithmetic on naive local time, as Guild does.
            return now - timedelta(**{CALENDAR_UNITS[self.unit].name: self.count}), None


@dataclass(frozen=True)
class Between:
    first: object
    second: object

    def interval(self, now):
        first_start, first_end = self.first.interval(now)
        second_start, second_end = self.second.interval(now)
        if first_start < second_start:
            return first_start, second_end
        return second_start, first_end


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------


class _Parser:
    def __init__(self, spec):
        self.spec = spec
        self._tokens = tokenize(spec)
        self._end = Token("END", "", len(spec))
        # (span, reason) found while parsing, reported only once the whole
        # spec is known to be well formed, so syntax errors come first.
        self.problems = []
        self.token = self._next()

    def _next(self):
        return next(self._tokens, self._end)

    def take(self):
        self.previous = self.token
        self.token = self._next()
        return self.previous

    def span_from(self, first):
        """(start, end) offsets of the text from `first` to the last token taken."""
        return first.pos, self.previous.end

    def count(self, number):
        if number.value is None:
            self.problems.append(((number.pos, number.end), "number is too large"))
            return 0
        return number.value

    def expect(self, kinds, expected):
        if self.token.kind not in kinds:
            raise self.unexpected(expected)
        return self.take()

    def dispatch(self, rules, expected):
        rule = rules.get(self.token.kind)
        if rule is None:
            raise self.unexpected(expected)
        return rule(self)

    def unexpected(self, expected):
        if self.token.kind != "END":
            return _unexpected_text(self.spec, self.token.pos, self.token.text, expected)
        if not self.spec.strip(IGNORED):
            return RangeError("spec cannot be empty", position=len(self.spec), text=self.spec)
        return RangeError(
            f"unexpected end of spec at position {len(self.spec)}",
            hint=f"expected {expected}",
            position=len(self.spec),
            text=self.spec,
        )

    def report_problems(self):
        if self.problems:
            span, reason = min(self.problems)
            raise _problem_error(reason, span, self.spec)


def _today(p):
    return Period("DAY", 0, p.span_from(p.take()))


def _yesterday(p):
    return Period("DAY", 1, p.span_from(p.take()))


def _this_unit(p):
    this = p.take()
    unit = p.expect(UNIT_KINDS, EXPECTED_UNIT)
    return Period(unit.kind, 0, p.span_from(this))


def _units_ago(p):
    number = p.take()
    unit = p.expect(UNIT_KINDS, EXPECTED_UNIT)
    p.expect(("AGO",), "'ago'")
    return Period(unit.kind, p.count(number), p.span_from(number))


def _before(p):
    keyword = p.take()
    operand = p.dispatch(OPERATOR_OPERANDS, EXPECTED_OPERATOR_OPERAND)
    return Before(operand, p.span_from(keyword))


def _after(p):
    keyword = p.take()
    operand = p.dispatch(OPERATOR_OPERANDS, EXPECTED_OPERATOR_OPERAND)
    return After(operand, p.span_from(keyword))


def _last(p):
    last = p.take()
    if p.token.kind == "NUMBER":
        number = p.take()
        unit = p.expect(SINCE_UNIT_KINDS, EXPECTED_SINCE_UNIT)
        return Since(unit.kind, p.count(number), p.span_from(last))
    unit = p.expect(SINCE_UNIT_KINDS + PREVIOUS_UNIT_KINDS, EXPECTED_LAST_UNIT)
    if unit.kind in PREVIOUS_UNIT_KINDS:
        # The deliberate deviation: Guild 0.9.0 rejects these; they mean
        # the previous calendar unit, as `1 week ago` does.
        return Period(unit.kind, 1, p.span_from(last))
    return Since(unit.kind, 1, p.span_from(last))


def _between(p):
    p.take()
    first = _between_operand(p)
    p.expect(("AND",), "'and'")
    second = _between_operand(p)
    return Between(first, second)


def _between_operand(p):
    operand = p.dispatch(BETWEEN_OPERANDS, EXPECTED_BETWEEN_OPERAND)
    if isinstance(operand, Before):
        # Guild fails on these (it compares a missing start); say why.
        p.problems.append((operand.span, "'before' cannot be used inside 'between'"))
    return operand


def _moment(p):
    first = p.take()
    date_token = time_token = None
    if first.kind in DATE_KINDS:
        date_token = first
        if p.token.kind in TIME_KINDS:
            time_token = p.take()
    else:
        time_token = first
    moment = Moment(
        *_kind_and_fields(date_token), *_kind_and_fields(time_token), p.span_from(first)
    )
    reason = moment.invalid_reason()
    if reason:
        p.problems.append((moment.span, reason))
    return moment


def _kind_and_fields(token):
    return (token.kind, token.value) if token else (None, ())


def _point(p):
    return Point(_moment(p))


def _within(p):
    return Within(_moment(p))


def _rules_for(kinds, rule):
    return {kind: rule for kind in kinds}


UNIT_RANGES = {
    "TODAY": _today,
    "YESTERDAY": _yesterday,
    "THIS": _this_unit,
    "NUMBER": _units_ago,
}
OPERATORS = {"BEFORE": _before, "AFTER": _after}
OPERATOR_OPERANDS = {**UNIT_RANGES, **_rules_for(DATE_KINDS + TIME_KINDS, _point)}
BETWEEN_OPERANDS = {**OPERATOR_OPERANDS, **OPERATORS}
SPEC_FORMS = {
    **UNIT_RANGES,
    **OPERATORS,
    "LAST": _last,
    "BETWEEN": _between,
    **_rules_for(DATE_KINDS + TIME_KINDS, _within),
}

EXPECTED_UNIT = "a unit: minute, hour, day, week, month or year"
EXPECTED_SINCE_UNIT = (
    "minutes, hours or days (for calendar weeks, months or years use 'N weeks ago')"
)
EXPECTED_LAST_UNIT = "a number or minute, hour, day, week, month or year"
EXPECTED_OPERATOR_OPERAND = (
    "a date, a time, 'today', 'yesterday', 'this UNIT' or 'N UNITS ago'"
)
EXPECTED_BETWEEN_OPERAND = f"{EXPECTED_OPERATOR_OPERAND}, or 'before'/'after' one"
EXPECTED_SPEC = (
    "a date, a time, 'today', 'yesterday', 'this UNIT', 'N UNITS ago', "
    "'last ...', 'before ...', 'after ...' or 'between ... and ...'"
)

# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeRange:
    spec: str
    root: object = field(repr=False)

    def bounds(self, now):
        """(start, end) as naive local datetimes for the naive local `now`;
        either may be None (no limit). Start inclusive, end exclusive."""
        try:
            return self.root.interval(now)
        except _CalendarError as e:
            raise _problem_error(e.reason, e.span, self.spec) from None


def parse_range(spec):
    """Parse a `--started` RANGE spec; RangeError when it is not one."""
    parser = _Parser(spec)
    root = parser.dispatch(SPEC_FORMS, EXPECTED_SPEC)
    parser.expect(("END",), "the end of the spec")
    parser.report_problems()
    return TimeRange(spec, root)


def epoch_bounds(spec_or_range, now):
    """The bounds of a range as integer microseconds since the epoch.

    Guild keeps a run when `start <= fromtimestamp(ts // 10**6) < end`:
    whole seconds, in local time. (lo, hi) are the smallest timestamps
    whose whole second reaches start and end, so that test is
    `ts >= lo and ts < hi`. This is exact wherever local time runs forward;
    in the hour a DST change repeats, Guild's test is not an interval of
    timestamps at all, and lo/hi stand for the first occurrence.
    """
    time_range = (
        parse_range(spec_or_range) if isinstance(spec_or_range, str) else spec_or_range
    )
    start, end = time_range.bounds(now)
    return _epoch_micros(start), _epoch_micros(end)


# --------------------------------------------------------------------------
# Epoch conversion
# --------------------------------------------------------------------------

_NAIVE_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


def _epoch_micros(bound):
    if bound is None:
        return None
    return _first_second_reaching(_ceil_second(bound)) * 1_000_000


def _ceil_second(moment):
    # Whole-second times reach a start with a fraction only at the next second.
    if moment.microsecond:
        return moment.replace(microsecond=0) + _SECOND
    return moment


def _first_second_reaching(local):
    """The smallest epoch second whose local time is at or after `local`."""
    try:
        earliest, latest = sorted(
            int(local.replace(fold=fold).timestamp()) for fold in (0, 1)
        )
        if datetime.fromtimestamp(earliest) >= local:
            return earliest
        # `local` falls in a gap (clocks jumped over it): the answer is
        # the jump, between the readings with the offsets either side.
        return _search_jump(local, earliest, latest)
    except (OverflowError, OSError, ValueError):
        # At the ends of the calendar there are no run timestamps; any
        # offset will do.
        return (local - _NAIVE_EPOCH) // _SECOND


def _search_jump(local, before, after):
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle) >= local:
            after = middle
        else:
            before = middle
    return after


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def _quoted(text):
    return f"'{text}'" if text.isprintable() else repr(text)


def _unexpected_text(spec, pos, text, expected=None):
    return RangeError(
        f"unexpected {_quoted(text)} at position {pos}",
        hint=expected and f"expected {expected}",
        position=pos,
        text=spec,
    )


def _problem_error(reason, span, spec):
    start, end = span
    return RangeError(
        f"{reason}: {_quoted(spec[start:end])} at position {start}",
        position=start,
        text=spec,
    )
