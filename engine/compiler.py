"""Compiles a Selection into one parameterized SQL query (a sqlglot tree).

Every user-supplied value, name and pattern becomes a named parameter
(`:p1`, `:p2`, ...); identifiers and SQL text come only from this module.

A comparison with a missing value is NULL in SQL where Guild's test is
False. Without negation that makes no difference (AND and OR are monotone,
and WHERE drops NULL as it drops FALSE); every negation is therefore
`NOT COALESCE(X, FALSE)`, which is Python's `not` of Guild's test.

Shape of the query:

    SELECT ..., ROW_NUMBER() OVER (ORDER BY newest first) AS position
    FROM runs AS r LEFT JOIN <value joins>
    WHERE <the root, and every filter>
    ORDER BY newest first

and with RUN arguments, which apply after the filters:

    WITH selected AS (<the query above, unordered>),
      run_args AS (VALUES ...), resolved_args AS (...)
    SELECT ... FROM resolved_args LEFT JOIN selected ... ORDER BY argument, position
"""

import json
from dataclasses import dataclass, field
from typing import Dict, Optional, Set

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.sqlite import SQLite

from . import pgdialect, tree
from .attrs import is_lazy
from .errors import SelectionError
from .opspec import split_opspec
from .values import stored_number

# Newest first by `started`, else `initialized`; runs with neither last;
# ties in directory-listing order, as Guild's stable sort leaves them.
SORT_ORDER = [
    exp.Ordered(this=exp.Is(this=exp.column("timestamp", "r"), expression=exp.Null()), nulls_first=True),
    exp.Ordered(this=exp.column("timestamp", "r"), desc=True, nulls_first=False),
    exp.Ordered(this=exp.column("listing", "r"), nulls_first=True),
]
RUN_COLUMNS = (
    "id",
    "deleted",
    "dir",
    "operation",
    "op_dir",
    "started",
    "stopped",
    "status",
    "remote",
    "exit_status",
    "pid",
    "label",
    "marked",
)
PYTHON_OPS = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


# Types whose values are equal exactly when their JSON texts are, so that a
# parameter of one is keyed by its value, without json.dumps (not floats:
# 0.0 == -0.0, and NaN != NaN).
EXACT_KEYS = (str, int)


@dataclass
class CompiledQuery:
    expression: exp.Expression
    params: Dict[str, object]
    lazy_attrs: Set[str] = field(default_factory=set)  # raw attributes to decode first
    has_run_args: bool = False
    now_params: Dict[str, str] = field(default_factory=dict)  # parameter -> what of `now` it holds
    dialect: str = "sqlite"  # a key of SPELLINGS

    _rendered: Optional[str] = field(default=None, repr=False)

    def sql(self, pretty=False):
        if pretty or self._rendered is None:
            with tree.big_tree():
                text = self.expression.sql(dialect=SPELLINGS[self.dialect].dialect, pretty=pretty, copy=False)
            if pretty:
                return text
            self._rendered = text
        return self._rendered

    def bound_params(self):
        """Parameters ready for the driver: floats out of int64 range, etc."""
        bindable = SPELLINGS[self.dialect].bindable
        return {name: bindable(value) for name, value in self.params.items()}

    @property
    def uses_scalars(self):
        """Whether the query reads the scalars table (then event files must have been read)."""
        return any(table.name == "scalars" for table in self.expression.find_all(exp.Table))


def compile_selection(selection, now, dialect="sqlite", count=False):
    """Returns the CompiledQuery for a Selection evaluated at `now`
    (datetime), for SQLite or PostgreSQL (`dialect`: sqlite, postgres).

    With `count`, the query gives one row: how many runs the selection has,
    without numbering or ordering them (a selection without RUN arguments)."""
    if count and selection.runs:
        raise ValueError("only a selection without RUN arguments is counted in SQL")
    try:
        with tree.big_tree():
            compiled = _Compiler(now, SPELLINGS[dialect]).compile(selection, count)
            compiled.sql()  # rendering recurses as deep as the expression nests
    except RecursionError:
        raise SelectionError(
            "filter expression nests too deeply to compile", hint="use fewer levels of parentheses and 'not'"
        ) from None
    return compiled


VALUE_FIELDS = ("present", "kind", "num", "str", "folded", "json")


