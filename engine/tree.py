"""The tree a filter expression parses to.

Nodes are immutable data. `describe()` renders a node back to filter text
with every grouping made explicit, which is how runq shows users what an
unparenthesised mix of `and`/`or` really means.
"""

import gc
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Tuple

NAME_KINDS = ("attr", "flag", "scalar")


@dataclass(frozen=True)
class Name:
    """A value reference: `attr:x`, `flag:x`, `scalar:[prefix#]tag` or plain `x`."""

    text: str

    @property
    def kind(self):
        """'attr', 'flag' or 'scalar'; None for an unprefixed name."""
        head, sep, _ = self.text.partition(":")
        return head if sep and head in NAME_KINDS else None

    @property
    def key(self):
        """The name without its kind prefix."""
        return self.text[len(self.kind) + 1 :] if self.kind else self.text

    @property
    def scalar_key(self):
        """(prefix, tag) a scalar lookup uses; prefix None means any prefix."""
        prefix, sep, tag = self.key.partition("#")
        if not sep:
            return None, self.key
        return prefix or None, tag

    def describe(self):
        return self.text


@dataclass(frozen=True)
class Literal:
    value: Any  # int, float, bool, str or None (undefined)

    def describe(self):
        return _describe_value(self.value)


@dataclass(frozen=True)
class ListLiteral:
    items: Tuple[Any, ...]  # Literal or ListLiteral

    @property
    def value(self):
        return [item.value for item in self.items]

    def describe(self):
        return "[" + ", ".join(item.describe() for item in self.items) + "]"


@dataclass(frozen=True)
class Compare:
    name: Name
    op: str  # = != < <= > >= (`is` is =, `is not` is !=)
    target: Any  # Literal or ListLiteral

    def describe(self):
        return f"{self.name.describe()} {self.op} {self.target.describe()}"


@dataclass(frozen=True)
class In:
    name: Name
    target: ListLiteral
    negated: bool = False

    def describe(self):
        op = "not in" if self.negated else "in"
        return f"{self.name.describe()} {op} {self.target.describe()}"


@dataclass(frozen=True)
class Contains:
    name: Name
    target: Any  # Literal or ListLiteral
    negated: bool = False

    def describe(self):
        op = "not contains" if self.negated else "contains"
        return f"{self.name.describe()} {op} {self.target.describe()}"


@dataclass(frozen=True)
class Logical:
    op: str  # "and" or "or"
    left: Any
    right: Any

    def describe(self):
        return f"{_grouped(self.left)} {self.op} {_grouped(self.right)}"


@dataclass(frozen=True)
class Not:
    operand: Any

    def describe(self):
        return f"not {_grouped(self.operand)}"


@dataclass(frozen=True)
class Truth:
    """A bare term used as an expression: true when its value is truthy."""

    term: Any  # Literal or ListLiteral

    def describe(self):
        return self.term.describe()


def _grouped(node):
    text = node.describe()
    return f"({text})" if isinstance(node, (Logical, Not)) else text


def _describe_value(value):
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return repr(value)


@contextmanager
def big_tree(limit=20000):
    """For building and rendering long expressions. Room for expressions
    nested thousands deep (the parser, the compiler and sqlglot's generator
    all recurse once per level), and no cyclic garbage collection meanwhile:
    a 1,000-term filter allocates tens of thousands of nodes, none of them
    garbage, and each collection would scan them all again."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        sys.setrecursionlimit(old)
        if collecting:
            gc.enable()


def names_in(node):
    """Every Name the expression refers to, in order of appearance."""
    if isinstance(node, (Compare, In, Contains)):
        return [node.name]
    if isinstance(node, Logical):
        return names_in(node.left) + names_in(node.right)
    if isinstance(node, Not):
        return names_in(node.operand)
    return []
