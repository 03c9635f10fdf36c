"""Tokenizer for Guild filter expressions (`-F EXPR`).

The token rules and their order are Guild 0.9.0's: at each position the
first rule that matches wins (not the longest), spaces and tabs between
tokens are skipped, and keywords are recognised case-insensitively only
when a whole identifier spells one.
"""

import re
from typing import Any, NamedTuple

from .attrs import decode_attr
from .errors import FilterSyntaxError

KEYWORDS = frozenset(
    ["and", "or", "in", "not", "true", "false", "is", "undefined", "contains"]
)

# (token type, pattern) in matching order.
TOKEN_RULES = [
    ("LPAREN", r"\("),
    ("RPAREN", r"\)"),
    ("LBRACKET", r"\["),
    ("RBRACKET", r"\]"),
    ("NEQ", r"<>|!="),
    ("EQ", r"="),
    ("LTE", r"<="),
    ("LT", r"<"),
    ("GTE", r">="),
    ("GT", r">"),
    ("COMMA", r","),
    ("ID", r"[a-zA-Z][^ ,<>!=\n\(\)\[\]]*"),
    ("NUMBER", r"-?\.?\d+(?:\.\d+)?(?:e(?:\+|-)?(?:\d+))?"),
    ("STRING", r"(?:\"(?:[^\\\n]|(?:\\.))*?\")|(?:\'(?:[^\\\n]|(?:\\.))*?\')"),
    ("NEWLINE", r"\n+"),
]
MASTER = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in TOKEN_RULES))
SKIPPED = " \t"


class Token(NamedTuple):  # a tuple: a 1,000-term filter has some 5,000 tokens
    type: str  # a TOKEN_RULES name, or a keyword upper-cased ("AND", "TRUE", ...)
    text: str  # the source text
    value: Any  # decoded value: numbers and quoted strings go through YAML
    pos: int  # 0-based offset in the expression


def tokenize(text):
    """Returns the list of tokens of `text`; raises FilterSyntaxError."""
    tokens = []
    pos, end = 0, len(text)
    match_at = MASTER.match
    while pos < end:
        if text[pos] in SKIPPED:
            pos += 1
            continue
        match = match_at(text, pos)
        if not match:
            raise _unexpected_character(text, pos)
        if match.lastgroup != "NEWLINE":
            tokens.append(_token(match.lastgroup, match.group(), pos, text))
        pos = match.end()
    return tokens


def _token(rule, source, pos, text):
    decode = DECODERS.get(rule)
    if decode:
        return Token(rule, source, decode(source, pos, text), pos)
    if rule == "ID" and source.lower() in KEYWORDS:
        return Token(source.upper(), source, source, pos)
    return Token(rule, source, source, pos)


def _decode_literal(source, pos, text):
    try:
        return decode_attr(source)  # Guild decodes these tokens as YAML
    except Exception as e:
        raise FilterSyntaxError(
            f"syntax error in filter at position {pos}: cannot read {source}",
            hint=str(e).splitlines()[0],
            position=pos,
            text=text,
        ) from None


DECODERS = {"NUMBER": _decode_literal, "STRING": _decode_literal}


def _unexpected_character(text, pos):
    return FilterSyntaxError(
        f"syntax error in filter at position {pos}: unexpected character {text[pos]!r}",
        position=pos,
        text=text,
    )