class Value:
    """SQL expressions for one named value, each NULL when not applicable:

    present  non-NULL iff the value is defined (not None)
    kind, num, str, folded, json   as in the attrs table

    Each field is built when first read, so only the fields a test reads
    are built, and then kept: every use of a name shares its nodes (sqlglot
    renders a node wherever it appears; the node's parent is its last use,
    which nothing here relies on). That halves the compile time of a long
    filter that names the same values again and again.
    """

    def __init__(self, build):
        self._build = build  # field name -> a new expression

    def __getattr__(self, field):
        if field not in VALUE_FIELDS:
            raise AttributeError(field)
        node = self._build(field)
        node.meta[SHARED] = True
        setattr(self, field, node)
        return node


SHARED = "runq_shared"  # meta key of a Value's node, which appears wherever the value is used


class _RunqText:
    """A generator that works out each shared node's text once, and writes
    nested ANDs, ORs and parentheses without recursion."""

    def sql(self, expression, key=None, comment=True):
        if self.pretty or key:
            return super().sql(expression, key, comment)
        if type(expression) in LOGIC_ROOTS and not expression.comments:
            return self._logic_sql(expression)
        meta = getattr(expression, "_meta", None)  # not .meta, which would add a dict to every node
        if not meta or not meta.get(SHARED):
            return super().sql(expression, key, comment)
        memo = self.__dict__.setdefault("_shared_sql", {})
        text = memo.get(id(expression))
        if text is None:
            text = memo[id(expression)] = super().sql(expression, key, comment)
        return text

    def _logic_sql(self, root):
        """What sqlglot writes (without `pretty`) for nested connectors and
        parentheses, worked out with a stack: sqlglot recurses through
        several Python frames per level, and a balanced filter of 1,000
        terms nests ten levels deep. As in sqlglot, a connector's comments
        follow its word; a parenthesis with comments is left to self.sql."""
        parts, pending = [], [root]
        while pending:
            node = pending.pop()
            kind = type(node)
            if kind is str:
                parts.append(node)
            elif kind is exp.Paren and not node.comments:
                pending += (")", node.this, "(")
            elif kind in CONNECTOR_WORDS:
                word = CONNECTOR_WORDS[kind]
                if node.comments:
                    word = self.maybe_comment(word, comments=node.comments)
                pending += (node.right, f" {word} ", node.left)
            else:
                parts.append(self.sql(node))
        return "".join(parts)


# What _logic_sql writes itself: from a root of LOGIC_ROOTS (which both
# dialects write as sqlglot's Generator does), parentheses and connectors,
# the way sqlglot's connector_sql runs through a chain of them.
LOGIC_ROOTS = {exp.Paren, exp.And, exp.Or}
CONNECTOR_WORDS = {exp.And: "AND", exp.Or: "OR", exp.Xor: "XOR"}


class RunqSQLite(SQLite):
    """SQLite, written by _RunqText: each shared node's text worked out once."""

    class Generator(_RunqText, SQLite.Generator):
        pass


class RunqPostgres(Postgres):
    """PostgreSQL, likewise; parameters as psycopg binds them: %(p1)s."""

    class Generator(_RunqText, Postgres.Generator):
        pass


