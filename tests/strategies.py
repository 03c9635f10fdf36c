"""Random run selections over one generated Guild home, as hypothesis strategies.

`Vocabulary.of(manifest)` collects what a generated home really holds: flag
names and values, scalar keys and last values, attribute files and the
attributes Guild computes (status, operation, started, time...), labels,
tags, comments, digests, run ids and start times. `selection_cases(vocab)`
draws `Case`s over it: a command (`purge`, `list`, `list --deleted`,
`restore`, `delete`) with filter options, status options, RUN arguments and
a `-F` expression, valid or not.

A case carries two argument lists: the one runq gets and the one Guild 0.9.0
gets. They differ only where runq deviates from Guild on purpose (README),
and there the Guild side is rewritten into Guild's equivalent:

- `X contains [a, b]` on a name whose value is a list wherever it is set is
  asked of Guild as `(X contains a and X contains b)`; on names whose value
  is never a list both read the target the same way, and names that are a
  list in some runs and text in others never get a list target.
- `--started 'last week|month|year'` is asked as `1 week|month|year ago`.
- A run named by several RUN arguments: `differential.first_seen` already
  compares Guild's answer with each run once.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timedelta

import yaml
from hypothesis import strategies as st

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Guild's filter lexer (guild/filter.py): what one NUMBER or ID token is.
NUMBER_TOKEN = re.compile(r"-?\.?\d+(\.\d+)?(e(\+|-)?(\d+))?\Z")
ID_TOKEN = re.compile(r"[a-zA-Z][^ ,<>!=\n()\[\]]*\Z")
KEYWORDS = frozenset({"and", "or", "in", "not", "true", "false", "is", "undefined", "contains"})

# What guild/index.py computes for every run, ahead of its attribute files.
COMPUTED_ATTRS = ("id", "run", "short_id", "model", "op", "operation", "from",
                  "sourcecode", "started", "stopped", "status", "time")
STATUSES = {"r": "running", "c": "completed", "e": "error", "t": "terminated", "p": "pending", "s": "staged"}
MISSING_NAMES = ("missing", "attr:missing", "flag:missing", "scalar:missing", "scalar:nope#loss",
                 "Status", "LR", "Label", "attr:flags", "attr:op", "attr:started", "flag:status")
# Roots a command selects from, and whether it takes RUN arguments.
COMMANDS = (
    ("purge", (), True, True),
    ("restore", (), True, True),
    ("delete", (), False, True),
    ("list", (), False, False),
    ("list", ("--deleted",), True, False),
)


# ---------------------------------------------------------------------------
# What a home holds
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunValues:
    """One run's values as a filter sees them (before any literal decoding)."""

    attrs: dict
    flags: dict
    scalars: dict  # {(prefix, tag): last value; None for NaN}

    def resolve(self, name):
        """The value Guild's filter reads for a name (attr, else flag, else scalar)."""
        for kind, read in NAME_KINDS.items():
            if name.startswith(kind):
                return read(self, name[len(kind):])
        for read in NAME_KINDS.values():
            value = read(self, name)
            if value is not None:
                return value
        return None

    def scalar(self, key):
        prefix, _, tag = key.partition("#") if "#" in key else (None, "", key)
        for (run_prefix, run_tag) in sorted(self.scalars):
            if tag == run_tag and (not prefix or prefix == run_prefix):
                return self.scalars[(run_prefix, run_tag)]
        return None


NAME_KINDS = {
    "attr:": lambda run, name: run.attrs.get(name),
    "flag:": lambda run, name: run.flags.get(name),
    "scalar:": RunValues.scalar,
}


@dataclass(frozen=True)
class Name:
    """One way to name a value in a filter, with the values it has in the home."""

    text: str
    source: str  # flag, attr, computed, scalar, stamped scalar (one run's own prefix), missing
    values: tuple
    list_kind: str  # "list": a list wherever set; "text": never a list; "mixed"


