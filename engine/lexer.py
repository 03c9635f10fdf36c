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
RULES = "|".join(f"(?P<{name}>{pattern})" for name, pattern in TOKEN_RULES)
# A match skips the spaces and tabs before a token (no rule matches either),
# then takes the first rule that matches; a character that none matches is
# UNEXPECTED, and spaces and tabs at the end of the text match as no token.
SCANNER = re.compile(rf"[ \t]*(?:{RULES}|(?P<UNEXPECTED>[\s\S])|\Z)")


class Token(NamedTuple):  # a tuple: a 1,000-term filter has some 5,000 tokens
    type: str  # a TOKEN_RULES name, or a keyword upper-cased ("AND", "TRUE", ...)
    text: str  # the source text
    value: Any  # decoded value: numbers and quoted strings go through YAML
    pos: int  # 0-based offset in the expression


def tokenize(text):
    """Returns the list of tokens of `text`; raises FilterSyntaxError."""
    tokens = []
    for match in SCANNER.finditer(text):
        rule = match.lastgroup
        if rule is None or rule == "NEWLINE":  # the end of the text, or newlines (skipped)
            continue
        pos = match.start(rule)
        if rule == "UNEXPECTED":
            raise _unexpected_character(text, pos)
        source = match[rule]
        if rule in DECODERS:
            value = DECODERS[rule](source, pos, text)
        else:
            value = source
            if rule == "ID" and source.lower() in KEYWORDS:
                rule = source.upper()
        tokens.append(_new_token(Token, (rule, source, value, pos)))
    return tokens


# Token(...) without NamedTuple's __new__, which is a Python function: a
# balanced filter of 1,000 terms has some 9,000 tokens.
_new_token = tuple.__new__


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