class _Compiler:
    def __init__(self, now, spelling):
        self.now = now
        self.spell = spelling
        self.params = {}
        self.param_names = {}
        self.joins = []
        self.values = {}
        self.lazy_attrs = set()
        self.now_roles = {}  # parameter -> role, for values taken from `now`

    # Parameters and joins

    def param(self, value):
        """A placeholder for a value; equal values (of one type) share one."""
        key = (type(value), value if type(value) in EXACT_KEYS else json.dumps(value, default=str))
        name = self.param_names.get(key)
        if name is None:
            name = self.param_names[key] = f"p{len(self.params) + 1}"
            self.params[name] = value
        return exp.Placeholder(this=name)

    def now_param(self, role, value):
        """A placeholder of its own for a value taken from `now` (engine.sqlcache
        recomputes it by `role` when it reuses the SQL at another time)."""
        name = f"p{len(self.params) + 1}"
        self.params[name] = value
        self.now_roles[name] = role
        return exp.Placeholder(this=name)

    def join(self, table, alias, *conditions):
        on = _and(*conditions) if len(conditions) > 1 else conditions[0]
        self.joins.append(exp.Join(this=table_ref(table, alias), on=on, side="LEFT"))

    # The query

    def compile(self, selection, count=False):
        # Counting visits every run of the root, usually half the home or
        # more: SQLite reads the table faster in order than run by run through
        # the index on `deleted`, which `deleted + 0` keeps it from.
        deleted = exp.Add(this=col("deleted"), expression=exp.Literal.number(0)) if count else col("deleted")
        where = [exp.EQ(this=deleted, expression=self.param(int(selection.deleted)))]
        where += self.option_filters(selection)
        if selection.filter:
            where.append(self.predicate(selection.filter.root))
        if count:  # every join matches at most one row of a run: one row per selected run
            query = self.selected_runs(where, [exp.alias_(exp.Count(this=exp.Star()), "runs", copy=False)])
        elif selection.runs:
            query = self.run_args_query(self.selected_runs(where), selection.runs)
        else:
            query = self.selected_runs(where).order_by(*[o.copy() for o in SORT_ORDER], copy=False)
        params, new_names = _number_in_order(query, self.params)
        now_params = {new_names[old]: role for old, role in self.now_roles.items() if old in new_names}
        return CompiledQuery(query, params, self.lazy_attrs, bool(selection.runs), now_params, self.spell.name)

    def selected_runs(self, where, columns=None):
        if columns is None:
            position = exp.alias_(
                exp.Window(this=exp.RowNumber(), order=exp.Order(expressions=[o.copy() for o in SORT_ORDER])),
                "position",
                copy=False,
            )
            columns = [col(c) for c in RUN_COLUMNS] + [position]
        select = exp.Select(expressions=columns)
        select = select.from_(table_ref("runs", "r"), copy=False)
        for join in self.joins:
            select = select.join(join, copy=False)
        return select.where(_and(*where), copy=False)

    def run_args_query(self, selected, run_args):
        rows = [
            exp.Tuple(
                expressions=[
                    exp.Literal.number(i),
                    self.spell.flag(arg.by_index),
                    self.spell.typed(self.param(arg.lo), "BIGINT"),
                    self.spell.typed(self.param(arg.hi), "BIGINT"),
                    self.spell.typed(self.param(arg.text), "TEXT"),
                ]
            )
            for i, arg in enumerate(run_args, 1)
        ]
        args_cte = exp.Select(expressions=[exp.Star()]).from_(
            exp.Values(expressions=rows, alias=exp.TableAlias(this=exp.to_identifier("_values")))
        )
        count = exp.Subquery(this=exp.Select(expressions=[exp.Count(this=exp.Star())]).from_(table_ref("selected")))
        a = lambda name: exp.column(name, "a")
        by_index = _and(
            a("by_index"),
            _or(exp.Is(this=a("hi"), expression=exp.Null()), exp.LTE(this=a("hi"), expression=count)),
        )
        resolved = exp.Select(
            expressions=[a("arg"), a("lo"), a("hi"), a("text"), exp.alias_(exp.Paren(this=by_index), "by_index")]
        ).from_(table_ref("run_args", "a"))
        s = lambda name: exp.column(name, "s")
        by_position = _and(
            exp.GT(this=s("position"), expression=a("lo")),
            _or(exp.Is(this=a("hi"), expression=exp.Null()), exp.LTE(this=s("position"), expression=a("hi"))),
        )
        by_prefix = exp.EQ(
            this=exp.Substring(this=s("id"), start=exp.Literal.number(1), length=exp.Length(this=a("text"))),
            expression=a("text"),
        )
        on = exp.Case(ifs=[exp.If(this=a("by_index"), true=by_position)], default=by_prefix)
        columns = [a("arg"), exp.alias_(a("text"), "arg_text"), a("by_index")]
        query = (
            exp.Select(expressions=columns + [s(c) for c in RUN_COLUMNS] + [s("position")])
            .from_(table_ref("resolved_args", "a"))
            .join(exp.Join(this=table_ref("selected", "s"), on=on, side="LEFT"))
            .order_by(a("arg"), s("position"))
            .with_(exp.to_identifier("selected"), as_=selected)
            .with_(exp.to_identifier("run_args"), as_=args_cte)
            .with_(exp.to_identifier("resolved_args"), as_=resolved)
        )
        _name_cte_columns(query, "run_args", ["arg", "by_index", "lo", "hi", "text"])
        return query

    # Filter options (-Fo -Fl -Fu -Ft -Fc -Fm -Fn -Fs -Fd, status)

    def option_filters(self, selection):
        builders = [
            self.status_filter,
            self.operation_filter,
            self.label_filter,
            self.tag_filter,
            self.comment_filter,
            self.marked_filter,
            self.started_filter,
            self.digest_filter,
        ]
        return [f for f in (build(selection) for build in builders) if f is not None]

    def status_filter(self, selection):
        parts = []
        if selection.statuses:
            parts.append(exp.In(this=col("status"), expressions=[self.param(s) for s in selection.statuses]))
        if selection.not_statuses:
            parts.append(
                exp.Not(this=exp.In(this=col("status"), expressions=[self.param(s) for s in selection.not_statuses]))
            )
        return _and(*parts) if parts else None

    def operation_filter(self, selection):
        if not selection.operations:
            return None
        return _any(self.operation_match(ref) for ref in selection.operations)

    def operation_match(self, ref):
        if ref.startswith("^") or ref.endswith("$"):
            return self.pattern_match("regexp", "operation", ref)
        parts = zip(("opspec_pkg", "opspec_model", "opspec_op"), split_opspec(ref))
        tests = [self.opspec_part_match(column, part) for column, part in parts if part]
        return _and(*tests) if tests else exp.true()

    def opspec_part_match(self, column, part):
        if "*" in part:
            return self.pattern_match("fnmatch", column, part)
        return exp.EQ(this=col(column), expression=self.param(part))

    def pattern_match(self, test, column, pattern):
        """A runs column tested with Python's re.search (regexp) or fnmatch."""
        return self.spell.pattern_match(test, col(column), self.param(self.spell.pattern_value(test, column, pattern)))

    def label_filter(self, selection):
        # Guild tests str(label).strip(): Python's whitespace, not just spaces.
        label = exp.Trim(  # one node, used by every test below
            this=exp.Coalesce(this=col("label"), expressions=[exp.Literal.string("")]),
            expression=self.param(WHITESPACE),
        )
        unlabeled = exp.EQ(this=label, expression=exp.Literal.string(""))
        if selection.labels:
            return _any(
                unlabeled if value == "-" else _contains_text(label, self.param(value))
                for value in selection.labels
            )
        return unlabeled if selection.unlabeled else None

    def tag_filter(self, selection):
        if not selection.tags:
            return None
        return _exists(
            "tags",
            "t",
            exp.In(this=exp.column("tag", "t"), expressions=[self.param(t) for t in selection.tags]),
        )

    def comment_filter(self, selection):
        if not selection.comments:
            return None
        text = col("comments_text")
        return _any(
            exp.EQ(this=text, expression=exp.Literal.string(""))
            if value == "-"
            else _contains_text(text, self.param(value.lower()))
            for value in selection.comments
        )

    def marked_filter(self, selection):
        if selection.marked is None:
            return None
        return exp.EQ(this=col("marked"), expression=exp.Literal.number(int(selection.marked)))

    def started_filter(self, selection):
        if selection.started is None:
            return None
        from .timerange import epoch_bounds  # only --started needs it

        lo, hi = epoch_bounds(selection.started, self.now)
        ts = col("timestamp")
        tests = [exp.NEQ(this=exp.Coalesce(this=ts, expressions=[exp.Literal.number(0)]), expression=exp.Literal.number(0))]
        if lo is not None:
            tests.append(exp.GTE(this=ts, expression=self.now_param("started_from", lo)))
        if hi is not None:
            tests.append(exp.LT(this=ts, expression=self.now_param("started_to", hi)))
        return _and(*tests)

    def digest_filter(self, selection):
        if not selection.digest:
            return None
        digest = exp.Coalesce(this=col("sourcecode_digest"), expressions=[exp.Literal.string("")])
        return exp.EQ(this=exp.StrPosition(this=digest, substr=self.param(selection.digest)), expression=exp.Literal.number(1))

    # Filter expressions (-F)

    def predicate(self, node):
        return PREDICATES[type(node)](self, node)

    def logical(self, node):
        """A chain of one operator becomes one flat AND/OR (they are associative),
        so long expressions do not nest; other operands are parenthesized."""
        combine = _and if node.op == "and" else _or
        return combine(*[self.predicate(operand) for operand in _chain(node)])

    def negation(self, node):
        return _not(self.predicate(node.operand))

    def truth(self, node):
        return exp.true() if node.term.value else exp.false()

    def compare(self, node):
        value = self.value(node.name)
        test = self.equality if node.op in ("=", "!=") else self.ordering
        result = test(value, node.op, node.target)
        return _not(result) if node.op == "!=" else result

    def equality(self, value, _op, target):
        if isinstance(target, tree.ListLiteral):
            return self.list_compare(value, "=", target)
        if target.value is None:
            return exp.Is(this=value.present, expression=exp.Null())
        column, operand = self.typed_operand(value, target.value)
        return exp.EQ(this=column, expression=operand)

    def ordering(self, value, op, target):
        if isinstance(target, tree.ListLiteral):
            return self.list_compare(value, op, target)
        if target.value is None:
            return exp.false()
        column, operand = self.typed_operand(value, target.value)
        if isinstance(target.value, str):
            column = self.spell.code_point_order(column)
        return PYTHON_OPS[op](this=column, expression=operand)

    def typed_operand(self, value, literal):
        """The value column a literal compares with, and the literal's parameter."""
        if isinstance(literal, str):
            return value.str, self.param(literal)
        return value.num, self.param(literal)

    def list_compare(self, value, op, target):
        if _is_list(value) == exp.false():
            return exp.false()
        return _and(
            _is_list(value),
            exp.Anonymous(
                this="runq_list_compare",
                expressions=[value.json, exp.Literal.string(op), self.param(_target_json(target))],
            ),
        )

    def membership(self, node):
        value = self.value(node.name)
        found = _any(self.equality(value, "=", item) for item in node.target.items)
        return _not(found) if node.negated else found

    def contains(self, node):
        value = self.value(node.name)
        target = node.target.value
        in_list = exp.Anonymous(
            this="runq_list_contains", expressions=[value.json, self.param(json.dumps(target))]
        )
        in_text = _contains_text(value.folded, self.param(str(target).lower()))
        is_list = _is_list(value)
        found = in_text if is_list == exp.false() else exp.Case(ifs=[exp.If(this=is_list, true=in_list)], default=in_text)
        return _not(found) if node.negated else found

    # Values of names

    def value(self, name):
        """The Value of a name: its joins are made once, however often the name
        is used, and each use gets expressions of its own (a tree node has one parent)."""
        if name.text not in self.values:
            self.values[name.text] = VALUE_SOURCES[name.kind](self, name)
        return self.values[name.text]

    def attr_value(self, name, key=None):
        key = name.key if key is None else key
        if key in COMPUTED_ATTRS:
            return computed_value(lambda: COMPUTED_ATTRS[key](self))
        if is_lazy(key):
            self.lazy_attrs.add(key)
        alias = f"a{len(self.joins) + 1}"
        self.join("attrs", alias, *self.stored_join("attr_names", alias, key))
        return stored_value(alias)

    def flag_value(self, name, after=()):
        alias = f"f{len(self.joins) + 1}"
        self.join("flags", alias, *self.stored_join("flag_names", alias, name.key), *after)
        return stored_value(alias)

    def scalar_value(self, name, after=()):
        alias = f"s{len(self.joins) + 1}"
        prefix, tag = name.scalar_key
        s = lambda c: col(c, alias)
        which = (
            exp.EQ(this=s("prefix"), expression=self.param(prefix))
            if prefix is not None
            else exp.EQ(this=s("preferred"), expression=exp.Literal.number(1))
        )
        self.join(
            "scalars",
            alias,
            exp.EQ(this=s("run_key"), expression=col("key")),
            exp.EQ(this=s("tag"), expression=self.param(tag)),
            which,
            *after,
        )
        # A NaN last value is NULL in SQLite, for Guild as for runq: undefined.
        columns = {"present": "last_val", "num": "last_val", "folded": "last_folded"}
        fields = {"num": lambda: self.spell.exact_number(s("last_val"))}
        return Value(
            lambda field: fields[field]() if field in fields else s(columns[field]) if field in columns else exp.Null()
        )

    def unprefixed_value(self, name):
        """attr, else flag, else scalar: each join only when the ones before found nothing."""
        attr = self.attr_value(name)
        if name.key in COMPUTED_ATTRS and name.key not in NULLABLE_COMPUTED:
            return attr
        missing = lambda source: exp.Is(this=source.present, expression=exp.Null())
        flag = self.flag_value(name, after=[missing(attr)])
        scalar = self.scalar_value(name, after=[missing(attr), missing(flag)])
        return coalesce_values([attr, flag, scalar], self.spell)

    def stored_join(self, names, alias, key):
        c = lambda name: col(name, alias)
        name = self.param(key)
        return (
            exp.EQ(this=c("run_key"), expression=self.spell.named_key(col("key"), names, name.copy())),
            exp.EQ(this=c("name"), expression=name),
            exp.NEQ(this=c("kind"), expression=exp.Literal.string("null")),
        )

    # Computed attributes (Guild's AttrReader): SQL over the runs table

    def time_text(self, column):
        when = exp.Div(this=col(column), expression=exp.Literal.number(1000000), typed=True)
        formatted = self.spell.local_time(when)
        return exp.Case(ifs=[exp.If(this=self.spell.truthy(col(column)), true=formatted)], default=exp.Literal.string(""))

    def duration_text(self):
        now_us = int(self.now.timestamp() * 1000000)
        started = col("started")
        running = _and(
            exp.EQ(this=col("status"), expression=exp.Literal.string("running")),
            exp.Not(this=exp.Is(this=started, expression=exp.Null())),
        )
        stopped = _and(self.spell.truthy(col("stopped")), exp.Not(this=exp.Is(this=started, expression=exp.Null())))
        duration = lambda microseconds: self.spell.clock_text(_seconds(microseconds))
        return exp.Case(
            ifs=[
                exp.If(this=running, true=duration(exp.Sub(this=self.now_param("now", now_us), expression=started))),
                exp.If(this=stopped, true=duration(exp.Sub(this=col("stopped"), expression=started))),
            ]
        )


