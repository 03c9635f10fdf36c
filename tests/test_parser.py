"""Lexer and parser of filter expressions, checked against Guild's own parser."""

import os

import pytest
from guild_trees import guild_trees, runq_tree, same_outcome
from hypothesis import given, settings
from hypothesis import strategies as st

from runq.engine.errors import FilterSyntaxError
from runq.engine.lexer import tokenize
from runq.engine.parser import parse_filter

EXPRESSIONS = [
    # comparisons and literals
    "a = 1", "a=1", "a != 1", "a <> 1", "a < 1", "a <= 1", "a > 1", "a >= 1",
    "lr = 0.1", "lr = .1", "lr = -1", "lr = -.5", "lr = 1e-4", "lr = 1e5", "lr = 1.5e+3",
    "lr = 007", "lr = 08", "lr = 1_000", "x = '100'", 'x = "100"', "x = 'yes'", "x = yes",
    "x = true", "x = TRUE", "x = False", "x = undefined", "x = null", "x = ~",
    "x = 'a b'", 'x = "a\\tb"', "x = 'it''s'", "x = 'a\\b'", "x = \"\\u00e9\"",
    "x = café", "x = [a, 1, 'b c', [d, 2.5]]", "x = [1]", "x in [1, 2]", "x not in [a]",
    "x is undefined", "x is not undefined", "x IS NOT 1", "x contains abc", "x not contains 1",
    "x contains [a, b]", "x in 1", "x contains", "x is", "x is not",
    # names
    "batch-size = 1", "flag:label = x", "attr:label = x", "scalar:eval#loss < 1", "eval#loss < 1",
    "Attr:x = 1", "a.b/c = 1", "x\t= 1",
    # bare terms
    "true", "false", "1", "0", "cat", "'cat'", "''", "[1]", "undefined", "not cat",
    # logic and precedence
    "a = 1 and b = 2", "a = 1 or b = 2", "a = 1 and b = 2 or c = 3", "a = 1 or b = 2 and c = 3",
    "not a = 1 and b = 2", "a = 1 and not b = 2 or c = 3", "(a = 1 and b = 2) or c = 3",
    "not not a = 1", "not (a = 1 or b = 2)", "a = 1 AND b = 2 Or c = 3", "((a = 1))",
    # errors
    "", "   ", "a =", "= 1", "a = (1)", "a b", "a = 1 b = 2", "(a = 1", "a = 1)", "[]", "x in []",
    "a = 1 and", "and", "a == 1", "a = 'unterminated", "a = #", "1 = 1", "'a' = 1", "x not = 1",
    "a = [1, ]", "a = [1 2]", "a = 1.2.3", "a = 1E5", "a = \"\\q\"", "a = 1\nand b = 2",
]


@pytest.fixture(scope="module")
def guild_results():
    return dict(zip(EXPRESSIONS, guild_trees(EXPRESSIONS)))


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_same_tree_as_guild(text, guild_results):
    guild = guild_results[text]
    runq = runq_tree(text)
    assert same_outcome(guild, runq), (guild, runq)


# Random expressions from Guild's vocabulary, valid and not.

WORDS = ["a", "lr", "batch-size", "flag:label", "scalar:loss", "eval#acc", "status", "label"]
VALUES = ["1", "-2", ".5", "1e-4", "'x'", '"y z"', "abc", "true", "undefined", "[1, a]", "0"]
OPS = ["=", "!=", "<>", "<", "<=", ">", ">=", "is", "is not", "contains", "not contains"]


@st.composite
def comparison(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(VALUES))
    name = draw(st.sampled_from(WORDS))
    if draw(st.booleans()) and draw(st.booleans()):
        op = draw(st.sampled_from(["in", "not in"]))
        return f"{name} {op} [{', '.join(draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3)))}]"
    return f"{name} {draw(st.sampled_from(OPS))} {draw(st.sampled_from(VALUES))}"


def expressions():
    leaf = comparison()
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from(["and", "or", "AND", "Or"]), inner).map(" ".join),
            inner.map(lambda e: f"not {e}"),
            inner.map(lambda e: f"({e})"),
        ),
        max_leaves=6,
    )


def mangled(text, draw):
    """Sometimes breaks an expression by dropping or repeating a token."""
    words = text.split(" ")
    if len(words) > 1 and draw(st.integers(0, 4)) == 0:
        i = draw(st.integers(0, len(words) - 1))
        words = words[:i] + words[i + 1 :] if draw(st.booleans()) else words[: i + 1] + words[i:]
    return " ".join(words)


BATCHES = int(os.environ.get("RUNQ_HYPOTHESIS_EXAMPLES", "300")) // 60 or 1


@settings(max_examples=BATCHES, deadline=None)
@given(st.data())
def test_random_expressions_parse_like_guild(data):
    batch = [mangled(data.draw(expressions()), data.draw) for _ in range(60)]
    for text, guild in zip(batch, guild_trees(batch)):
        runq = runq_tree(text)
        assert same_outcome(guild, runq), (text, guild, runq)


# runq's own behaviour: positions, warnings, tokens


@pytest.mark.parametrize(
    "text, position",
    [("a = 1 b", 6), ("a = ", 4), ("x = #", 4), ("(a = 1", 6), ("a == 1", 3), ("not", 3)],
)
def test_errors_name_the_position(text, position):
    with pytest.raises(FilterSyntaxError) as raised:
        parse_filter(text)
    assert raised.value.position == position
    assert f"position {position}" in raised.value.message or raised.value.message.endswith("end of expression")


@pytest.mark.parametrize(
    "text, warned",
    [
        ("a = 1 and b = 2 or c = 3", True),
        ("a = 1 or b = 2 and c = 3", True),
        ("(a = 1 and b = 2) or c = 3", False),
        ("a = 1 and b = 2 and c = 3", False),
        ("a = 1 and (b = 2 or c = 3)", False),
        ("not (a = 1 and b = 2) or c = 3", False),
    ],
)
def test_mixed_and_or_without_parentheses_warns(text, warned):
    warnings = parse_filter(text).warnings
    assert bool(warnings) == warned
    if warned:
        assert "group to the right" in warnings[0]


def test_warning_shows_the_grouping():
    (warning,) = parse_filter("a = 1 and b = 2 or c = 3").warnings
    assert warning.endswith("a = 1 and (b = 2 or c = 3)")


@pytest.mark.parametrize(
    "text, types",
    [
        ("a<=1", ["ID", "LTE", "NUMBER"]),
        ("x in [1,b]", ["ID", "IN", "LBRACKET", "NUMBER", "COMMA", "ID", "RBRACKET"]),
        ("NOT x Contains 'a'", ["NOT", "ID", "CONTAINS", "STRING"]),
        ("flag:in = 1", ["ID", "EQ", "NUMBER"]),
    ],
)
def test_token_types(text, types):
    assert [t.type for t in tokenize(text)] == types
