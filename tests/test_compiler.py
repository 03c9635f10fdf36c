"""The compiler: golden SQL for each filter option and expression form, and
every table and column it emits exists in schema.sql."""

import re
import sqlite3
import sys
from datetime import datetime

import pytest
import sqlglot
from sqlglot import exp

from runq.engine.compiler import WHITESPACE, compile_selection
from runq.engine.indexer import schema_text
from runq.engine.opspec import split_opspec
from runq.engine.selection import build_selection

NOW = datetime(2026, 1, 1, 12, 0, 0)


def where_and_params(**options):
    """(WHERE of the filtered runs, their joins, parameters) of a selection."""
    compiled = compile_selection(build_selection(**options), NOW)
    with_ = compiled.expression.args.get("with_")
    selected = with_.expressions[0].this if with_ else compiled.expression
    joins = [j.sql(dialect="sqlite") for j in selected.args.get("joins") or []]
    return selected.args["where"].this.sql(dialect="sqlite"), joins, compiled.params


GOLDEN = [
    ({}, "r.deleted = :p1", [], {"p1": 0}),
    ({"deleted": True}, "r.deleted = :p1", [], {"p1": 1}),
    (
        {"status_flags": {"completed": True, "error": True, "running": False}},
        "r.deleted = :p1 AND (r.status IN (:p2, :p3) AND NOT r.status IN (:p4))",
        [],
        {"p1": 0, "p2": "completed", "p3": "error", "p4": "running"},
    ),
    (
        {"status_chars": "et"},
        "r.deleted = :p1 AND r.status IN (:p2, :p3)",
        [],
        {"p1": 0, "p2": "error", "p3": "terminated"},
    ),
    ({"operations": ["train"]}, "r.deleted = :p1 AND r.opspec_op = :p2", [], {"p1": 0, "p2": "train"}),
    ({"operations": ["^tr"]}, "r.deleted = :p1 AND r.operation REGEXP :p2", [], {"p1": 0, "p2": "^tr"}),
    (
        {"operations": ["m*:train"]},
        "r.deleted = :p1 AND (RUNQ_FNMATCH(r.opspec_model, :p2) AND r.opspec_op = :p3)",
        [],
        {"p1": 0, "p2": "m*", "p3": "train"},
    ),
    ({"operations": ["a/b/c"]}, "r.deleted = :p1 AND TRUE", [], {"p1": 0}),
    (
        {"labels": ["best", "-"]},
        "r.deleted = :p1 AND (INSTR(TRIM(COALESCE(r.label, ''), :p2), :p3) > 0"
        " OR TRIM(COALESCE(r.label, ''), :p2) = '')",
        [],
        {"p1": 0, "p2": WHITESPACE, "p3": "best"},
    ),
    ({"unlabeled": True}, "r.deleted = :p1 AND TRIM(COALESCE(r.label, ''), :p2) = ''", [], {"p1": 0, "p2": WHITESPACE}),
    (
        {"tags": ["a", "b"]},
        "r.deleted = :p1 AND EXISTS(SELECT 1 FROM tags AS t WHERE t.run_key = r.key AND t.tag IN (:p2, :p3))",
        [],
        {"p1": 0, "p2": "a", "p3": "b"},
    ),
    (
        {"comments": ["Bob"]},
        "r.deleted = :p1 AND INSTR(r.comments_text, :p2) > 0",
        [],
        {"p1": 0, "p2": "bob"},
    ),
    ({"marked": True}, "r.deleted = :p1 AND r.marked = 1", [], {"p1": 0}),
    ({"unmarked": True}, "r.deleted = :p1 AND r.marked = 0", [], {"p1": 0}),
    (
        {"digest": "ab12"},
        "r.deleted = :p1 AND INSTR(COALESCE(r.sourcecode_digest, ''), :p2) = 1",
        [],
        {"p1": 0, "p2": "ab12"},
    ),
    (
        {"started": "after 2025-12-31 10:00"},
        "r.deleted = :p1 AND (COALESCE(r.timestamp, 0) <> 0 AND r.timestamp >= :p2)",
        [],
        {"p1": 0, "p2": int(datetime(2025, 12, 31, 10).timestamp()) * 1000000},
    ),
    (
        {"filter_expr": "flag:lr >= 0.1"},
        "r.deleted = :p2 AND f1.num >= :p3",
        [
            "LEFT JOIN flags AS f1 ON f1.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f1.name = :p1 AND f1.kind <> 'null'"
        ],
        {"p1": "lr", "p2": 0, "p3": 0.1},
    ),
    (
        {"filter_expr": "attr:label = 'x'"},
        "r.deleted = :p2 AND a1.str = :p3",
        [
            "LEFT JOIN attrs AS a1 ON a1.run_key = CASE WHEN :p1 IN attr_names THEN r.key END"
            " AND a1.name = :p1 AND a1.kind <> 'null'"
        ],
        {"p1": "label", "p2": 0, "p3": "x"},
    ),
    (
        {"filter_expr": "flag:x is undefined"},
        "r.deleted = :p2 AND f1.run_key IS NULL",
        [
            "LEFT JOIN flags AS f1 ON f1.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f1.name = :p1 AND f1.kind <> 'null'"
        ],
        {"p1": "x", "p2": 0},
    ),
    (
        {"filter_expr": "flag:x != 1"},
        "r.deleted = :p2 AND NOT COALESCE(f1.num = :p3, FALSE)",
        [
            "LEFT JOIN flags AS f1 ON f1.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f1.name = :p1 AND f1.kind <> 'null'"
        ],
        {"p1": "x", "p2": 0, "p3": 1},
    ),
    (
        {"filter_expr": "flag:x < undefined"},
        "r.deleted = :p2 AND FALSE",
        [
            "LEFT JOIN flags AS f1 ON f1.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f1.name = :p1 AND f1.kind <> 'null'"
        ],
        {"p1": "x", "p2": 0},
    ),
    (
        {"filter_expr": "scalar:eval#loss < 1"},
        "r.deleted = :p3 AND s1.last_val < :p4",
        ["LEFT JOIN scalars AS s1 ON s1.run_key = r.key AND s1.tag = :p1 AND s1.prefix = :p2"],
        {"p1": "loss", "p2": "eval", "p3": 0, "p4": 1},
    ),
    (
        {"filter_expr": "loss < 1"},
        "r.deleted = :p2 AND COALESCE(a1.num, f2.num, s3.last_val) < :p3",
        [
            "LEFT JOIN attrs AS a1 ON a1.run_key = CASE WHEN :p1 IN attr_names THEN r.key END"
            " AND a1.name = :p1 AND a1.kind <> 'null'",
            "LEFT JOIN flags AS f2 ON f2.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f2.name = :p1 AND f2.kind <> 'null' AND a1.run_key IS NULL",
            "LEFT JOIN scalars AS s3 ON s3.run_key = r.key AND s3.tag = :p1 AND s3.preferred = 1"
            " AND a1.run_key IS NULL AND f2.run_key IS NULL",
        ],
        {"p1": "loss", "p2": 0, "p3": 1},
    ),
    (
        {"filter_expr": "operation = train and not status = error"},
        "r.deleted = :p1 AND (r.operation = :p2 AND NOT COALESCE(r.status = :p3, FALSE))",
        [],
        {"p1": 0, "p2": "train", "p3": "error"},
    ),
    (
        {"filter_expr": "flag:opt contains ADAM"},
        "r.deleted = :p2 AND CASE WHEN f1.kind = 'list' THEN RUNQ_LIST_CONTAINS(f1.json, :p3)"
        " ELSE INSTR(f1.folded, :p4) > 0 END",
        [
            "LEFT JOIN flags AS f1 ON f1.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f1.name = :p1 AND f1.kind <> 'null'"
        ],
        {"p1": "opt", "p2": 0, "p3": '"ADAM"', "p4": "adam"},
    ),
    (
        {"filter_expr": "flag:b in [1, 'x']"},
        "r.deleted = :p2 AND (f1.num = :p3 OR f1.str = :p4)",
        [
            "LEFT JOIN flags AS f1 ON f1.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f1.name = :p1 AND f1.kind <> 'null'"
        ],
        {"p1": "b", "p2": 0, "p3": 1, "p4": "x"},
    ),
    (
        {"filter_expr": "flag:b = [1, 2]"},
        "r.deleted = :p2 AND (f1.kind = 'list' AND RUNQ_LIST_COMPARE(f1.json, '=', :p3))",
        [
            "LEFT JOIN flags AS f1 ON f1.run_key = CASE WHEN :p1 IN flag_names THEN r.key END"
            " AND f1.name = :p1 AND f1.kind <> 'null'"
        ],
        {"p1": "b", "p2": 0, "p3": "[1, 2]"},
    ),
    ({"filter_expr": "cat"}, "r.deleted = :p1 AND TRUE", [], {"p1": 0}),
    ({"filter_expr": "''"}, "r.deleted = :p1 AND FALSE", [], {"p1": 0}),
]