@dataclass(frozen=True)
class Vocabulary:
    names: dict  # {source: names}
    operations: tuple
    labels: tuple
    tags: tuple
    comment_words: tuple
    digests: tuple
    ids: dict  # {deleted: ids}
    counts: dict  # {deleted: number of runs}
    start_times: tuple
    now: datetime
    all_values: tuple

    @classmethod
    def of(cls, manifest):
        runs = [_run_values(record, manifest.root, manifest.now) for record in manifest.runs]
        names = {}
        for name in _names(runs):
            names.setdefault(name.source, []).append(name)
        return cls(
            names={source: tuple(group) for source, group in names.items()},
            operations=_distinct(r.operation for r in manifest.runs),
            labels=_distinct(r.label for r in manifest.runs if r.label is not None),
            tags=_distinct(t for r in manifest.runs for t in r.tags or ()),
            comment_words=_distinct(_comment_words(manifest.runs)),
            digests=_distinct(r.sourcecode_digest for r in manifest.runs if r.sourcecode_digest),
            ids={d: tuple(r.id for r in manifest.runs if r.deleted == d) for d in (False, True)},
            counts={d: sum(1 for r in manifest.runs if r.deleted == d) for d in (False, True)},
            start_times=tuple(sorted(_local(r.sort_timestamp) for r in manifest.runs if r.sort_timestamp)),
            now=manifest.now,
            all_values=_distinct(v for group in names.values() for name in group for v in name.values),
        )


def _run_values(record, root, now):
    attrs = _attr_files(record.run_dir(root))
    attrs.update(_computed_attrs(record, attrs, now))
    scalars = {key: (None if value != value else value) for key, value in record.scalars.items()}
    return RunValues(attrs, dict(record.flags), scalars)


def _attr_files(run_dir):
    attrs = {}
    for path in (run_dir / ".guild" / "attrs").iterdir():
        attrs[path.name] = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
    return attrs


def _computed_attrs(record, attrs, now):
    pkg_type, pkg_name, pkg_version, model, op = record.opref
    started, stopped = attrs.get("started"), attrs.get("stopped")
    digest = attrs.get("sourcecode_digest")
    return {
        "id": record.id,
        "run": record.id[:8],
        "short_id": record.id[:8],
        "model": model,
        "op": op,
        "operation": record.operation,
        "from": f"{pkg_name}=={pkg_version}" if pkg_type == "package" else _user_dir(pkg_name),
        "sourcecode": (digest or "")[:8],
        "started": _local(started).strftime("%Y-%m-%d %H:%M:%S") if started else "",
        "stopped": _local(stopped).strftime("%Y-%m-%d %H:%M:%S") if stopped else "",
        "status": record.status,
        "time": _duration(record.status, started, stopped, now),
    }


def _user_dir(path):
    home = os.path.expanduser("~")
    return os.path.join("~", path[len(home) + 1:]) if path.startswith(home) else path