def _and(*conditions):
    return _connect(exp.And, conditions)


def _or(*conditions):
    return _connect(exp.Or, conditions)


def _connect(connector, conditions):
    """`a AND b AND c` (what exp.and_ builds, without its parsing and copying
    checks): left-deep, with an operand that is itself AND or OR in parentheses."""
    conditions = [c for c in conditions if c is not None]
    if len(conditions) == 1:
        return conditions[0]
    wrapped = [exp.Paren(this=c) if isinstance(c, exp.Connector) else c for c in conditions]
    node = wrapped[0]
    for condition in wrapped[1:]:
        node = connector(this=node, expression=condition)
    return node


def _chain(node):
    """The operands of a run of Logical nodes with the same operator, in order."""
    operands, pending = [], [node]
    while pending:
        current = pending.pop()
        if isinstance(current, tree.Logical) and current.op == node.op:
            pending += [current.right, current.left]
        else:
            operands.append(current)
    return operands


def col(name, table="r"):
    """A column reference, built directly (exp.column re-checks the names)."""
    return exp.Column(this=exp.Identifier(this=name, quoted=False), table=exp.Identifier(this=table, quoted=False))


def stored_value(alias):
    """A value of the attrs or flags table under `alias`."""
    return Value(lambda field: col("run_key" if field == "present" else field, alias))


