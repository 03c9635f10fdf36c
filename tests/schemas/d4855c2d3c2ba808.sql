-- The runq index of one Guild home.
--
-- runq creates it at <guild home>/cache/runq/index.db (or in the user's
-- cache directory for a read-only or network home) and refreshes it from
-- the run directories before every command; it is a cache, and
-- `runq index --rebuild` recreates it. Every index runq creates has
-- PRAGMA application_id 0x72756E71 ("runq"); runq opens no other file as
-- an index. Paths are relative to the home, so a moved or copied home
-- keeps a valid index. Times are microseconds since the epoch, as Guild
-- stores them.
--
-- Attribute and flag values keep their YAML kind beside them so that SQL
-- can compare them as Guild does in Python: numbers only with numbers
-- (`num`), strings only with strings (`str`).

-- schema_version (a hash of this file: another one means a new index),
-- home (the real path and st_dev:st_ino of the home last refreshed: another
-- one means the home moved, was copied or re-mounted, and every run is
-- checked), last_refresh, last_refresh_seconds, roots_stamp.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);

CREATE TABLE IF NOT EXISTS runs (
    key INTEGER PRIMARY KEY,        -- the run's row; other tables' run_key. Numbered after the run's
                                    -- timestamp, so rows of runs that sort together are stored together
    id TEXT NOT NULL UNIQUE,        -- the run directory's name
    deleted INTEGER NOT NULL,       -- 0: in runs/, 1: in trash/runs/
    dir TEXT NOT NULL,              -- the run directory relative to the home: runs/<id> or trash/runs/<id>
    pkg_type TEXT,                  -- from .guild/opref: guildfile, script, package, ...
    pkg_name TEXT,
    pkg_version TEXT,
    model TEXT,
    op TEXT,
    operation TEXT,                 -- as Guild formats it: [pkg/][model:]op
    opspec_pkg TEXT,                -- `operation` split as --operation splits a value
    opspec_model TEXT,
    opspec_op TEXT,
    pkg_desc TEXT,                  -- the `from` attribute
    op_dir TEXT,                    -- the project directory Guild shows beside the operation
    initialized INTEGER,
    started INTEGER,
    stopped INTEGER,
    timestamp INTEGER,              -- started, else initialized: Guild's sort key
    exit_status INTEGER,
    status TEXT NOT NULL,           -- completed, error, terminated, running, pending, staged
    pid INTEGER,                    -- from .guild/LOCK while no exit status decides the status
    remote TEXT,                    -- from .guild/LOCK.remote
    label TEXT,                     -- the label as written; NULL without a label
    marked INTEGER NOT NULL DEFAULT 0,
    sourcecode_digest TEXT,
    comments_text TEXT NOT NULL DEFAULT '',  -- user, host and body of each comment, lower-cased: what --comment searches
    listing INTEGER,                -- position in its directory listing: Guild's order for equal timestamps
    watched TEXT,                   -- files whose stat makes the signature, relative to dir, one per line
    signature INTEGER,              -- a hash of their mtimes, ctimes and sizes when the run was read; NULL: read again
    problems TEXT,                  -- what could not be read, if anything
    scalars_pending TEXT            -- event files found but not read yet, relative to dir, one per line
                                    -- (a large first build leaves them to the first command that
                                    -- uses scalars); NULL: none
);

-- Guild's order (newest first, runs without a timestamp last, ties in listing
-- order), so selections read runs already sorted.
CREATE INDEX IF NOT EXISTS runs_in_order ON runs (deleted, timestamp IS NULL, timestamp DESC, listing);

-- What a refresh compares, readable without the wide rows: every command
-- scans it.
CREATE INDEX IF NOT EXISTS runs_signatures ON runs (deleted, dir, watched, signature);

-- The runs whose status hangs on a live pid, which every refresh re-checks:
-- found without scanning the wide rows (with a watcher, the rest of a
-- refresh no longer grows with the number of runs).
CREATE INDEX IF NOT EXISTS runs_pids ON runs (pid) WHERE pid IS NOT NULL;

