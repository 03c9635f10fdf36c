"""Decoding Guild run attributes (`<run>/.guild/attrs/<name>`).

Guild writes each attribute with PyYAML's `safe_dump` and reads it with
`yaml.safe_load` under its own float resolver patch. Decoding every
attribute of a large home with PyYAML is slow, so `decode_attr` first tries
a strict recognizer for the shapes Guild writes in practice (one scalar,
a flat mapping of scalars, a list of scalars) and hands anything else to
`load_yaml`, the exact path. The recognizer gives up rather than guess: it
only accepts text whose PyYAML result it is certain of, and it resolves
plain scalars with the very resolver table `GUILD_LOADER` uses.

Callers pass text as Guild reads it: the file opened in text mode, so
`\\r\\n` has already become `\\n`.
"""

import functools
import re

from .errors import RunqError

# The attributes a run's row is made of (times, status, label, mark,
# source code digest, tags, comments) and `flags`, which filters name most:
# read with the run. Any other attribute (env, pip_freeze, cmd, host, deps,
# ...) is stored raw and read only when a filter first names it: most of a
# run's attribute files, whose reading was most of a first index's time.
EAGER_ATTRS = frozenset({
    "initialized", "started", "stopped", "exit_status", "label", "marked", "sourcecode_digest",
    "flags", "tags", "comments",
})


# The others Guild writes: a filter naming one surely names an attribute
# that starts raw (an unprefixed name is more often a flag or a scalar).
GUILD_LAZY_ATTRS = frozenset({
    "cmd", "deps", "env", "host", "id", "op", "pip_freeze", "platform", "plugins", "random_seed", "run_params",
    "user", "user_flags", "vcs_commit",
})


def is_lazy(name):
    """Whether runq reads the attribute `name` only when a filter names it."""
    return name not in EAGER_ATTRS


class AttrDecodeError(RunqError):
    """An attribute file whose YAML cannot be decoded (by Guild either)."""


# --- The exact path ---------------------------------------------------------

# Guild (yaml_util.patch_yaml_resolver) widens YAML 1.1 floats: the
# exponent sign is optional and `1e2` needs no decimal point. Guild appends
# this resolver after PyYAML's own, so it only decides text that neither the
# stock float nor the int resolver claimed.
_GUILD_FLOAT = re.compile(
    r"""^(?:
        [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?   # 1.5, 1.5e3, 1.e-3
      | [-+]?[0-9][0-9_]*[eE][-+]?[0-9]+                 # 1e3, 1e-4 (no point)
      | \.[0-9_]+(?:[eE][-+][0-9]+)?                     # .5, .5e+3
      | [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*      # sexagesimal 1:30.5
      | [-+]?\.(?:inf|Inf|INF)
      | \.(?:nan|NaN|NAN)
    )$""",
    re.X,
)


# PyYAML builds an aliased node once and shares it, but whatever walks the
# value afterwards (JSON, str() for `contains`, comparisons) walks every use:
# 520 bytes of nested aliases make billions of nodes. Aliases may add at
# most this many nodes to what the text itself spells out.
ALIAS_NODE_BUDGET = 100_000


@functools.cache
def _guild_loader():
    """GUILD_LOADER, made on first use: PyYAML is imported only when an
    attribute is decoded (a command whose runs did not change decodes none)."""
    import yaml

    class GuildLoader(yaml.SafeLoader):
        """PyYAML's SafeLoader with Guild's float resolver, on this class only,
        and a budget on what aliases expand to (a recursive alias is refused)."""

        def compose_document(self):
            self._node_sizes, self._alias_nodes = {}, 0
            return super().compose_document()

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self._spend_alias(self.peek_event())
                return super().compose_node(parent, index)
            node = super().compose_node(parent, index)
            self._node_sizes[id(node)] = 1 + sum(self._node_sizes[id(child)] for child in _children(node))
            return node

        def _spend_alias(self, event):
            node = self.anchors.get(event.anchor)
            if node is None:
                return  # PyYAML reports the undefined alias
            size = self._node_sizes.get(id(node))
            if size is None:
                raise _alias_error("recursive alias", event)
            self._alias_nodes += size
            if self._alias_nodes > ALIAS_NODE_BUDGET:
                raise _alias_error(f"aliases expand to more than {ALIAS_NODE_BUDGET} nodes", event)

    class AliasBudgetError(yaml.composer.ComposerError):
        """YAML whose aliases runq refuses to expand."""

    def _children(node):
        if isinstance(node, yaml.MappingNode):
            return [child for pair in node.value for child in pair]
        return node.value if isinstance(node, yaml.SequenceNode) else ()

    def _alias_error(what, event):
        return AliasBudgetError(None, None, f"{what} (*{event.anchor})", event.start_mark)

    # add_implicit_resolver copies the inherited table into GuildLoader before
    # appending, so yaml's global resolvers stay untouched.
    GuildLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", _GUILD_FLOAT, list("-+0123456789.")
    )
    GuildLoader.AliasBudgetError = AliasBudgetError
    return GuildLoader


