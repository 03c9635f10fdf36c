"""Runs under guildai 0.9.0's python: parses filter expressions with Guild's
own parser and prints each tree as JSON (or the error), one per input.

stdin: JSON list of expressions; stdout: JSON list of trees or {"error": ...}.
"""

import json
import math
import sys

from guild import filter as filterlib


def value_json(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return {"float": repr(value)}
    if isinstance(value, list):
        return [value_json(v) for v in value]
    return {type(value).__name__: value}


def tree_json(node):
    if isinstance(node, filterlib.InfixOp):
        return [node.op_desc, tree_json(node.expr1), tree_json(node.expr2)]
    if isinstance(node, filterlib.UnaryOp):
        return ["not", tree_json(node.expr)]
    if isinstance(node, filterlib.RunTest):
        op = {" is ": "=", " is not ": "!="}.get(node.cmp_desc, node.cmp_desc)
        return ["cmp", op, node.run_valref, term_json(node.target_expr)]
    if isinstance(node, filterlib.In):
        return ["not in" if node.not_in else "in", node.run_valref, term_json(node.target_expr)]
    if isinstance(node, filterlib.Contains):
        op = "not contains" if node.not_contains else "contains"
        return [op, node.run_valref, term_json(node.target_expr)]
    return ["truth", term_json(node)]


def term_json(term):
    if isinstance(term, filterlib.List):
        return [term_json(t) for t in term.terms]
    return value_json(term.val)


def main():
    parser = filterlib.parser()
    out = []
    for text in json.load(sys.stdin):
        try:
            out.append(tree_json(parser.parse(text)))
        except Exception as e:  # Guild lets ValueError from YAML escape too
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout)


main()