@pytest.mark.parametrize("options, where, joins, params", GOLDEN, ids=[repr(g[0]) for g in GOLDEN])
def test_golden_sql(options, where, joins, params):
    assert where_and_params(**options) == (where, joins, params)


def test_user_text_is_never_in_the_sql():
    nasty = "x'; DROP TABLE runs; --"
    compiled = compile_selection(
        build_selection(
            filter_expr=f'flag:a = "{nasty}" or attr:b contains "{nasty}"',
            operations=[nasty],
            labels=[nasty],
            tags=[nasty],
            comments=[nasty],
            digest=nasty,
            runs=[nasty, "1"],
        ),
        NOW,
    )
    assert "DROP" not in compiled.sql()
    assert nasty in compiled.params.values()


@pytest.mark.parametrize(
    "options",
    [
        {"labels": ["abc", "="]},
        {"filter_expr": 'flag:shift not in [0.0, "x"]', "labels": ["abc", "-"]},
        {"filter_expr": "time > 1 and time < 5", "labels": ["-", "a", "b"], "unlabeled": False},
        {"filter_expr": "started > 2020 or time > 3", "labels": ["x"], "runs": ["1:3"]},
    ],
)
def test_each_parameter_stands_for_its_own_value(options):
    """Every :pN is numbered once, even where a node serves twice, so each
    TRIM of a label trims whitespace and each other value keeps its number."""
    compiled = compile_selection(build_selection(**options), NOW)
    sql = compiled.sql()
    trims = re.findall(r"TRIM\(COALESCE\(r\.label, ''\), :(p\d+)\)", sql)
    assert trims and all(compiled.params[name] == WHITESPACE for name in trims)
    used = re.findall(r":(p\d+)", sql)
    assert list(dict.fromkeys(used)) == [f"p{i}" for i in range(1, len(compiled.params) + 1)]
    searched = re.findall(r"INSTR\(TRIM\(COALESCE\(r\.label, ''\), :p\d+\), :(p\d+)\)", sql)
    assert sorted(compiled.params[name] for name in searched) == sorted(v for v in options["labels"] if v != "-")