def _duration(status, started, stopped, now):
    end = now.timestamp() * 1e6 if status == "running" else stopped
    if started is None or end is None:
        return None
    h, rest = divmod(int((end - started) // 1e6), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _local(us):
    return datetime.fromtimestamp(us / 1e6)


def _names(runs):
    texts = {text: "missing" for text in MISSING_NAMES}
    for run in runs:
        for name in run.flags:
            texts.update({name: "flag", f"flag:{name}": "flag"})
        for name in run.attrs:
            source = "computed" if name in COMPUTED_ATTRS else "attr"
            texts.update({name: source, f"attr:{name}": source})
        for prefix, tag in run.scalars:
            source = "stamped scalar" if prefix.startswith("runs/") else "scalar"
            forms = (tag, f"scalar:{tag}", f"scalar:{prefix}#{tag}", f"scalar:#{tag}", f"{prefix}#{tag}")
            texts.update({text: source for text in forms if text not in texts})
    for text, source in sorted(texts.items()):
        if is_id(text):
            values = [run.resolve(text) for run in runs]
            yield Name(text, source, _distinct(values), _list_kind(values))


def _list_kind(values):
    is_list = [isinstance(v, list) for v in values if v]
    return "list" if all(is_list) else "text" if not any(is_list) else "mixed"


def _comment_words(records):
    for record in records:
        for comment in record.comments or ():
            yield comment["user"]
            yield comment["host"]
            yield from comment["body"].split()


def _distinct(values):
    seen = {}
    for value in values:
        seen.setdefault((type(value).__name__, repr(value)), value)
    return tuple(seen.values())


def is_id(text):
    return bool(ID_TOKEN.match(text)) and text.lower() not in KEYWORDS


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    command: str
    runq_args: tuple
    guild_args: tuple

    def __str__(self):
        text = f"runs {self.command} {shlex.join(self.runq_args)}"
        if self.guild_args != self.runq_args:
            text += f"  (Guild: {shlex.join(self.guild_args)})"
        return text


@dataclass(frozen=True)
class Both:
    """Text for runq and the same question's text for Guild."""

    runq: str
    guild: str

    @classmethod
    def same(cls, text):
        return cls(text, text)

    def __add__(self, other):
        other = other if isinstance(other, Both) else Both.same(other)
        return Both(self.runq + other.runq, self.guild + other.guild)

    def __radd__(self, other):
        return Both.same(other) + self


@st.composite
def selection_cases(draw, vocab):
    """One Case: a command with options, RUN arguments and maybe an expression."""
    command, extra, deleted, takes_runs = draw(st.sampled_from(COMMANDS))
    groups = [Both.same(list(extra))] if extra else []
    option_count = draw(st.sampled_from([0, 0, 0, 1, 1, 1, 2, 2, 3, 4]))
    groups += draw(st.lists(option_groups(vocab, deleted), min_size=option_count, max_size=option_count))
    if draw(st.integers(0, 9)) < 7:
        groups.append(draw(filter_option(vocab)))
    if takes_runs and draw(st.integers(0, 9)) < 3:
        groups += draw(st.lists(run_args(vocab, deleted), min_size=1, max_size=2))
    groups = draw(st.permutations(groups))
    runq = [arg for group in groups for arg in group.runq]
    guild = [arg for group in groups for arg in group.guild]
    return Case(command, tuple(runq), tuple(guild))


def _args(*args):
    return Both.same(list(args))


# --- options ----------------------------------------------------------------


def option_groups(vocab, deleted):
    return st.one_of(
        status_options(),
        operation_option(vocab),
        label_options(vocab),
        tag_option(vocab),
        comment_option(vocab),
        st.sampled_from([_args("-Fm"), _args("-Fn"), _args("--marked"), _args("--unmarked")]),
        digest_option(vocab),
        started_option(vocab),
    )


@st.composite
def status_options(draw):
    kind = draw(st.integers(0, 9))
    if kind < 4:
        letters = draw(st.text(alphabet="rcetps" + ("x" if kind == 0 else ""), min_size=1, max_size=3))
        return _args(f"-S{letters}")
    name = draw(st.sampled_from(sorted(STATUSES.values())))
    return _args(f"--{name}" if kind < 7 else f"--not-{name}")


@st.composite
def operation_option(draw, vocab):
    operation = draw(st.sampled_from(vocab.operations))
    pkg, _, rest = operation.rpartition("/")
    model, _, op = rest.rpartition(":")
    value = draw(st.sampled_from([
        operation, op, f"{model}:" if model else f"{pkg}/", f":{op}", f"{pkg}/" if pkg else f"{model}:{op}",
        f"{op[:2]}*", f"*{op[-2:]}", f"^{operation[:3]}", f"{operation[-3:]}$", operation.upper(),
        "^(bad", "*", "a/b/c", f"{model or 'x'}*:*",
    ]))
    return Both.same(draw(option_forms("-Fo", "--operation", value)))


@st.composite
def label_options(draw, vocab):
    if draw(st.integers(0, 9)) == 0:
        return _args("-Fu")
    label = draw(st.sampled_from(vocab.labels))
    value = draw(st.sampled_from(["-", "", label, label.strip(), _piece(draw, label), _piece(draw, label).upper()]))
    return Both.same(draw(option_forms("-Fl", "--label", value)))


@st.composite
def tag_option(draw, vocab):
    tag = draw(st.sampled_from(vocab.tags + ("nope",)))
    value = draw(st.sampled_from([tag, tag, tag.upper(), tag[:-1]]))
    return Both.same(draw(option_forms("-Ft", "--tag", value)))


@st.composite
def comment_option(draw, vocab):
    word = draw(st.sampled_from(vocab.comment_words))
    value = draw(st.sampled_from(["-", word, word.upper(), _piece(draw, word)]))
    return Both.same(draw(option_forms("-Fc", "--comment", value)))


@st.composite
def digest_option(draw, vocab):
    digest = draw(st.sampled_from(vocab.digests))
    value = draw(st.sampled_from([digest[: draw(st.integers(1, 8))], digest, "", "zz", digest[:3].upper()]))
    return Both.same(draw(option_forms("-Fd", "--digest", value)))


@st.composite
def started_option(draw, vocab):
    spec = draw(time_ranges(vocab))
    form = draw(st.integers(0, 3))
    return Both(option_form("-Fs", "--started", spec.runq, form), option_form("-Fs", "--started", spec.guild, form))


@st.composite
def filter_option(draw, vocab):
    expr = draw(filter_expressions(vocab))
    form = draw(st.sampled_from([0] * 7 + [1, 2, 3]))
    return Both(option_form("-F", "--filter", expr.runq, form), option_form("-F", "--filter", expr.guild, form))


@st.composite
def option_forms(draw, short, long, value):
    return option_form(short, long, value, draw(st.integers(0, 3)))


def option_form(short, long, value, form):
    """An option with its value the ways click reads it: `-Fl V`, `--label V`,
    `--label=V`, and `-Fl=V` (click reads a multi-letter short name as long)."""
    name = long if form % 2 else short
    return [name, value] if form < 2 else [f"{name}={value}"]


# --- RUN arguments ----------------------------------------------------------


@st.composite
def run_args(draw, vocab, deleted):
    count = vocab.counts[deleted]
    position = st.integers(0, count + 2).map(str)
    ids = vocab.ids[deleted] or ("0",)
    other_ids = vocab.ids[not deleted] or ("0",)
    kind = draw(st.integers(0, 11))
    if kind < 3:
        return _args(draw(position))
    if kind < 7:
        start = draw(st.one_of(st.just(""), position))
        end = draw(st.one_of(st.just(""), position))
        return _args(f"{start}:{end}")
    if kind < 10:
        run_id = draw(st.sampled_from(ids))
        return _args(run_id[: draw(st.integers(1, 9))])
    return _args(draw(st.sampled_from([draw(st.sampled_from(other_ids))[:8], "zz", "1:2x", " 2", "+1"])))


# --- time ranges ------------------------------------------------------------

UNITS = {"minute": ("minute", "minutes", "min"), "hour": ("hour", "hours", "hr"), "day": ("day", "days"),
         "week": ("week", "weeks"), "month": ("month", "months"), "year": ("year", "years")}
# runq reads these as the previous calendar unit (README); Guild 0.9.0 as an
# error. Guild's lexer reads `weeks` as `week`, so the plurals are the same form.
LAST_UNIT_DEVIATIONS = {
    "last week": "1 week ago", "LAST Weeks": "1 week ago", "last month": "1 month ago",
    "last months": "1 month ago", "last year": "1 year ago", "Last YEARS": "1 year ago",
}


@st.composite
def time_ranges(draw, vocab):
    kind = draw(st.integers(0, 19))
    if kind == 0:
        spec = draw(st.sampled_from(sorted(LAST_UNIT_DEVIATIONS)))
        return Both(spec, LAST_UNIT_DEVIATIONS[spec])
    if kind == 1:
        return Both.same(draw(st.sampled_from(["bogus", "", "2026-2-30", "after 24:00", "last 2 weeks",
                                               "between today", "13-45", "before", "last"])))
    if kind < 6:
        return Both.same(draw(unit_ranges()))
    if kind < 8:
        number = draw(st.sampled_from(["", "1 ", "2 ", "30 ", "0 "]))
        unit = draw(st.sampled_from(UNITS["minute"] + UNITS["hour"] + UNITS["day"]))
        return Both.same(f"last {number}{unit}")
    if kind < 14:
        operator = draw(st.sampled_from(["after", "before"]))
        return Both.same(f"{operator} {draw(st.one_of(unit_ranges(), datetimes(vocab)))}")
    if kind < 17:
        first, second = draw(st.one_of(unit_ranges(), datetimes(vocab))), draw(datetimes(vocab))
        return Both.same(f"between {first} and {second}")
    return Both.same(draw(datetimes(vocab)))


@st.composite
def unit_ranges(draw):
    unit = draw(st.sampled_from(sorted(UNITS)))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(["today", "yesterday", "TODAY"]))
    if kind == 1:
        return f"this {unit}"
    return f"{draw(st.integers(0, 14))} {draw(st.sampled_from(UNITS[unit]))} ago"


@st.composite
def datetimes(draw, vocab):
    """Dates and times near runs' start times (to hit boundaries), in every form."""
    moment = draw(st.sampled_from(vocab.start_times + (vocab.now,)))
    moment += timedelta(seconds=draw(st.sampled_from([0, 0, 1, -1, 60, -3600, 86400])))
    date = draw(st.sampled_from([
        f"{moment.year}-{moment.month}-{moment.day}", f"{moment:%Y-%m-%d}", f"{moment:%y-%m-%d}",
        f"{moment.month}-{moment.day}", "",
    ]))
    time = draw(st.sampled_from([f"{moment:%H:%M}", f"{moment:%H:%M:%S}", f"{moment.hour}:{moment:%M}", ""]))
    return f"{date} {time}".strip() or f"{moment:%Y-%m-%d}"


# --- filter expressions -----------------------------------------------------


@st.composite
def filter_expressions(draw, vocab):
    """A -F expression; about one in ten is mangled (mostly invalid)."""
    expr = draw(expressions(vocab, 0))
    if expr.runq == expr.guild and draw(st.integers(0, 9)) == 0:
        return Both.same(draw(mangled(expr.runq)))
    return expr


@st.composite
def expressions(draw, vocab, depth):
    kind = draw(st.integers(0, 9 if depth < 3 else 5))
    if kind < 5:
        return draw(comparisons(vocab))
    if kind == 5:
        return Both.same(draw(bare_terms(vocab)))
    if kind == 6:
        return _word(draw, "not") + " " + draw(expressions(vocab, depth + 1))
    if kind == 7:
        return "(" + _space(draw) + draw(expressions(vocab, depth + 1)) + _space(draw) + ")"
    left, right = draw(expressions(vocab, depth + 1)), draw(expressions(vocab, depth + 1))
    return left + " " + _word(draw, draw(st.sampled_from(["and", "or"]))) + " " + right


# How often each kind of name is drawn.
NAME_SOURCES = ("flag",) * 5 + ("attr",) * 2 + ("computed",) * 3 + ("scalar",) * 3 + ("stamped scalar", "missing")


@st.composite
def names(draw, vocab):
    source = draw(st.sampled_from([s for s in NAME_SOURCES if s in vocab.names]))
    return draw(st.sampled_from(vocab.names[source]))


@st.composite
def comparisons(draw, vocab):
    name = draw(names(vocab))
    kind = draw(st.integers(0, 9))
    if kind < 5:
        op = draw(st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">=", "is", "is not"]))
        op = " ".join(_word(draw, part) for part in op.split())
        target = draw(targets(vocab, name))
        return Both.same(name.text + _space(draw, op.isalpha() or " " in op) + op + " " + target)
    if kind < 7:
        op = draw(st.sampled_from(["in", "not in"]))
        items = draw(st.lists(targets(vocab, name), min_size=1, max_size=3))
        return Both.same(f"{name.text} {_words(draw, op)} [{', '.join(items)}]")
    return draw(contains(vocab, name))