def __getattr__(name):
    """GUILD_LOADER (also as GuildLoader) and AliasBudgetError, made on first use."""
    if name in ("GUILD_LOADER", "GuildLoader"):
        return _guild_loader()
    if name == "AliasBudgetError":
        return _guild_loader().AliasBudgetError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_yaml(text):
    """Decode `text` exactly as Guild does (slow; the reference for the fast path)."""
    import yaml

    loader = _guild_loader()
    try:
        return yaml.load(text, Loader=loader)
    except loader.AliasBudgetError as exc:
        raise AttrDecodeError(
            f"YAML refused: {exc.problem}",
            hint="runq reads an attribute as undefined when its aliases expand this far",
        ) from exc
    except yaml.YAMLError as exc:
        raise _decode_error("malformed YAML", exc) from exc
    # PyYAML's constructors leak plain exceptions on malformed values (e.g.
    # `!!int ""` raises IndexError, `!!bool x` KeyError, `._` ValueError,
    # deep nesting RecursionError); each one means the text is unreadable.
    except Exception as exc:
        raise _decode_error(f"YAML value cannot be built ({type(exc).__name__})", exc) from exc


def _decode_error(what, exc):
    detail = " ".join(str(exc).split())
    return AttrDecodeError(
        f"{what}: {detail}" if detail else what,
        hint="Guild cannot read this attribute either; fix or delete the file",
    )


# --- The fast path ----------------------------------------------------------


def decode_attr(text):
    """Decode an attribute file's text; same result as `load_yaml`, much faster."""
    value = fast_decode(text)
    return load_yaml(text) if value is UNSURE else value


class _Unsure(Exception):
    """The recognizer met text whose PyYAML result it is not certain of."""


class _UnsureType:
    def __repr__(self):
        return "UNSURE"


# What `fast_decode` returns for text it leaves to `load_yaml`.
UNSURE = _UnsureType()


def fast_decode(text):
    """Decode the common shapes of Guild attributes, or return UNSURE."""
    # Printable ASCII and newlines only: no tabs, no reader errors, no BOM.
    # Guild's writer escapes everything else, so this costs almost nothing.
    if not _SIMPLE_TEXT.fullmatch(text):
        return UNSURE
    if not text.strip("\n"):
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if any(not line or line.startswith(_DOCUMENT_MARKERS) for line in lines):
        return UNSURE
    try:
        return _document(lines)
    except _Unsure:
        return UNSURE


_SIMPLE_TEXT = re.compile(r"[ -~\n]*")
_DOCUMENT_MARKERS = ("---", "...")


def _document(lines):
    first = lines[0]
    if len(lines) == 1 and not first.startswith("- ") and _is_lone_value(first):
        return _block_value(first)
    block = _BlockLines(lines)
    if block.lines[0][0]:  # indented first line
        raise _Unsure
    value = block.node(0)
    if block.pos != len(lines):  # lines no collection took: PyYAML refuses or reads them otherwise
        raise _Unsure
    return value


def _is_lone_value(line):
    """Whether a one-line document is a value rather than a `key: value` entry."""
    if line[0] in "[{":
        return True
    if line[0] in _QUOTE_STYLES:
        return _quoted(line, 0)[1] == len(line)
    return ": " not in line and not line.endswith(":")


# Nested collections go this deep at most; deeper ones are left to PyYAML.
_MAX_NESTING = 50


