"""runq as a Python library: select a Guild home's runs as Guild would, and act on them.

    import runq
    index = runq.open()                        # $GUILD_HOME, else ~/.guild
    runs = index.select(filter="lr >= 0.001", deleted=True)
    [run.id for run in runs]                   # newest first, as `guild runs list`
    index.purge(runs)                          # re-checked against the disk first

The `runq runs` commands are built on this module: a selection here is
exactly the one the command line makes, and acting on it keeps every
safety of the commands (runs re-checked after selection, purge only from
the trash, through the purge area).
"""

import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import List, NamedTuple, Optional, Tuple

from . import actions
from .archive import archive_home, archive_path
from .errors import HomeError, SelectionError
from .executor import stored_attrs
from .home import DELETED, LIVE, locate_index, resolve_home
from .indexer import Index, rebuild_index
from .selection import STATUSES, build_selection

STATUS_NAMES = tuple(STATUSES.values())


def open(home=None, index=None, *, refresh=True, check=(LIVE, DELETED), progress=None, notify=None, lock_wait=None):  # noqa: A001 - runq.open
    """The index of a Guild home, refreshed from the disk unless `refresh` is False.

    `home`: the Guild home (default: found as Guild finds it); `index`: the
    index file (default: $RUNQ_INDEX, else <home>/cache/runq/index.db, else
    the user's cache for a read-only or network home). A new index, or one
    built for another place of the home (moved, copied), is always
    refreshed; a corrupt one is rebuilt (it is only a cache).
    `progress(done, total)` is called while runs are read; `notify(text)`
    hears what the user should know (default: RunIndex.notices keeps it);
    `lock_wait` (indexer.LockWait): how long to wait for another process
    writing the index, and whom to tell.
    """
    guild_home = resolve_home(home)
    location = locate_index(guild_home, index)
    notices = []
    tell = notify or notices.append
    try:
        opened = _open_refreshed(guild_home, location, refresh, check, progress, tell, lock_wait)
    except sqlite3.OperationalError as e:  # a full disk, an index made read-only meanwhile
        raise HomeError(f"cannot update the index {location.path}: {e}") from None
    except sqlite3.DatabaseError as e:  # pages broken past what opening checks
        rebuild_index(location.path, location.owned)
        tell(f"the index {location.path} was corrupt ({e}); rebuilt it")
        opened = _open_refreshed(guild_home, location, refresh, check, progress, tell, lock_wait)
    opened.notices = notices
    return opened


def _open_refreshed(home, location, refresh, check, progress, tell, lock_wait):
    db = open_store(home, location, lock_wait)
    try:
        for notice in db.notices:
            tell(notice)
        _finish_pending(home)
        report = None
        if refresh or db.meta("last_refresh") is None or db.home_changed:
            report = db.refresh(check=check, progress=progress)
    except BaseException:
        db.close()
        raise
    return RunIndex(db, report)


def _finish_pending(home):
    """Unlinks what an interrupted purge left; the purge module loads only when there is some."""
    if os.path.lexists(home.purge_dir):
        from .purge import finish_pending

        finish_pending(home)


def open_store(home, location, lock_wait=None):
    """The index at an IndexLocation: an SQLite file, or a home's rows in PostgreSQL."""
    if location.url:
        from .pgindex import open_index  # psycopg and its adapter only for a PostgreSQL index

        return open_index(home, location.url, lock_wait)
    return Index(home, location.path, owned=location.owned, lock_wait=lock_wait)


def open_archive(path, index=None, *, refresh=True, progress=None):
    """The index of an archive: a directory of runs as `guild export` writes
    them. It is kept in the user's cache directory unless `index` says where;
    its runs can be selected, not acted on."""
    archive = archive_path(path)
    db = Index(archive_home(archive), index)
    report = None
    if refresh or db.meta("last_refresh") is None:
        report = db.refresh(check=(LIVE,), progress=progress)
    return RunIndex(db, report, archive=archive)