@st.composite
def contains(draw, vocab, name):
    op = draw(st.sampled_from(["contains", "not contains"]))
    if name.list_kind != "mixed" and draw(st.integers(0, 3)) == 0:
        items = draw(st.lists(targets(vocab, name, flat=True), min_size=1, max_size=3))
        runq = f"{name.text} {_words(draw, op)} [{', '.join(items)}]"
        if name.list_kind == "text":
            return Both.same(runq)
        # Guild's equivalent of runq's "every item is in the list".
        every = " and ".join(f"{name.text} contains {item}" for item in items)
        return Both(runq, f"not ({every})" if op.startswith("not") else f"({every})")
    return Both.same(f"{name.text} {_words(draw, op)} {draw(contains_targets(vocab, name))}")


@st.composite
def targets(draw, vocab, name, flat=False):
    """A literal: mostly one of this name's values, perturbed; else any value or keyword."""
    kind = draw(st.integers(0, 9))
    if kind < 6 and name.values:
        value = draw(st.sampled_from(name.values))
    elif kind < 8:
        value = draw(st.sampled_from(vocab.all_values))
    else:
        return draw(st.sampled_from(["true", "false", "undefined", "yes", "no", "null", "0", "1", "''",
                                     "TRUE", "Undefined", "'true'", "1.0", "-1", "'0'"]))
    return draw(literals(value, flat))