def computed_value(text):
    """A computed attribute: always a string (undefined when NULL); `text`
    builds its SQL."""
    fields = {
        "present": text,
        "kind": lambda: exp.Literal.string("str"),
        "str": text,
        "folded": lambda: exp.Nullif(this=exp.Lower(this=text()), expression=exp.Literal.string("")),
    }
    return Value(lambda field: fields[field]() if field in fields else exp.Null())


def coalesce_values(values, spelling):
    """One Value from several sources, of which at most one is joined."""
    coalesce = lambda field: spelling.coalesce_present if field == "present" else _coalesce
    return Value(lambda field: coalesce(field)([getattr(v, field) for v in values]))


def _coalesce(expressions):
    present = [e for e in expressions if not isinstance(e, exp.Null)]
    if not present:
        return exp.Null()
    if len(present) == 1:
        return present[0]
    return exp.Coalesce(this=present[0], expressions=present[1:])


def _short(column, length=8):
    return exp.Substring(this=col(column), start=exp.Literal.number(1), length=exp.Literal.number(length))


COMPUTED_ATTRS = {
    "id": lambda c: col("id"),
    "run": lambda c: _short("id"),
    "short_id": lambda c: _short("id"),
    "model": lambda c: col("model"),
    "op": lambda c: col("op"),
    "operation": lambda c: col("operation"),
    "from": lambda c: col("pkg_desc"),
    "sourcecode": lambda c: exp.Coalesce(this=_short("sourcecode_digest"), expressions=[exp.Literal.string("")]),
    "started": lambda c: c.time_text("started"),
    "stopped": lambda c: c.time_text("stopped"),
    "status": lambda c: col("status"),
    "time": lambda c: c.duration_text(),
}

