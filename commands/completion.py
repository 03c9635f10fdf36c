"""Shell completion of RUN arguments and filter values, as Guild completes them:
run ids, operations, labels, tags and source code digests of the runs the
command selects from."""

from pathlib import Path

import typer

from ..engine import api
from ..engine.errors import RunqError
from ..engine.home import DELETED, LIVE, resolve_home

# Commands that select deleted runs whatever their options say.
DELETED_COMMANDS = {"purge", "restore"}

# The values each option offers; {root} is 0 (live runs) or 1 (deleted runs).
VALUE_QUERIES = {
    "runs": "SELECT id FROM runs WHERE deleted = {root}",
    "operations": "SELECT DISTINCT operation FROM runs WHERE deleted = {root} AND operation IS NOT NULL",
    "labels": "SELECT DISTINCT label FROM runs WHERE deleted = {root} AND label <> ''",
    "tags": "SELECT DISTINCT t.tag FROM tags AS t JOIN runs AS r ON r.key = t.run_key WHERE r.deleted = {root}",
    "digest": "SELECT DISTINCT sourcecode_digest FROM runs WHERE deleted = {root} AND sourcecode_digest <> ''",
}
# Guild offers labels quoted, so that one with spaces stays one argument.
SHOWN = {"labels": lambda label: f'"{label}"'}


def values(ctx, option):
    """The values of `option` among the runs the command selects from, from the
    index as it is and only if it exists: a TAB must never wait for a refresh
    or a first build."""
    root = ctx.find_root().params
    deleted = ctx.info_name in DELETED_COMMANDS or bool(ctx.params.get("deleted"))
    try:
        home = resolve_home(root.get("guild_home"))
        if not Path(root.get("index_path") or home.default_index_path).is_file():
            return []
        with api.open(home.path, root.get("index_path"), refresh=False) as index:
            rows = index.sql(VALUE_QUERIES[option].format(root=DELETED if deleted else LIVE)).rows
    except RunqError:
        return []
    show = SHOWN.get(option, str)
    return sorted(show(value) for (value,) in rows)


def completer(option):
    def complete(ctx: typer.Context, incomplete: str):
        return [value for value in values(ctx, option) if value.startswith(incomplete)]

    return complete


complete_run_ids = completer("runs")