@st.composite
def contains_targets(draw, vocab, name):
    value = draw(st.sampled_from(name.values or ("x",)))
    if isinstance(value, list) and value and draw(st.booleans()):
        return draw(literals(draw(st.sampled_from(value)), flat=True))
    if value and draw(st.booleans()):
        text = _piece(draw, str(value))
        return _quoted(text) or "x"
    return draw(targets(vocab, name, flat=True))


@st.composite
def literals(draw, value, flat=False):
    """Filter text for a value, often perturbed: another form, case or nearby number."""
    if value is None:
        return _word(draw, "undefined")
    if isinstance(value, bool):
        return draw(st.sampled_from([_word(draw, str(value).lower()), str(int(value)), "yes" if value else "no",
                                     f"'{str(value).lower()}'"]))
    if isinstance(value, (int, float)):
        return draw(numbers(value))
    if isinstance(value, str):
        return draw(strings(value))
    if isinstance(value, list) and value and not flat:
        items = [draw(literals(item, flat=True)) for item in value[:4]]
        return f"[{', '.join(items)}]"
    return _quoted(_piece(draw, str(value))) or "x"


@st.composite
def numbers(draw, value):
    value = draw(st.sampled_from([value] * 4 + [value + 1, value - 1, value * 2, value / 2, -value, 0,
                                                round(value, 2)]))
    forms = [repr(value), f"{value:g}", f"{value:e}", f"'{value!r}'"]
    if float(value).is_integer():
        forms += [str(int(value)), f"{int(value)}.0"]
    return draw(st.sampled_from([f for f in forms if NUMBER_TOKEN.match(f) or f.startswith("'")]))


