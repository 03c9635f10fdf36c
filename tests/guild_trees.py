"""Filter trees as comparable JSON: Guild's (via its own parser, in the
guildai venv) and runq's, in the same shape."""

import json
import math
import subprocess
from pathlib import Path

from guildenv import guild_python

from runq.engine import tree
from runq.engine.errors import FilterSyntaxError
from runq.engine.parser import parse_filter

SCRIPT = Path(__file__).parent / "oracle" / "guild_parse.py"


def guild_trees(expressions):
    out = subprocess.run(
        [str(guild_python()), str(SCRIPT)],
        input=json.dumps(expressions),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def runq_tree(text):
    try:
        return node_json(parse_filter(text).root)
    except FilterSyntaxError as e:
        return {"error": e.message}


def value_json(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return {"float": repr(value)}
    if isinstance(value, list):
        return [value_json(v) for v in value]
    return {type(value).__name__: value}


def term_json(term):
    if isinstance(term, tree.ListLiteral):
        return [term_json(t) for t in term.items]
    return value_json(term.value)


def node_json(node):
    kind = type(node)
    if kind is tree.Logical:
        return [node.op, node_json(node.left), node_json(node.right)]
    if kind is tree.Not:
        return ["not", node_json(node.operand)]
    if kind is tree.Compare:
        return ["cmp", node.op, node.name.text, term_json(node.target)]
    if kind is tree.In:
        return ["not in" if node.negated else "in", node.name.text, term_json(node.target)]
    if kind is tree.Contains:
        return ["not contains" if node.negated else "contains", node.name.text, term_json(node.target)]
    return ["truth", term_json(node.term)]


def same_outcome(guild, runq):
    """Both parsed to the same tree, or both refused."""
    if isinstance(guild, dict) or isinstance(runq, dict):
        return isinstance(guild, dict) and isinstance(runq, dict)
    return guild == runq