class _BlockLines:
    """Block collections as Guild's writer lays them out, read by indentation:
    a mapping's keys, and a sequence's dashes, all at one indentation; a
    `key:` ending its line takes the collection indented below it, or the
    sequence whose dashes start at the key's own column (as PyYAML allows
    for mapping values), else null; a `- ` item's content starts two
    columns in, where an inline first entry of a mapping or sequence sets
    that collection's indentation. Anything else (a line indented where no
    collection starts, which PyYAML would read as the continuation of a
    scalar or refuse) is left to PyYAML."""

    def __init__(self, lines):
        self.lines = [(len(line) - len(line.lstrip(" ")), line.lstrip(" ")) for line in lines]
        self.pos = 0  # the next line to read
        self.depth = 0

    def node(self, indent):
        """The mapping or sequence whose first line is the next one, at `indent`."""
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise _Unsure
        value = (self.sequence if self.lines[self.pos][1].startswith("- ") else self.mapping)(indent)
        self.depth -= 1
        return value

    def sequence(self, indent):
        items = []
        while self.pos < len(self.lines):
            column, text = self.lines[self.pos]
            if column != indent or not text.startswith("- "):
                break
            items.append(self.item(indent + 2, text[2:]))
        return items

    def item(self, indent, content):
        """A sequence item whose content starts at column `indent` of the next line."""
        if not content:
            raise _Unsure
        if content.startswith("- ") or not _is_lone_value(content):
            self.lines[self.pos] = (indent, content)  # the line, as if its content began it
            return self.node(indent)
        self.pos += 1
        return _block_value(content)

    def mapping(self, indent):
        # Later duplicates overwrite earlier ones, as PyYAML's constructor does.
        mapping = {}
        while self.pos < len(self.lines):
            column, text = self.lines[self.pos]
            if column < indent:
                break
            if column > indent or text.startswith("- "):
                raise _Unsure
            key, value = self.entry(indent, text)
            mapping[key] = value
        return mapping

    def entry(self, indent, text):
        key, end = _mapping_key(text)
        if indent + end > _KEY_LIMIT:
            raise _Unsure
        rest = text[end:]
        self.pos += 1
        if rest.startswith(": "):
            return key, _block_value(rest[2:])
        if rest != ":":
            raise _Unsure
        return key, self.value_below(indent)

    def value_below(self, indent):
        """The value of a `key:` that ends its line, at `indent`."""
        if self.pos == len(self.lines):
            return None
        column, text = self.lines[self.pos]
        if column > indent or (column == indent and text.startswith("- ")):
            return self.node(column)
        return None


# PyYAML only looks 1024 characters back for the ':' of a simple key.
_KEY_LIMIT = 1000


def _mapping_key(line):
    """The key at the start of `line` and where it ends."""
    if line[0] in _QUOTE_STYLES:
        return _quoted(line, 0)
    # A plain key ends at the first ': ', or at a ':' closing the line.
    end = line.find(": ")
    if end < 0:
        if not line.endswith(":"):
            raise _Unsure
        end = len(line) - 1
    return _plain_value(line[:end]), end


def _block_value(text):
    """A scalar, `{}` or flow sequence filling the rest of a line."""
    return _VALUE_PARSERS.get(text[:1], _plain_value)(text)


def _quoted_value(text):
    value, end = _quoted(text, 0)
    if end != len(text):
        raise _Unsure
    return value


def _empty_mapping(text):
    if text != "{}":
        raise _Unsure
    return {}


def _flow_sequence(text):
    if text == "[]":
        return []
    items, pos = [], 1
    while True:
        item, pos = _flow_item(text, pos)
        items.append(item)
        if text.startswith(", ", pos):
            pos += 2
        elif pos == len(text) - 1 and text[pos] == "]":
            return items
        else:
            raise _Unsure


# Flow context has its own plain-scalar rules (',', '[', ':' ... end a
# scalar); accept only unremarkable characters there. Inner spaces are kept
# by PyYAML, trailing ones are not, so a space must precede another char.
_FLOW_PLAIN = re.compile(r"-?[A-Za-z0-9_.+/](?:[A-Za-z0-9_.+/-]| (?=[A-Za-z0-9_.+/-]))*")


def _flow_item(text, pos):
    if text[pos : pos + 1] in _QUOTE_STYLES:
        return _quoted(text, pos)
    match = _FLOW_PLAIN.match(text, pos)
    if not match:
        raise _Unsure
    return _plain_scalar(match.group()), match.end()


# --- Scalars ----------------------------------------------------------------

# Characters that cannot start a plain scalar in block context (YAML
# indicators, plus the space that would mean indentation). '-' may start
# one when a non-space follows; '?' and ':' could too, but are left to PyYAML.
_INDICATORS = "-?:,[]{}#&*!|>'\"%@` "


