"""Shell completion of RUN arguments: run ids, as Guild completes them."""

from pathlib import Path

import typer

from ..engine import api
from ..engine.errors import RunqError
from ..engine.home import resolve_home

# Commands that select deleted runs whatever their options say.
DELETED_COMMANDS = {"purge", "restore"}


def complete_run_ids(ctx: typer.Context, incomplete: str):
    """Ids of the runs the command would select from, starting with what was typed.

    The index is used as it is, and only if it exists: a TAB must answer at
    once, never wait for a refresh or a first build."""
    root = ctx.find_root().params
    deleted = ctx.info_name in DELETED_COMMANDS or bool(ctx.params.get("deleted"))
    try:
        home = resolve_home(root.get("guild_home"))
        if not Path(root.get("index_path") or home.default_index_path).is_file():
            return []
        with api.open(home.path, root.get("index_path"), refresh=False) as index:
            runs = index.select(deleted=deleted)
    except RunqError:
        return []
    return sorted(run.id for run in runs if run.id.startswith(incomplete))