def test_run_arguments_come_after_the_filters():
    compiled = compile_selection(build_selection(runs=["2:3", "abc"], labels=["x"]), NOW)
    sql = compiled.sql()
    assert sql.index("WITH selected AS") < sql.index("run_args")
    assert "ROW_NUMBER() OVER (ORDER BY r.timestamp IS NULL, r.timestamp DESC, r.listing)" in sql
    assert list(compiled.params.values()).count("abc") == 1


@pytest.mark.parametrize(
    "spec, parts",
    [
        ("train", (None, None, "train")),
        ("m:train", (None, "m", "train")),
        (":train", (None, "", "train")),
        ("pkg/m:train", ("pkg", "m", "train")),
        ("pkg/train", ("pkg", "", "train")),
        ("a/b/c", (None, None, None)),
        ("a:b:c", (None, None, None)),
        ("", (None, None, None)),
    ],
)
def test_opspec_split_like_guild(spec, parts):
    assert split_opspec(spec) == parts


# Every table and column the compiler emits exists in schema.sql

ALIAS_TABLES = {"r": "runs", "t": "tags", "a": "attrs", "f": "flags", "s": "scalars"}
SELECTIONS = [
    {"filter_expr": "x = 1 and attr:y contains z or flag:w in [1] or scalar:p#q > 2 and time = 1 and started > 1"},
    {"operations": ["pkg/m*:op", "^x"], "labels": ["-"], "tags": ["t"], "comments": ["c"], "digest": "d"},
    {"started": "last 3 days", "marked": True, "status_flags": {"running": True}, "runs": ["1", "2:"]},
]