def _plain_value(text):
    if not _is_block_plain(text):
        raise _Unsure
    return _plain_scalar(text)


def _is_block_plain(text):
    """Whether PyYAML scans all of `text` as one plain scalar on one line."""
    if not text or text[-1] in " :":
        return False
    if text[0] in _INDICATORS and not (text[0] == "-" and text[1:2] not in ("", " ")):
        return False
    # ': ' would start a mapping value, ' #' a comment.
    return ": " not in text and " #" not in text


@functools.lru_cache(maxsize=8192)
def _plain_scalar(text):
    """The value of a plain scalar, resolved by GUILD_LOADER's own table."""
    builder = _SCALAR_BUILDERS.get(_implicit_tag(text))
    if builder is None:
        raise _Unsure
    return builder(text)


def _implicit_tag(text):
    table = _guild_loader().yaml_implicit_resolvers
    candidates = table.get(text[0], []) + table.get(None, [])
    for tag, pattern in candidates:
        if pattern.match(text):
            return tag
    return _STR


_STR = "tag:yaml.org,2002:str"
# Ints in any form but plain decimal, and floats with '_' or ':' (which
# PyYAML builds in its own way) are left to PyYAML; Guild writes neither.
_DECIMAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")


def _build_int(text):
    if not _DECIMAL_INT.fullmatch(text):
        raise _Unsure
    try:
        return int(text)
    except ValueError:  # beyond Python's int-from-string digit limit
        raise _Unsure from None


def _build_float(text):
    special = _special_floats().get(text.lower())
    if special is not None:
        return special
    if "_" in text or ":" in text:
        raise _Unsure
    # PyYAML computes sign * float(digits); float(text) is the same number.
    return float(text)


@functools.cache
def _special_floats():
    # The very objects PyYAML returns: one shared nan, so that two `.nan` keys
    # collapse into one dict entry exactly as they do under PyYAML.
    loader = _guild_loader()
    return {".inf": loader.inf_value, "+.inf": loader.inf_value, "-.inf": -loader.inf_value, ".nan": loader.nan_value}


_SCALAR_BUILDERS = {
    _STR: str,
    "tag:yaml.org,2002:null": lambda text: None,
    "tag:yaml.org,2002:bool": lambda text: _guild_loader().bool_values[text.lower()],
    "tag:yaml.org,2002:int": _build_int,
    "tag:yaml.org,2002:float": _build_float,
}


# Quoted scalars on one line. A single-quoted one doubles its quotes; the
# closing quote is the first lone one. A double-quoted one ends at the first
# unescaped quote.
_SINGLE_QUOTED = re.compile(r"'((?:[^']|'')*)'(?!')")
_DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')

_SIMPLE_ESCAPES = {
    "0": "\0", "a": "\x07", "b": "\x08", "t": "\t", "n": "\n", "v": "\x0b",
    "f": "\x0c", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "\\": "\\",
    "/": "/", "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029",
}  # fmt: skip
_ESCAPE = re.compile(r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[0abtnvfre \"\\/N_LP])")
_ESCAPED_BODY = re.compile(r"(?:[^\\]|" + _ESCAPE.pattern + ")*")


def _unquote_single(body):
    return body.replace("''", "'")


def _unescape_double(body):
    if "\\" not in body:
        return body
    if not _ESCAPED_BODY.fullmatch(body):
        raise _Unsure
    return _ESCAPE.sub(_escaped_char, body)


def _escaped_char(match):
    escape = match.group()[1:]
    if len(escape) == 1:
        return _SIMPLE_ESCAPES[escape]
    code = int(escape[1:], 16)
    if code > 0x10FFFF:
        raise _Unsure
    return chr(code)


_QUOTE_STYLES = {
    "'": (_SINGLE_QUOTED, _unquote_single),
    '"': (_DOUBLE_QUOTED, _unescape_double),
}


def _quoted(text, pos):
    """The quoted scalar starting at text[pos] and where it ends."""
    pattern, unquote = _QUOTE_STYLES[text[pos]]
    match = pattern.match(text, pos)
    if not match:
        raise _Unsure
    return unquote(match.group(1)), match.end()


_VALUE_PARSERS = {
    "'": _quoted_value,
    '"': _quoted_value,
    "[": _flow_sequence,
    "{": _empty_mapping,
}