NULLABLE_COMPUTED = {"time"}

VALUE_SOURCES = {
    "attr": _Compiler.attr_value,
    "flag": _Compiler.flag_value,
    "scalar": _Compiler.scalar_value,
    None: _Compiler.unprefixed_value,
}

PREDICATES = {
    tree.Logical: _Compiler.logical,
    tree.Not: _Compiler.negation,
    tree.Truth: _Compiler.truth,
    tree.Compare: _Compiler.compare,
    tree.In: _Compiler.membership,
    tree.Contains: _Compiler.contains,
}


def _seconds(microseconds):
    """Whole seconds (integer division, toward zero in both dialects)."""
    return exp.Paren(this=exp.Div(this=exp.Paren(this=microseconds), expression=exp.Literal.number(1000000), typed=True))


class SQLiteSpelling:
    """How a selection spells what SQLite and PostgreSQL spell differently
    (PostgresSpelling below): SQLite's words, the compiler's first dialect."""

    name = "sqlite"
    dialect = RunqSQLite

    @staticmethod
    def local_time(seconds):
        """Local time text of a number of seconds since the epoch, as Guild shows it."""
        return exp.Anonymous(
            this="strftime",
            expressions=[
                exp.Literal.string("%Y-%m-%d %H:%M:%S"),
                seconds,
                exp.Literal.string("unixepoch"),
                exp.Literal.string("localtime"),
            ],
        )

    @staticmethod
    def clock_text(seconds):
        """H:MM:SS of a number of seconds, as Guild shows a run's time."""
        return exp.Anonymous(
            this="printf",
            expressions=[
                exp.Literal.string("%d:%02d:%02d"),
                exp.Div(this=seconds, expression=exp.Literal.number(3600), typed=True),
                exp.Mod(this=exp.Paren(this=exp.Div(this=seconds, expression=exp.Literal.number(60), typed=True)), expression=exp.Literal.number(60)),
                exp.Mod(this=seconds, expression=exp.Literal.number(60)),
            ],
        )

    @staticmethod
    def truthy(number):
        """An integer column as a condition."""
        return number

    @staticmethod
    def flag(value):
        """A literal a condition reads."""
        return exp.Literal.number(int(value))

    @staticmethod
    def typed(param, _type):
        """A parameter whose type the database must know (in VALUES)."""
        return param

    @staticmethod
    def code_point_order(text):
        """Text that `<` compares by code point, as Python compares str."""
        return text

    @staticmethod
    def exact_number(number):
        """A REAL column beside `num` in one COALESCE."""
        return number

    @staticmethod
    def named_key(key, names, name):
        """The run key that attrs or flags rows of `name` are joined on: NULL
        when no run has that name (the table `names` lists every name the
        index holds). SQLite seeks a LEFT JOIN's rows before it tests the
        rest of its ON clause, and a NULL key is no seek: a name that is a
        flag or a scalar costs no attribute seek per run."""
        known = exp.In(this=name, field=table_ref(names))  # SQLite: IN a table of one column
        return exp.Case(ifs=[exp.If(this=known, true=key)])

    @staticmethod
    def coalesce_present(expressions):
        """The first non-NULL of expressions that only say whether a value is
        defined (a run key, a time text...)."""
        return _coalesce(expressions)

    @staticmethod
    def pattern_value(_test, _column, pattern):
        """The value of a pattern's parameter."""
        return pattern

    @staticmethod
    def pattern_match(test, column, param):
        """A column matched by a pattern (SQL functions the executor registers)."""
        if test == "regexp":
            return exp.RegexpLike(this=column, expression=param)
        return exp.Anonymous(this="runq_fnmatch", expressions=[column, param])

    bindable = staticmethod(lambda value: _bindable(value))