class Runs(list):
    """Selected runs (executor.SelectedRun), in Guild's order, with the
    selection that chose them; `total`: how many it chose (more than these
    when only the first ones were asked for)."""

    def __init__(self, runs, selection, now, total=None):
        super().__init__(runs)
        self.selection = selection
        self.now = now
        self.total = len(self) if total is None else total

    def only(self, run_ids):
        """These of the runs (by full id), still with the selection that chose them."""
        return Runs([run for run in self if run.id in run_ids], self.selection, self.now)


@dataclass
class Outcome:
    """What purge, delete or restore did."""

    done: List[str] = field(default_factory=list)  # ids of the runs acted on
    skipped: list = field(default_factory=list)  # runs that changed or vanished since selected
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (run id, why) left in place
    stopped: list = field(default_factory=list)  # running runs stopped before being deleted
    not_stopped: list = field(default_factory=list)  # running runs whose pid is not shown to be theirs
    left: List[str] = field(default_factory=list)  # mount points inside removed runs, left in place
    in_place: bool = False  # the purge area was on another file system: unlinked where they were
    bytes_freed: Optional[int] = None  # None: not measured (moves, background unlinking)

    @property
    def all_done(self):
        """Every run kept after the re-check was acted on, wholly."""
        return not self.failed and not self.left


class SqlResult(NamedTuple):
    columns: List[str]
    rows: List[tuple]