@st.composite
def strings(draw, value):
    value = draw(st.sampled_from([value] * 4 + [value.upper(), value.lower(), value[:3], value + "x"]))
    forms = [_quoted(value), _quoted(value, '"')] + ([value] * 2 if is_id(value) else [])
    return draw(st.sampled_from([f for f in forms if f] or ["x"]))


@st.composite
def bare_terms(draw, vocab):
    value = draw(st.sampled_from(vocab.all_values))
    return draw(st.one_of(
        literals(value),
        st.sampled_from(["true", "false", "0", "1", "cat", "''", "undefined", "[1]", "lr", "'x'", "1e-3"]),
    ))


@st.composite
def mangled(draw, text):
    """The text truncated, or with a stray token inserted: mostly a syntax error."""
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        return text[:at]
    stray = draw(st.sampled_from([")", "(", "=", " and ", "[", ",", "'", "&", "!", " not ", "]", "\t", "\n", "#"]))
    return text[:at] + stray + text[at:]


def _piece(draw, text):
    """A piece of text (part of a word, a label, a value's str)."""
    if not text:
        return text
    start = draw(st.integers(0, len(text) - 1))
    return text[start : start + draw(st.integers(1, 12))]


def _quoted(text, quote="'"):
    """text as one string literal Guild's lexer and YAML decode back to it, or None."""
    if quote in text or "\\" in text or "\n" in text or "\t" in text:
        return None if quote == '"' else _quoted(text, '"')
    return f"{quote}{text}{quote}"


def _word(draw, word):
    return draw(st.sampled_from([word, word, word.upper(), word.title()]))


def _words(draw, words):
    return " ".join(_word(draw, w) for w in words.split())


def _space(draw, needed=False):
    return draw(st.sampled_from([" ", " ", "  "] + ([] if needed else ["", ""])))