class PostgresSpelling(SQLiteSpelling):
    """PostgreSQL's words, where they differ: see engine/pgdialect.py."""

    name = "postgres"
    dialect = RunqPostgres

    named_key = staticmethod(lambda key, _names, _name: key)  # PostgreSQL plans the join as a whole
    local_time = staticmethod(pgdialect.local_time_text)
    clock_text = staticmethod(pgdialect.clock_text)
    truthy = staticmethod(pgdialect.truthy)
    flag = staticmethod(lambda value: exp.Boolean(this=bool(value)))
    typed = staticmethod(lambda param, type_: exp.Cast(this=param, to=exp.DataType.build(type_)))
    code_point_order = staticmethod(pgdialect.code_point_order)
    exact_number = staticmethod(pgdialect.exact_number)
    # PostgreSQL's COALESCE wants one type: as text, each is NULL where it was.
    coalesce_present = staticmethod(lambda expressions: _coalesce([pgdialect.as_text(e) for e in expressions]))
    pattern_value = staticmethod(lambda test, column, pattern: pgdialect.PythonMatch(test, column, pattern))
    pattern_match = staticmethod(pgdialect.any_of)
    bindable = staticmethod(lambda value: pgdialect.bindable(_bindable(value)))


SPELLINGS = {spelling.name: spelling for spelling in (SQLiteSpelling, PostgresSpelling)}


