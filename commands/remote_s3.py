"""`-r REMOTE` for an S3 remote: the mirror of its metadata is synced, the
local command selects, previews and asks on the mirror as on any home, and
the confirmed runs are then deleted, moved or restored in the bucket (and
in the mirror and its index to match)."""

from dataclasses import dataclass
from pathlib import Path

import typer

from ..engine import actions
from ..engine.remote_s3 import S3Session, write_meta_id


def mirror_settings(ctx, remote):
    """The settings of a local command on the remote's synced mirror."""
    with S3Session(remote) as session:
        mirror = session.sync_mirror()
    return ctx.obj._replace(guild_home=Path(mirror), index_path=None, remote_actions=S3Actions(remote))


def index_mirror(ctx, remote):
    """`runq index -r REMOTE [--rebuild|--drop]`: the mirror's index."""
    from .index import index  # the local command

    ctx.obj = mirror_settings(ctx, remote)
    return index(ctx, rebuild=ctx.params.get("rebuild", False), drop=ctx.params.get("drop", False), remote=None)


@dataclass(frozen=True)
class S3Actions:
    remote: object

    def perform(self, action, index, runs):
        """(count, extra text) of `action` done on the bucket, then on the mirror."""
        from . import runs as run_commands  # the local commands' actions

        index = getattr(index, "index", index)  # the mirror's own index behind the commands' API
        ids = [run.id for run in runs]
        deleted = runs[0].deleted
        mirror = str(index.home.path)
        write_meta_id(mirror, None)  # if this stops halfway, the next command syncs in full
        with S3Session(self.remote) as session:
            if action in (run_commands.PURGE, run_commands.DELETE_PERMANENT):
                done, failed = session.remove_runs(ids, deleted)
            else:
                done, failed = session.move_runs(ids, not deleted)
            meta_id = session.new_meta_id()
        for run_id, why in failed.items():
            typer.echo(f"runq: could not change {run_id[:8]} on {self.remote.name}: {why}", err=True)
        done_runs = [run for run in runs if run.id in set(done)]
        self._update_mirror(action, run_commands, index, done_runs)
        if not failed:
            write_meta_id(mirror, meta_id)  # the mirror matches the bucket again
        return len(done_runs), f" on {self.remote.name}"

    @staticmethod
    def _update_mirror(action, run_commands, index, runs):
        if not runs:
            return
        if action in (run_commands.PURGE, run_commands.DELETE_PERMANENT):
            actions.remove(index, runs, runs[0].deleted, None, False)
        else:
            actions.move(index, runs, not runs[0].deleted)