def schema_columns():
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema_text())
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}


@pytest.mark.parametrize("options", SELECTIONS)
def test_emitted_tables_and_columns_exist(options):
    schema = schema_columns()
    compiled = compile_selection(build_selection(**options), NOW)
    tree = sqlglot.parse_one(compiled.sql(), read="sqlite")
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        assert table.name in schema or table.name in ctes, table.name
    checked = 0
    for column in tree.find_all(exp.Column):
        table = table_for(column.table)
        if table:
            assert column.name in schema[table], f"{column.table}.{column.name}"
            checked += 1
    assert checked > 5


def table_for(alias):
    """The schema table behind a compiler alias (r, t, a1, f2, s3, ...); None for CTEs."""
    if alias in ("r", "t"):
        return ALIAS_TABLES[alias]
    if alias[:1] in "afs" and alias[1:].isdigit():
        return ALIAS_TABLES[alias[:1]]
    return None


def test_label_whitespace_is_pythons():
    """-Fl tests str(label).strip(): the trimmed characters are exactly str.isspace()."""
    assert set(WHITESPACE) == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}


def _balanced(terms, depth=0):
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    op = "and" if depth % 2 else "or"
    return f"({_balanced(terms[:mid], depth + 1)}) {op} ({_balanced(terms[mid:], depth + 1)})"


LONG_FILTER_TERMS = [
    "lr > 0.5", "flag:x != 1", "label contains a", "status in [error, running]", "not (b = 1 or c < 2)",
    "scalar:eval#loss < 1", "time > 1", "started = ''", "x not in [1, 'y']", "flag:l = [1, 2]", "cat",
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
@pytest.mark.parametrize("shape", ["chain", "balanced", "mixed"])
def test_long_filters_render_as_sqlglot_writes_them(dialect, shape):
    """runq's generator writes ANDs, ORs and parentheses without recursion,
    and each shared node's text once: the SQL must be sqlglot's own."""
    terms = [LONG_FILTER_TERMS[i % len(LONG_FILTER_TERMS)] for i in range(60)]
    text = {
        "chain": " and ".join(terms),
        "balanced": _balanced(terms),
        "mixed": " ".join(f"{t} {('and', 'or')[i % 2]}" for i, t in enumerate(terms)) + " true",
    }[shape]
    compiled = compile_selection(build_selection(filter_expr=text, labels=["-", "x"]), NOW, dialect=dialect)
    for pretty in (False, True):
        assert compiled.sql(pretty=pretty) == compiled.expression.sql(dialect=dialect, pretty=pretty)


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_commented_logic_renders_as_sqlglot_writes_it(dialect):
    from runq.engine.compiler import SPELLINGS

    def commented(node, text):
        node.add_comments([text])
        return node

    def tree():
        a, b, c = (exp.column(name) for name in "abc")
        inner = exp.Paren(this=commented(exp.Or(this=b, expression=c), "or"))
        xor = exp.Xor(this=exp.column("d"), expression=commented(exp.Paren(this=exp.column("e")), "paren"))
        chain = commented(exp.And(this=inner, expression=exp.And(this=xor, expression=exp.Paren(this=a))), "and")
        return exp.Not(this=exp.Paren(this=exp.Or(this=chain, expression=commented(exp.Paren(this=a), "last"))))

    assert tree().sql(dialect=SPELLINGS[dialect].dialect) == tree().sql(dialect=dialect)