def _is_list(value):
    if isinstance(value.kind, (exp.Literal, exp.Null)):
        return exp.false()  # computed attributes and scalars are never lists
    return exp.EQ(this=value.kind, expression=exp.Literal.string("list"))


def _not(condition):
    """Python's `not` of a test that SQL may find NULL (Guild: False)."""
    return exp.Not(this=_two_valued(condition))


def _two_valued(condition):
    """A condition that is false, never NULL, where SQL would say NULL."""
    return exp.Coalesce(this=condition, expressions=[exp.false()])


def _contains_text(text, needle):
    return exp.GT(this=exp.StrPosition(this=text, substr=needle), expression=exp.Literal.number(0))


def _any(conditions):
    conditions = list(conditions)
    return _or(*conditions) if len(conditions) > 1 else conditions[0]


def _exists(table, alias, condition):
    return exp.Exists(
        this=exp.Select(expressions=[exp.Literal.number(1)])
        .from_(table_ref(table, alias))
        .where(_and(exp.EQ(this=col("run_key", alias), expression=col("key")), condition))
    )


def table_ref(name, alias=None):
    table = exp.Table(this=exp.to_identifier(name))
    if alias:
        table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return table


def _target_json(target):
    return json.dumps(target.value)


def _name_cte_columns(query, name, columns):
    for cte in query.args["with_"].expressions:
        if cte.alias == name:
            cte.set("alias", exp.TableAlias(this=exp.to_identifier(name), columns=[exp.to_identifier(c) for c in columns]))


def _number_in_order(query, params):
    """Renames parameters :p1, :p2, ... in the order they appear in the SQL;
    (the parameters by their new names, {old name: new name})."""
    new_names, renamed = {}, {}
    for placeholder in _placeholders(query):
        old_name = placeholder.name
        if old_name not in new_names:
            new_names[old_name] = f"p{len(new_names) + 1}"
            renamed[new_names[old_name]] = params[old_name]
        placeholder.set("this", new_names[old_name])
    return renamed, new_names


_NO_PLACEHOLDERS = {exp.Column, exp.Identifier, exp.Literal, exp.Null, exp.Boolean, exp.Table}


def _placeholders(node):
    """The Placeholder nodes under `node`, depth first in argument order (as
    sqlglot's find_all, which takes a third of the compile time on long
    filters). A node that appears in several places (a value's, shared by
    its uses) is walked, and its placeholders given, only where it first
    appears, so each is renamed once."""
    found, pending, seen = [], [node], set()
    while pending:
        node = pending.pop()
        kind = type(node)
        if kind in _NO_PLACEHOLDERS or id(node) in seen:
            continue
        seen.add(id(node))
        if kind is exp.Placeholder:
            found.append(node)
            continue
        for value in reversed(node.args.values()):  # pending is a stack: the first child last
            if type(value) is list:
                pending.extend(v for v in reversed(value) if isinstance(v, exp.Expression))
            elif isinstance(value, exp.Expression):
                pending.append(value)
    return found


def _bindable(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return stored_number(value)
    return value