class RunIndex:
    """An open, refreshed index of one Guild home."""

    def __init__(self, index, refresh_report=None, archive=None):
        self.index = index
        self.refresh_report = refresh_report  # None when the index was used as it was
        self.archive = archive  # the archive directory, for an archive's index
        self.notices = []  # what opening it had to tell (e.g. a corrupt index rebuilt)

    @property
    def home(self):
        """The Guild home, or the archive directory."""
        return self.archive or self.index.home.path

    @property
    def path(self):
        return self.index.path

    def close(self):
        self.index.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Selecting

    def select(
        self,
        runs=(),
        *,
        filter=None,  # noqa: A002 - Guild's name
        operation=(),
        label=(),
        unlabeled=False,
        tag=(),
        comment=(),
        marked=False,
        unmarked=False,
        started=None,
        digest=None,
        status=(),
        not_status=(),
        deleted=False,
        now=None,
        first=None,
    ):
        """Runs as `guild runs list` selects them, each option under Guild's name.

        `runs`: RUN arguments (indexes, `START:END` ranges, id prefixes),
        resolved after the filters; `operation`, `label`, `tag`, `comment`:
        a value or a list of them (any may match); `status`: names any of
        which a run may have (running, completed, error, terminated,
        pending, staged), `not_status`: names it may not have; `deleted`:
        select from the trash; `first`: only the first that many runs
        (newest first; `.total` of the result counts them all). Raises
        RunqError subclasses for bad input.
        """
        now = now or datetime.now()
        selection = build_selection(
            deleted=deleted,
            filter_expr=filter,
            operations=_values(operation),
            labels=_values(label),
            unlabeled=unlabeled,
            tags=_values(tag),
            comments=_values(comment),
            marked=marked,
            unmarked=unmarked,
            started=started,
            digest=digest,
            status_flags=_status_flags(status, not_status),
            runs=_values(runs),
            now=now,
        )
        return self.select_built(selection, now, first)

    def select_built(self, selection, now, first=None):
        """Runs of an engine.selection.Selection (what the command line builds).
        With `first`, only the first that many are read, and counted in SQL
        (`total`): a listing of 20 of a million runs reads 20."""
        if first is not None and selection.runs:  # RUN arguments are resolved over every run
            runs = self.select_built(selection, now)
            return Runs(runs[:first], selection, now, len(runs))
        runs = actions.select(self.index, selection, now, first)
        total = None if first is None or len(runs) < first else actions.count(self.index, selection, now)
        if self.archive:  # shown where they are, not through the link runq made to them
            runs = [run._replace(dir=os.path.join(self.archive, run.id)) for run in runs]
        return Runs(runs, selection, now, total)

    def stored_attrs(self, runs, names):
        """{run id: {name: (kind, num, str, json)}}: what the index holds of these attributes."""
        return stored_attrs(self.index.conn, [run.id for run in runs], list(names))

    def sql(self, query, params=None, *, timeout=None):
        """Runs read-only SQL over the index (anything else is refused), binding
        `params` (a sequence, or a mapping for :name); `timeout` in seconds."""
        self.index.read_pending_scalars()  # any query may read scalars
        from .pgindex import read_only_query  # its module (and psycopg's) stays out of start-up

        with read_only_query(self.index.conn, query, params, timeout) as running:
            return SqlResult(running.columns, list(running))

    # Acting: each re-checks the runs against the disk first and leaves out
    # those that changed so that they no longer match (Outcome.skipped).

    def purge(self, runs, *, progress=None, background=False):
        """Permanently deletes selected deleted runs (from the trash only)."""
        kept, outcome = self._recheck(runs, DELETED, "purge")
        if kept:
            self._removed(outcome, actions.remove(self.index, kept, True, progress, background), background)
        return outcome

    def delete(self, runs, *, permanent=False, progress=None, background=False):
        """Moves selected live runs to the trash (removes them with `permanent`),
        stopping local running runs first, as Guild does."""
        kept, outcome = self._recheck(runs, LIVE, "delete")
        if not kept:
            return outcome
        # Only after the re-check: a stopped run writes its exit status, and
        # must not be skipped as changed after being stopped for deletion.
        outcome.stopped, outcome.not_stopped = actions.stop_running(self.index, kept)
        if permanent:
            self._removed(outcome, actions.remove(self.index, kept, False, progress, background), background)
        else:
            self._moved(outcome, actions.move(self.index, kept, True))
        return outcome

    def restore(self, runs):
        """Moves selected deleted runs back from the trash."""
        kept, outcome = self._recheck(runs, DELETED, "restore")
        if kept:
            self._moved(outcome, actions.move(self.index, kept, False))
        return outcome

    def _recheck(self, runs, source, verb):
        if self.archive:
            raise SelectionError(f"cannot {verb} runs of an archive", hint="runq only lists archived runs")
        if not isinstance(runs, Runs):
            raise SelectionError(f"{verb} takes runs from select()", hint="select them with index.select(...)")
        if bool(runs.selection.deleted) != (source == DELETED):
            where = "deleted" if source == DELETED else "live"
            raise SelectionError(f"{verb} acts on {where} runs only", hint=f"select with deleted={source == DELETED}")
        if not runs:
            return [], Outcome()
        kept, skipped = actions.recheck(self.index, runs.selection, list(runs), runs.now)
        return kept, Outcome(skipped=skipped)

    @staticmethod
    def _removed(outcome, report, background):
        outcome.done = list(report.removed)
        outcome.failed = list(report.failed)
        outcome.left = list(report.left)
        outcome.in_place = report.in_place
        outcome.bytes_freed = None if background else report.bytes_freed

    @staticmethod
    def _moved(outcome, report):
        outcome.done = list(report.moved)
        outcome.failed = list(report.failed)


def _values(value):
    """A value or a list of values as a tuple of strings (RUN indexes may be ints)."""
    if value is None:
        return ()
    if isinstance(value, (str, int)):
        return (str(value),)
    return tuple(str(item) for item in value)


def _status_flags(wanted, unwanted):
    flags = {}
    for names, setting in ((_values(wanted), True), (_values(unwanted), False)):
        for name in names:
            if name not in STATUS_NAMES:
                raise SelectionError(f"unknown status '{name}'", hint=f"use one of {', '.join(STATUS_NAMES)}")
            flags[name] = setting
    return flags
