"""The index file runq owns: it follows a home that is moved or copied, it
knows it is an index (and refuses to touch any other file), it is replaced
by renaming a new one into place, created by several processes at once
without errors, rebuilt when corrupt, kept in the user's cache for homes
runq cannot write in, and removed with `runq index --drop`."""

import fcntl
import gc
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import NOW, assert_one_line_error
from typer.testing import CliRunner

from runq.commands.app import app
from runq.engine.home import GuildHome
from runq.engine.digest import sha256
from runq.engine.indexer import ADDITIVE_UPGRADES, APPLICATION_ID, Index, schema_text, schema_version
from runq.engine.samplehome import HomeSpec, encode_attr, generate_home

RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
CREATE_ROUNDS = int(os.environ.get("RUNQ_TEST_CREATE_ROUNDS", "10"))


def make_home(root, runs=20, seed=3):
    return generate_home(root, HomeSpec(runs=runs, seed=seed, profile="fidelity"), NOW)


def runq(*args, env=None):
    result = CliRunner().invoke(app, ["--now", NOW.isoformat(), *args], env=env)
    gc.collect()
    return result


def listed(home, *selection, root=(), env=None):
    result = runq("-H", str(home), *root, "runs", "list", "--json", *selection, env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def index_fields(stdout):
    return dict(line.split(":", 1) for line in stdout.splitlines())


def write_label(run_dir, label):
    (run_dir / ".guild" / "attrs" / "label").write_text(encode_attr(label))


def default_index(home):
    return home / "cache" / "runq" / "index.db"


def run_script(*args, env=None, preexec_fn=None, cwd=None):
    return subprocess.run([str(RUNQ_SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)


# Moved and copied homes


def test_a_moved_home_keeps_its_runs_without_a_rebuild(tmp_path):
    manifest = make_home(tmp_path / "home")
    assert runq("-H", str(tmp_path / "home"), "index").exit_code == 0
    os.rename(tmp_path / "home", tmp_path / "home2")
    runs = listed(tmp_path / "home2", root=["--no-refresh"])
    assert sorted(run["id"] for run in runs) == sorted(run.id for run in manifest.live)
    assert all(run["run_dir"] == str(tmp_path / "home2" / "runs" / run["id"]) for run in runs)


def test_a_copied_home_reads_its_own_run_directories(tmp_path):
    manifest = make_home(tmp_path / "home")
    original, copy = tmp_path / "home", tmp_path / "copy"
    assert runq("-H", str(original), "index").exit_code == 0
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    run = manifest.live[0]
    write_label(copy / "runs" / run.id, "only in the copy")
    assert [r["id"] for r in listed(copy, "-Fl", "only in the copy")] == [run.id]
    assert listed(original, "-Fl", "only in the copy") == []
    assert all(r["run_dir"].startswith(f"{copy}/") for r in listed(copy))
    shutil.rmtree(original)
    assert sorted(r["id"] for r in listed(copy)) == sorted(r.id for r in manifest.live)


def test_one_index_file_used_for_two_homes_follows_the_one_given(tmp_path):
    one, two = make_home(tmp_path / "one", seed=1), make_home(tmp_path / "two", runs=12, seed=2)
    shared = tmp_path / "shared.db"
    assert len(listed(one.root, root=["--index", str(shared)])) == len(one.live)
    runs = listed(two.root, root=["--index", str(shared), "--no-refresh"])
    assert sorted(r["id"] for r in runs) == sorted(r.id for r in two.live)


# An index that knows it is one


def test_the_index_carries_runqs_application_id_and_schema_version(tmp_path):
    make_home(tmp_path)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    conn = sqlite3.connect(default_index(tmp_path))
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (schema_version(),)
    conn.close()


def _unrelated_sqlite(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id TEXT)")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.commit()
    conn.close()


FOREIGN_FILES = {
    "an unrelated SQLite database": _unrelated_sqlite,
    "an empty file": lambda path: path.write_bytes(b""),
    "a text file": lambda path: path.write_text("my notes\n" * 100),
}


@pytest.mark.parametrize("how", ["--index", "RUNQ_INDEX"])
@pytest.mark.parametrize("kind", list(FOREIGN_FILES))
def test_a_file_that_is_not_an_index_is_refused_and_left_unchanged(tmp_path, kind, how):
    make_home(tmp_path / "home")
    target = tmp_path / "other" / "file.db"
    target.parent.mkdir()
    FOREIGN_FILES[kind](target)
    content = target.read_bytes()
    if how == "--index":
        result = runq("-H", str(tmp_path / "home"), "--index", str(target), "runs", "list")
    else:
        result = runq("-H", str(tmp_path / "home"), "runs", "list", env={"RUNQ_INDEX": str(target)})
    assert_one_line_error(result, str(target), "not a runq index")
    assert target.read_bytes() == content
    assert os.listdir(target.parent) == ["file.db"]
    assert not (tmp_path / "home" / "cache").exists()
    drop = runq("-H", str(tmp_path / "home"), "--index", str(target), "index", "--drop")
    assert_one_line_error(drop, "not a runq index")
    assert target.read_bytes() == content


def test_runq_index_environment_variable_places_the_index(tmp_path):
    manifest = make_home(tmp_path / "home")
    target = tmp_path / "mine.db"
    result = runq("-H", str(manifest.root), "index", env={"RUNQ_INDEX": str(target)})
    assert result.exit_code == 0, result.stderr
    assert index_fields(result.stdout)["Index"].strip() == f"{target} (from $RUNQ_INDEX)"
    assert target.exists() and not (manifest.root / "cache").exists()
    given = tmp_path / "given.db"
    assert runq("-H", str(manifest.root), "--index", str(given), "index", env={"RUNQ_INDEX": str(target)}).exit_code == 0
    assert given.exists()


@pytest.mark.parametrize("older", [
    "UPDATE meta SET value = 'older' WHERE key = 'schema_version'",
    "PRAGMA application_id = 0",  # as runq's indexes were before they had one
])
def test_an_index_of_an_older_schema_is_replaced_silently(tmp_path, older):
    manifest = make_home(tmp_path)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    db = default_index(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute(older)
    conn.close()
    inode = os.stat(db).st_ino
    result = runq("-H", str(tmp_path), "runs", "list", "--json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert len(json.loads(result.stdout)) == len(manifest.live)
    assert os.stat(db).st_ino != inode  # a new file, renamed into place
    assert not [name for name in os.listdir(db.parent) if name.endswith(".new")]


OLDER_SCHEMAS = sorted((Path(__file__).parent / "schemas").glob("*.sql"))  # schema.sql of earlier runq versions


def _objects(conn):
    return set(conn.execute("SELECT type, name, sql FROM sqlite_master"))


@pytest.mark.parametrize("older", OLDER_SCHEMAS, ids=[path.stem for path in OLDER_SCHEMAS])
def test_an_index_of_a_schema_this_one_only_adds_to_is_upgraded_in_place(tmp_path, older):
    version = older.stem
    assert sha256(older.read_bytes()).hexdigest()[:16] == version and version in ADDITIVE_UPGRADES
    make_home(tmp_path)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    db = default_index(tmp_path)
    conn = sqlite3.connect(db, isolation_level=None)
    current = _objects(conn)
    old = sqlite3.connect(":memory:")
    old.executescript(older.read_text())
    added = {(kind, name) for kind, name, _ in current} - {(kind, name) for kind, name, _ in _objects(old)}
    assert added and {kind for kind, _ in added} <= {"table", "index"}
    for kind, name in sorted(added, key=lambda each: each[0] == "table"):  # indexes first
        conn.execute(f"DROP {kind.upper()} {name}")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.close()
    inode = os.stat(db).st_ino
    upgraded = listed(tmp_path, "-F", "lr > 0.01 or label contains a", "--all")
    assert os.stat(db).st_ino == inode  # the same file, not a rebuild
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (schema_version(),)
    assert _objects(conn) == current  # every object as a new index has it
    for table, names in (("attrs", "attr_names"), ("flags", "flag_names")):
        stored = {row[0] for row in conn.execute(f"SELECT DISTINCT name FROM {table}")}
        assert stored and {row[0] for row in conn.execute(f"SELECT name FROM {names}")} == stored
    conn.close()
    rebuilt = listed(tmp_path, "-F", "lr > 0.01 or label contains a", "--all", root=("--index", str(tmp_path / "new.db")))
    assert upgraded and upgraded == rebuilt


def test_a_run_with_a_name_no_run_had_before_is_selected_by_it(tmp_path):
    manifest = make_home(tmp_path)
    assert listed(tmp_path, "-F", "attr:my_note = 'x'", "-F", "flag:my_flag = 2") == []
    run = manifest.live[0]
    attrs = run.run_dir(manifest.root) / ".guild" / "attrs"
    (attrs / "my_note").write_text(encode_attr("x"))
    (attrs / "flags").write_text(encode_attr({"my_flag": 2}))
    assert [found["id"] for found in listed(tmp_path, "-F", "my_note = x", "-F", "my_flag = 2")] == [run.id]


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_rebuild_that_cannot_write_leaves_the_old_index_in_place(tmp_path):
    manifest = make_home(tmp_path, runs=30)
    assert run_script("-H", str(tmp_path), "index").returncode == 0
    db = default_index(tmp_path)
    inode = os.stat(db).st_ino
    failed = run_script("-H", str(tmp_path), "index", "--rebuild", preexec_fn=_limit_file_size(8192))
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("runq: cannot create the index ") and len(failed.stderr.splitlines()) == 1
    assert str(db) in failed.stderr and "Traceback" not in failed.stderr
    assert os.stat(db).st_ino == inode
    assert sorted(os.listdir(db.parent)) == ["index.db", "index.db.lock"]
    done = run_script("-H", str(tmp_path), "--no-refresh", "runs", "list", "-a")
    assert len(done.stdout.splitlines()) == len(manifest.live)


def test_a_rebuild_renames_a_new_file_into_place_under_a_reader(tmp_path):
    manifest = make_home(tmp_path, runs=30)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    db = default_index(tmp_path)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM runs").fetchone() == (len(manifest.runs),)
    inode = os.stat(db).st_ino
    result = runq("-H", str(tmp_path), "index", "--rebuild")
    assert result.exit_code == 0, result.stderr
    assert os.stat(db).st_ino != inode
    assert reader.execute("SELECT COUNT(*) FROM runs").fetchone() == (len(manifest.runs),)
    reader.close()
    assert not [name for name in os.listdir(db.parent) if name.endswith(".new")]


def test_processes_creating_the_same_index_at_once_never_fail(tmp_path):
    manifest = make_home(tmp_path, runs=3)
    db = default_index(tmp_path)
    for _ in range(CREATE_ROUNDS):
        shutil.rmtree(db.parent, ignore_errors=True)
        procs = [
            subprocess.Popen([str(RUNQ_SCRIPT), "-H", str(tmp_path), "runs", "list", "-a"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        outputs = [proc.communicate(timeout=120) + (proc.returncode,) for proc in procs]
        for out, err, code in outputs:
            assert (code, err) == (0, "")
            assert len(out.splitlines()) == len(manifest.live)


def _opened(pid, path, tries=1000):
    """Whether process `pid` comes to have `path` open (polled, bounded)."""
    for _ in range(tries):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in fds):
                return True
        except OSError:  # an fd closed meanwhile, or the process ended
            pass
        time.sleep(0.01)
    return False


def test_an_index_is_created_under_runqs_own_lock(tmp_path):
    make_home(tmp_path, runs=3)
    db = default_index(tmp_path)
    db.parent.mkdir(parents=True)
    with open(f"{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen([str(RUNQ_SCRIPT), "-H", str(tmp_path), "index"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert _opened(proc.pid, f"{db}.lock")
            for _ in range(20):  # however long it waits, it creates nothing while the lock is held
                time.sleep(0.02)
                assert not db.exists() and proc.poll() is None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (0, "")
    assert db.exists()


def test_a_process_never_waits_for_its_own_open_index(tmp_path):
    manifest = make_home(tmp_path, runs=5)
    held = Index(GuildHome(tmp_path))  # as a library user or a test may leave one open
    result = runq("-H", str(tmp_path), "index", "--rebuild")
    assert result.exit_code == 0, result.stderr
    assert index_fields(result.stdout)["Runs"].strip() == str(len(manifest.live))
    held.close()


# A corrupt index is a cache: rebuilt, with one line


def _checkpointed(db):
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _garbage(db):
    db.write_bytes(os.urandom(20000))


def _truncated(db):
    _checkpointed(db)
    with open(db, "r+b") as f:
        f.truncate(os.path.getsize(db) // 2)


def _pages_overwritten(db):
    """Everything after the first page (the schema) garbage: found only when read."""
    _checkpointed(db)
    size = os.path.getsize(db)
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(os.urandom(size - 4096))


def _runs_table_dropped(db):
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE runs")
    conn.close()


@pytest.mark.parametrize("damage", [_garbage, _truncated, _runs_table_dropped, _pages_overwritten])
def test_a_corrupt_index_is_rebuilt_with_one_line(tmp_path, damage):
    manifest = make_home(tmp_path, runs=40)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    damage(default_index(tmp_path))
    result = runq("-H", str(tmp_path), "runs", "list", "--json")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"runq: the index {default_index(tmp_path)} was "), lines
    assert "rebuilt it" in lines[0]
    assert sorted(r["id"] for r in json.loads(result.stdout)) == sorted(r.id for r in manifest.live)
    assert runq("-H", str(tmp_path), "runs", "list").stderr == ""


def test_a_corrupt_index_used_without_a_refresh_is_one_line(tmp_path):
    make_home(tmp_path, runs=40)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    db = default_index(tmp_path)
    _checkpointed(db)
    conn = sqlite3.connect(db)
    pages = [row[0] for row in conn.execute("SELECT pageno FROM dbstat WHERE name = 'flags'")]
    conn.close()
    with open(db, "r+b") as f:  # only the flags' pages: found when a filter reads them
        for page in pages:
            f.seek((page - 1) * 4096)
            f.write(os.urandom(4096))
    result = runq("-H", str(tmp_path), "--no-refresh", "runs", "list", "-F", "flag:lr > 0")
    assert_one_line_error(result, "the index is corrupt", "runq index --rebuild")


# Problems with runq's own paths


def _cache_is_a_file(home):
    (home / "cache").write_text("")
    return home / "cache", "is a file"


def _runq_dir_is_a_file(home):
    (home / "cache").mkdir()
    (home / "cache" / "runq").write_text("")
    return home / "cache" / "runq", "is a file"


def _index_is_a_directory(home):
    default_index(home).mkdir(parents=True)
    return default_index(home), "is a directory"


@pytest.mark.parametrize("arrange", [_cache_is_a_file, _runq_dir_is_a_file, _index_is_a_directory])
def test_a_broken_path_of_runqs_own_is_one_line(tmp_path, arrange):
    make_home(tmp_path)
    path, reason = arrange(tmp_path)
    line = assert_one_line_error(runq("-H", str(tmp_path), "runs", "list"), str(path), reason)
    assert "Traceback" not in line


def test_an_index_under_a_missing_directory_is_one_line(tmp_path):
    make_home(tmp_path / "home")
    target = tmp_path / "missing" / "index.db"
    assert_one_line_error(runq("-H", str(tmp_path / "home"), "--index", str(target), "index"),
                          str(target), "does not exist")
    assert not target.parent.exists()


def run_confined(*args, read_only=(), env=None):
    """The runq script with `read_only` paths really read-only: as root (whom
    permissions do not stop), read-only bind mounts in a mount namespace of
    the child's own; otherwise without write permission."""
    env = {**os.environ, **(env or {})}
    if os.geteuid() != 0:
        for path in read_only:
            path.chmod(path.stat().st_mode & 0o555)
        return subprocess.run([str(RUNQ_SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1) to make a path read-only for root")
    mounts = " && ".join(f'mount --bind "{p}" "{p}" && mount -o remount,bind,ro "{p}"' for p in read_only)
    script = f'{mounts} && exec "$0" "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           str(RUNQ_SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_read_only_index_file_is_one_line(tmp_path):
    make_home(tmp_path)
    assert run_script("-H", str(tmp_path), "index").returncode == 0
    db = default_index(tmp_path)
    content = db.read_bytes()
    done = run_confined("-H", str(tmp_path), "runs", "list", read_only=[db])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"runq: cannot use the index {db}: it is read-only"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert db.read_bytes() == content


def test_a_read_only_home_keeps_its_index_in_the_user_cache(tmp_path):
    manifest = make_home(tmp_path / "home")
    home, cache = tmp_path / "home", tmp_path / "xdg"
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(cache)}
    done = run_confined("-H", str(home), "index", read_only=[home], env=env)
    assert done.returncode == 0, done.stderr
    fields = index_fields(done.stdout)
    assert fields["Index"].strip().startswith(f"{cache}/runq/")
    assert fields["Index"].strip().endswith("-home/index.db (in the user cache: the home is read-only)")
    assert fields["Runs"].strip() == str(len(manifest.live))
    assert not (home / "cache").exists()


@pytest.mark.parametrize("size", ["64k", "128k"])  # full while creating the index, and while filling it
def test_a_full_disk_is_one_line(tmp_path, size):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a small file system")
    make_home(tmp_path / "home", runs=40)
    small = tmp_path / "small"
    small.mkdir()
    script = f'mount -t tmpfs -o size={size} tmpfs "{small}" && exec "$0" "$@"'
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(RUNQ_SCRIPT),
                           "-H", str(tmp_path / "home"), "--index", str(small / "index.db"), "index"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("runq: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert str(small / "index.db") in done.stderr and "full" in done.stderr


# runq index --drop


def test_drop_says_what_it_removes_then_removes_it(tmp_path):
    make_home(tmp_path)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    runq_dir = tmp_path / "cache" / "runq"
    kept = sorted(os.listdir(runq_dir))
    result = runq("-H", str(tmp_path), "index", "--drop")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Removing what runq keeps for Guild home {tmp_path} (given with -H):"
    assert lines[1:] == [f"  {runq_dir / name}" for name in kept] + [f"  {runq_dir} (if nothing else is left in it)"]
    assert "index.db.lock" in kept
    assert not runq_dir.exists() and (tmp_path / "cache").is_dir()
    assert (tmp_path / "runs").is_dir()
    again = runq("-H", str(tmp_path), "index", "--drop")
    assert again.stdout.startswith("runq keeps nothing for Guild home")


def test_drop_leaves_files_that_are_not_runqs(tmp_path):
    make_home(tmp_path)
    assert runq("-H", str(tmp_path), "index").exit_code == 0
    stranger = tmp_path / "cache" / "runq" / "notes.txt"
    stranger.write_text("mine")
    assert runq("-H", str(tmp_path), "index", "--drop").exit_code == 0
    assert os.listdir(stranger.parent) == ["notes.txt"]
