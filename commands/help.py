"""`runq help TOPIC`: how selections are written, without Guild's manual at hand."""

from typing import Annotated, Optional

import typer

from ..engine.errors import SelectionError

FILTERS = """\
Filter expressions (-F, --filter EXPR)

A filter compares run attributes, flags and scalars with values:

  runq runs list -F 'batch-size = 100 and loss < 0.8'

Quote EXPR when it holds spaces or characters the shell uses (< > ( ) ...).

Comparisons
  =  !=  <>  <  <=  >  >=     compare a value with a target
  is, is not                  the same as = and !=
  in [a, b], not in [a, b]    membership in a list
  contains, not contains      text: case-insensitive substring;
                              a list value: membership (case-sensitive)
  x is undefined              x is missing; `is not undefined`: present

Logic: and, or, not, and parentheses. A bare value is also an expression,
true when the value is: `true` and any word select every run, so write
`marked = true`, not `marked`.

Precedence: `not` binds tightest. `and` and `or` share ONE level and group
to the right, as in Guild:

  a and b or c     means   a and (b or c)
  a or b and c     means   a or (b and c)

so `operation = train and acc > 0.9 or loss < 0.3` keeps only train runs.
runq warns when an expression mixes `and` and `or` without parentheses;
use parentheses to say what you mean.

Values
  1, -2, .5, 1e-4         numbers (int or float; write the exponent with e)
  'text', "text"          quoted strings; '100' is the string, not a number
  word                    a bare word is a string, never decoded: yes is 'yes'
  true, false             booleans
  undefined               the missing value
  [a, 1, 'b c']           a list

Comparisons are Python's: numbers (bool, int, float) compare with numbers,
strings with strings; a comparison across kinds is false (and `not` of it
true). `contains` is false for a missing or empty value.

Names
  NAME            the run attribute NAME if it has a value, else the flag
                  NAME, else the last value of scalar NAME
  attr:NAME       only the attribute (any file in .guild/attrs, or one of
                  id, run, short_id, model, op, operation, from, sourcecode,
                  started, stopped, status, time, label, tags, marked, ...)
  flag:NAME       only the flag
  scalar:TAG      only the scalar's last value, under any prefix
  scalar:PREFIX#TAG   the scalar logged under PREFIX (e.g. eval#loss)

started and stopped read as local time text, 'YYYY-MM-DD HH:MM:SS'.

Examples
  operation = train and acc > 0.9
  operation = train and (acc > 0.9 or loss < 0.3)
  batch-size in [100, 200]
  batch-size not in [400, 800]
  batch-size is undefined
  label contains best and operation not in [test, deploy]
  status in [error, terminated]
  flag:label = baseline
  scalar:eval#loss < 0.2

The other filter options add to -F (all must pass): -Fo operation, -Fl
label ('-' for none), -Fu unlabeled, -Ft tag, -Fc comment, -Fm marked,
-Fn unmarked, -Fs started (see 'runq help started'), -Fd source code
digest, and the status flags -Sr -Sc -Se -St -Sp -Ss (combine as -Set).
Print the SQL a selection runs with --sql.
"""

STARTED = """\
Start time ranges (-Fs, --started RANGE)

A run passes when it started (else, when it was initialized) within RANGE,
in local time. Quote RANGE: --started 'last 2 hours'.

  after DATETIME
  before DATETIME
  between DATETIME and DATETIME   (in either order)
  last N minutes|hours|days       (min, hr and singular forms work too)
  today, yesterday
  this week|month|year
  last week|month|year            the previous calendar week, month, year
  N days|weeks|months|years ago   that whole calendar day, week, ...

DATETIME is a date YY-MM-DD or YYYY-MM-DD (the year may be left out: 7-1),
a time HH:MM[:SS] (24-hour clock), or both: '7-1 9:00'. Weeks start on
Monday.

Examples
  after 7-1
  after 9:00
  between 1-1 and 4-30
  between 10:00 and 15:00
  last 30 min
  last 6 hours
  today
  this week
  last month
  3 weeks ago

Guild 0.9.0 documents `last week|month|year` but refuses it; runq accepts
it, with the meaning above.
"""

RUNS = """\
Naming runs (RUN arguments)

runs list, delete, purge and restore take any number of RUN arguments:

  N               the Nth run of the list (1 is the newest)
  START:END       runs START to END, both included; either may be left
                  out: 3: is from the third on, :5 the five newest,
                  : every run
  ID              the run whose id starts with ID (it must match one run)

Without RUN arguments every selected run is meant (for list, the newest 20
are shown; -a shows all, -m 20 more, -n N the first N).

Indexes count runs after the filters: with -Se, 1 is the newest run that
ended in an error. `runq runs list` with the same filters shows the
indexes that delete, purge and restore would use (purge and restore count
deleted runs: list them with --deleted). An index or range outside the
list is read as a run id prefix. Indexes change as runs start, end and are
deleted; ids do not.

Examples
  runq runs delete 1 3:5
  runq runs purge --dry-run -Fo train :10
  runq runs restore a1b2c3
"""

TOPICS = {"filters": FILTERS, "started": STARTED, "runs": RUNS}
TOPIC_SUMMARIES = {
    "filters": "filter expressions (-F): operators, precedence, values, names",
    "started": "start time ranges (--started)",
    "runs": "RUN arguments: indexes, ranges and run ids",
}
SEE_ALSO = "See 'runq help filters', 'runq help started' and 'runq help runs'."


def help_topic(
    topic: Annotated[Optional[str], typer.Argument(metavar="[TOPIC]", help="filters, started or runs.")] = None,
):
    """Explain how to select runs: filters, started or runs."""
    if topic is None:
        typer.echo("Help topics (runq help TOPIC):\n")
        for name, summary in TOPIC_SUMMARIES.items():
            typer.echo(f"  {name:<9} {summary}")
        return
    if topic not in TOPICS:
        raise SelectionError(f"no help topic '{topic}'", hint=f"use one of {', '.join(TOPICS)}")
    typer.echo(TOPICS[topic], nl=False)
