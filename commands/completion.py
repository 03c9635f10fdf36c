"""Shell completion of RUN arguments: run ids, as Guild completes them."""

import typer

from ..engine import api
from ..engine.errors import RunqError

# Commands that select deleted runs whatever their options say.
DELETED_COMMANDS = {"purge", "restore"}


def complete_run_ids(ctx: typer.Context, incomplete: str):
    """Ids of the runs the command would select from, starting with what was typed.

    The index is used as it is (no refresh): a TAB must answer at once."""
    root = ctx.find_root().params
    deleted = ctx.info_name in DELETED_COMMANDS or bool(ctx.params.get("deleted"))
    try:
        with api.open(root.get("guild_home"), root.get("index_path"), refresh=False) as index:
            runs = index.select(deleted=deleted)
    except RunqError:
        return []
    return sorted(run.id for run in runs if run.id.startswith(incomplete))