CREATE TABLE IF NOT EXISTS attrs (
    run_key INTEGER NOT NULL REFERENCES runs (key),  -- declared, not enforced (PRAGMA foreign_keys stays off)
    name TEXT NOT NULL,             -- the file name in .guild/attrs
    kind TEXT NOT NULL,             -- null, bool, int, float, str, list, dict, other; raw: a large
                                    -- attribute not decoded yet (read from its file when a filter names it)
    num,                            -- bool (0/1), int and float values; NULL for NaN
    str TEXT,                       -- str values
    folded TEXT,                    -- str(value).lower() of a truthy non-list value: what `contains` searches
    json TEXT,                      -- list and dict values
    PRIMARY KEY (run_key, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS flags (
    run_key INTEGER NOT NULL REFERENCES runs (key),  -- declared, not enforced (PRAGMA foreign_keys stays off)
    name TEXT NOT NULL,             -- a key of the `flags` attribute
    kind TEXT NOT NULL,
    num,
    str TEXT,
    folded TEXT,
    json TEXT,
    PRIMARY KEY (run_key, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS scalars (
    run_key INTEGER NOT NULL REFERENCES runs (key),  -- declared, not enforced (PRAGMA foreign_keys stays off)
    prefix TEXT NOT NULL,           -- event files' directory relative to the run: .guild, '' (root), eval, ...
    tag TEXT NOT NULL,
    preferred INTEGER NOT NULL,     -- 1 for the prefix an unprefixed tag reads: the least by code point ('' < .guild < eval)
    first_val REAL,
    first_step INTEGER,
    last_val REAL,                  -- value at the highest step (the later event on ties); NULL for NaN, which filters treat as undefined, as Guild does
    last_step INTEGER,
    min_val REAL,
    min_step INTEGER,
    max_val REAL,
    max_step INTEGER,
    avg_val REAL,
    total REAL,
    count INTEGER,
    last_folded TEXT,               -- str(last_val).lower() when truthy: what `contains` searches
    PRIMARY KEY (run_key, tag, prefix)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tags (
    run_key INTEGER NOT NULL REFERENCES runs (key),  -- declared, not enforced (PRAGMA foreign_keys stays off)
    tag TEXT NOT NULL,
    PRIMARY KEY (run_key, tag)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS comments (
    run_key INTEGER NOT NULL REFERENCES runs (key),  -- declared, not enforced (PRAGMA foreign_keys stays off)
    seq INTEGER NOT NULL,           -- order in the `comments` attribute
    user TEXT,
    host TEXT,
    body TEXT,
    time INTEGER,
    PRIMARY KEY (run_key, seq)
) WITHOUT ROWID;

-- Selections compiled before (engine/sqlcache.py), the newest few: a repeated
-- selection runs without being compiled again.
CREATE TABLE IF NOT EXISTS compiled (
    key TEXT PRIMARY KEY,           -- hash of the selection, runq's and sqlglot's code, this schema
    sql TEXT NOT NULL,
    params TEXT NOT NULL,           -- JSON {name: value}
    now_params TEXT NOT NULL,       -- JSON {name: role}: parameters recomputed from the time of each use
    lazy_attrs TEXT NOT NULL,       -- JSON list of the large attributes the selection decodes first
    has_run_args INTEGER NOT NULL,
    uses_scalars INTEGER NOT NULL   -- reads the scalars table (event files left unread are read first)
);

-- Views for writing your own SQL (runq sql, sqlite3, Datasette): each names
-- runs by id, so common questions need no joins. Times are shown as local
-- time text, as Guild shows them. Large attributes (env, pip_freeze,
-- run_params, op, cmd, platform) are stored raw with NULL values until a
-- runq filter names one (e.g. -F 'cmd contains x'): `decoded` says which.

CREATE VIEW IF NOT EXISTS runs_view AS
SELECT
    r.id AS run_id,
    substr(r.id, 1, 8) AS short_id,
    r.deleted,
    r.operation,
    r.status,
    r.label,
    r.marked,
    CASE WHEN r.started THEN datetime(CAST(r.started / 1000000 AS INTEGER), 'unixepoch', 'localtime') END AS started,
    CASE WHEN r.stopped THEN datetime(CAST(r.stopped / 1000000 AS INTEGER), 'unixepoch', 'localtime') END AS stopped,
    (SELECT group_concat(t.tag, ' ') FROM tags AS t WHERE t.run_key = r.key) AS tags,  -- sorted, space-separated
    r.exit_status,
    r.sourcecode_digest,
    r.dir,
    r.key AS run_key
FROM runs AS r;

CREATE VIEW IF NOT EXISTS run_attrs AS
SELECT
    r.id AS run_id,
    r.deleted,
    a.name,
    a.kind,
    COALESCE(a.num, a.str, a.json) AS value,  -- NULL for null, NaN, other kinds (dates...) and raw
    a.kind <> 'raw' AS decoded,               -- 0: a large attribute no filter has named yet
    a.run_key
FROM attrs AS a
JOIN runs AS r ON r.key = a.run_key;

CREATE VIEW IF NOT EXISTS run_flags AS
SELECT
    r.id AS run_id,
    r.deleted,
    f.name,
    f.kind,
    COALESCE(f.num, f.str, f.json) AS value,  -- NULL for null, NaN and other kinds
    f.run_key
FROM flags AS f
JOIN runs AS r ON r.key = f.run_key;

CREATE VIEW IF NOT EXISTS run_scalars AS
SELECT
    r.id AS run_id,
    r.deleted,
    s.prefix,
    s.tag,
    s.last_val,
    s.last_step,
    s.first_val,
    s.first_step,
    s.min_val,
    s.min_step,
    s.max_val,
    s.max_step,
    s.avg_val,
    s.total,
    s.count,
    s.preferred,                              -- 1: what a filter's unprefixed tag reads
    s.run_key
FROM scalars AS s
JOIN runs AS r ON r.key = s.run_key;

CREATE VIEW IF NOT EXISTS run_tags AS
SELECT r.id AS run_id, r.deleted, t.tag, t.run_key
FROM tags AS t
JOIN runs AS r ON r.key = t.run_key;

CREATE VIEW IF NOT EXISTS run_comments AS
SELECT
    r.id AS run_id,
    r.deleted,
    c.seq,
    c.user,
    c.host,
    c.body,
    CASE WHEN c.time THEN datetime(CAST(c.time / 1000000 AS INTEGER), 'unixepoch', 'localtime') END AS time,
    c.run_key
FROM comments AS c
JOIN runs AS r ON r.key = c.run_key;
