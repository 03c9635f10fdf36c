"""Parser for Guild filter expressions: tokens -> tree (engine.tree).

The grammar is Guild 0.9.0's:

    expression := unary ((AND | OR) expression)?
    unary      := NOT unary | primary
    primary    := LPAREN expression RPAREN | runtest | term
    runtest    := ID compare term | ID IS [NOT] term | ID [NOT] IN list
                | ID [NOT] CONTAINS term
    term       := NUMBER | STRING | ID | TRUE | FALSE | UNDEFINED | list
    list       := LBRACKET term (COMMA term)* RBRACKET

`and` and `or` share one precedence level and group to the right, so
`a and b or c` means `a and (b or c)`; `not` binds tighter than both. The
parser reproduces that grouping (a purge must select what Guild selects)
and reports each chain that mixes the two without parentheses.
"""

from dataclasses import dataclass, field
from typing import List

from . import tree
from .errors import FilterSyntaxError
from .lexer import tokenize

COMPARISONS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
CONSTANTS = {"TRUE": True, "FALSE": False, "UNDEFINED": None}
SCALAR_TOKENS = ("NUMBER", "STRING", "ID")
LOGICAL = {"AND": "and", "OR": "or"}


@dataclass
class ParsedFilter:
    text: str
    root: object
    warnings: List[str] = field(default_factory=list)


def parse_filter(text):
    """Parses a filter expression; raises FilterSyntaxError."""
    try:
        with tree.big_tree():
            parser = _Parser(text, tokenize(text))
            root = parser.expression()
    except RecursionError:
        raise FilterSyntaxError(
            "filter expression nests too deeply", hint="use fewer levels of parentheses and 'not'", text=text
        ) from None
    if not parser.at_end():
        raise parser.unexpected()
    return ParsedFilter(text, root, parser.warnings)


class _Parser:
    def __init__(self, text, tokens):
        self.text = text
        self.tokens = tokens
        self.types = [token.type for token in tokens] + [None, None]  # None: the end
        self.pos = 0
        self.warnings = []

    # Token access

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def peek_type(self, offset=0):
        """The type of the next token (offset 0) or the one after (1); None at the end."""
        return self.types[self.pos + offset]

    def at_end(self):
        return self.pos >= len(self.tokens)

    def take(self, *types):
        """The next token, which must be of one of `types`."""
        if self.types[self.pos] not in types:
            raise self.unexpected()
        return self.advance()

    def advance(self):
        """The next token, whose type the caller has checked."""
        self.pos += 1
        return self.tokens[self.pos - 1]

    def unexpected(self):
        token = self.peek()
        if token is None:
            return FilterSyntaxError(
                f"syntax error in filter at position {len(self.text)}: unexpected end of expression",
                hint="complete the expression",
                position=len(self.text),
                text=self.text,
            )
        return FilterSyntaxError(
            f"syntax error in filter at position {token.pos}: unexpected {token.text!r}",
            position=token.pos,
            text=self.text,
        )

    # Grammar

    def expression(self):
        operands = [self.unary()]
        ops = []
        while self.peek_type() in LOGICAL:
            ops.append(LOGICAL[self.advance().type])
            operands.append(self.unary())
        if not ops:
            return operands[0]
        node = operands[-1]
        for op, left in zip(reversed(ops), reversed(operands[:-1])):
            node = tree.Logical(op, left, node)
        if len(set(ops)) > 1:
            self.warnings.append(_mixed_warning(node))
        return node

    def unary(self):
        if self.peek_type() == "NOT":
            self.advance()
            return tree.Not(self.unary())
        return self.primary()

    def primary(self):
        kind = self.peek_type()
        if kind == "LPAREN":
            self.advance()
            node = self.expression()
            self.take("RPAREN")
            return node
        if kind == "ID" and self.peek_type(1) in RUNTEST_STARTS:
            return self.runtest()
        return tree.Truth(self.term())

    def runtest(self):
        name = tree.Name(self.advance().value)  # primary saw an ID
        return RUNTEST_STARTS[self.peek_type()](self, name)

    def compare(self, name):
        op = COMPARISONS[self.advance().type]  # runtest saw a comparison
        return tree.Compare(name, op, self.term())

    def is_(self, name):
        self.take("IS")
        if self.peek_type() == "NOT":
            self.take("NOT")
            return tree.Compare(name, "!=", self.term())
        return tree.Compare(name, "=", self.term())

    def in_(self, name, negated=False):
        self.take("IN")
        return tree.In(name, self.list_(), negated)

    def contains(self, name, negated=False):
        self.take("CONTAINS")
        return tree.Contains(name, self.term(), negated)

    def not_(self, name):
        self.take("NOT")
        follow = {"IN": self.in_, "CONTAINS": self.contains}.get(self.peek_type())
        if follow is None:
            raise self.unexpected()
        return follow(name, negated=True)

    def term(self):
        kind = self.peek_type()
        if kind == "LBRACKET":
            return self.list_()
        if kind in CONSTANTS:
            self.advance()
            return tree.Literal(CONSTANTS[kind])
        return tree.Literal(self.take(*SCALAR_TOKENS).value)

    def list_(self):
        self.take("LBRACKET")
        items = [self.term()]
        while self.peek_type() == "COMMA":
            self.take("COMMA")
            items.append(self.term())
        self.take("RBRACKET")
        return tree.ListLiteral(tuple(items))


RUNTEST_STARTS = {
    **{kind: _Parser.compare for kind in COMPARISONS},
    "IS": _Parser.is_,
    "IN": _Parser.in_,
    "CONTAINS": _Parser.contains,
    "NOT": _Parser.not_,
}


WARNING_SHOWS = 300  # characters of the grouped expression a warning shows


def _mixed_warning(node):
    try:
        with tree.big_tree():
            grouped = node.describe()
    except RecursionError:
        grouped = "..."
    if len(grouped) > WARNING_SHOWS:
        grouped = grouped[:WARNING_SHOWS] + " ..."
    return (
        "warning: 'and' and 'or' are mixed without parentheses; as in Guild they "
        f"group to the right: {grouped}"
    )
