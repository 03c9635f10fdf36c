"""`-r/--remote` on an S3 remote for real: moto's S3 server on 127.0.0.1
(tests/s3server.py), a bucket filled from a generated Guild home, and the
same home here as the reference: what runq selects on the remote's mirror
must be what it selects on the home, and what it changes in the bucket must
be exactly the selected runs' objects."""

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from guildenv import guild_python, guild_script
from test_cli import assert_one_line_error, make_home, runq

from runq.engine import remote_s3
from runq.engine.remote import remote_for_name

s3server = pytest.importorskip("s3server", reason="moto[server] and boto3 are test dependencies")

RUNQ_SCRIPT = Path(sys.executable).parent / "runq"
# What the mirror has of a run (no PENDING or STAGED marker, as in Guild's)
COMPARED = ("id", "operation", "started", "label", "marked")
SELECTIONS = [[], ["--deleted"], ["-Fo", "train"], ["-Fm"], ["--deleted", "-Fl", "bestmodel"], ["-F", "lr > 0.001"]]


@dataclass
class Bucket:
    home: Path  # the home it was filled from (never changed)
    name: str
    root: str
    env: dict
    s3: object

    def prefix(self, *parts):
        path = "/".join(part for part in (self.root, *parts) if part not in ("", "/"))
        return path + "/" if path else ""

    def keys(self):
        return s3server.all_keys(self.s3, self.name)

    def run_keys(self, run_ids, deleted):
        """The keys of these runs' objects, relative to their run root."""
        root = self.prefix("trash/runs" if deleted else "runs")
        return sorted(k[len(root):] for k in self.keys() if k.startswith(root) and k[len(root):].split("/")[0] in run_ids)


@pytest.fixture(scope="module")
def endpoint():
    with s3server.s3_server() as url:
        yield url


def fill_bucket(endpoint, tmp_dir, name, root, runs, seed):
    home = tmp_dir / "home"
    make_home(home, runs=runs, seed=seed, sourcecode_files=0)
    s3 = s3server.client(endpoint)
    s3server.upload_home(s3, name, root, home)
    config = tmp_dir / "config.yml"
    config.write_text(f"remotes:\n  store:\n    type: s3\n    bucket: {name}\n    root: {root}\n")
    env = {**s3server.s3_environ(endpoint, str(tmp_dir)), "GUILD_CONFIG": str(config), "HOME": str(tmp_dir)}
    return Bucket(home, name, root, env, s3)


@pytest.fixture(scope="module")
def shared(endpoint, tmp_path_factory):
    """A bucket the tests leave as it is."""
    return fill_bucket(endpoint, tmp_path_factory.mktemp("shared"), "shared-runs", "/guild/home", 40, 3)


@pytest.fixture
def fresh(endpoint, tmp_path, request):
    """A bucket of its own for a test that changes it."""
    return fill_bucket(endpoint, tmp_path, f"runs-{request.node.name.lower().replace('_', '-')[:40]}", "/", 12, 4)


def remote(bucket, command, *args, input=None, env=None):
    return runq(None, "runs", command, "-r", "store", *args, input=input, env={**bucket.env, **(env or {})})


def remote_listed(bucket, *args, name="store"):
    result = runq(None, "runs", "list", "-r", name, "--json", *args, env=bucket.env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def local_listed(bucket, *args):
    result = runq(bucket.home, "runs", "list", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def compared(runs):
    return [{key: run.get(key) for key in COMPARED} for run in runs]


def selected_ids(bucket, command, *args):
    result = remote(bucket, command, "--dry-run", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return [run["id"] for run in json.loads(result.stdout)]


# Selection on the mirror


@pytest.mark.parametrize("args", SELECTIONS)
def test_listing_equals_the_local_listing_of_the_same_home(shared, args):
    expected = local_listed(shared, *args)
    assert expected, "a selection that selects nothing proves little"
    assert compared(remote_listed(shared, *args)) == compared(expected)


GUILD_MIRRORS = """
import json, sys
from guild import remote as remotelib
from guild.remotes import s3
kind = s3.S3RemoteType(None)
configured = kind.remote_for_config("my store", remotelib.RemoteConfig({"bucket": "b-1", "root": "/a/b"}))
specs = [kind.remote_for_spec(spec) for spec in ("b-1", "b-1/a/b")]
json.dump([[r.name, r.bucket, r.root, r.local_sync_dir] for r in [configured] + specs], sys.stdout)
"""


def test_names_roots_and_mirror_directories_are_guilds(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("remotes:\n  my store:\n    type: s3\n    bucket: b-1\n    root: /a/b\n    region: eu-west-1\n")
    env = {**os.environ, "GUILD_CONFIG": str(config), "HOME": str(tmp_path)}
    done = subprocess.run([str(guild_python()), "-c", GUILD_MIRRORS], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ours = [remote_for_name(name, env, str(tmp_path)) for name in ("my store", "s3:b-1", "s3:b-1/a/b")]
    assert [[r.name, r.bucket, r.root, r.mirror_dir] for r in ours] == json.loads(done.stdout)
    assert ours[0].region == "eu-west-1"


def mirror_dir(bucket):
    mirrors = list((Path(bucket.env["GUILD_CONFIG"]).parent / "remotes" / "store" / "meta").iterdir())
    assert len(mirrors) == 1  # md5 of s3://BUCKET/ROOT, as Guild names it
    return mirrors[0]


def test_the_mirror_holds_only_metadata(shared):
    remote_listed(shared)
    mirror = mirror_dir(shared)
    files = [p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file()]
    run_files = [f for f in files if f.startswith(("runs/", "trash/runs/"))]
    assert run_files and all("/.guild/opref" in f or "/.guild/attrs/" in f or "/.guild/LOCK" in f for f in run_files)


# Acting on the bucket


def test_purge_removes_exactly_the_selected_runs_objects(fresh, monkeypatch):
    monkeypatch.setattr(remote_s3, "DELETE_BATCH", 7)  # several DeleteObjects requests on a small bucket
    before = fresh.keys()
    chosen = selected_ids(fresh, "purge", "-Fo", "train")
    assert chosen == [run["id"] for run in local_listed(fresh, "--deleted", "-Fo", "train")] and chosen
    purged_keys = {fresh.prefix("trash/runs") + key for key in fresh.run_keys(set(chosen), deleted=True)}
    result = remote(fresh, "purge", "-Fo", "train", input="y\n")
    assert result.exit_code == 0, result.stderr
    assert f"Permanently deleted {len(chosen)} run(s) on store" in result.stderr
    after = fresh.keys()
    assert sorted(set(before) - purged_keys) == [k for k in after if not k.endswith("meta-id")]
    assert fresh.prefix() + "meta-id" in after  # Guild's mirrors see the change
    left = {run["id"] for run in remote_listed(fresh, "--deleted")}
    assert left == {run["id"] for run in local_listed(fresh, "--deleted")} - set(chosen)


def test_delete_and_restore_move_exactly_the_selected_runs(fresh):
    before = fresh.keys()
    chosen = selected_ids(fresh, "delete", "-Fl", "-")
    assert chosen and len(chosen) < len(local_listed(fresh))
    moved = fresh.run_keys(set(chosen), deleted=False)
    result = remote(fresh, "delete", "-Fl", "-", "-y")
    assert result.exit_code == 0, result.stderr
    assert fresh.run_keys(set(chosen), deleted=False) == []
    assert fresh.run_keys(set(chosen), deleted=True) == moved
    assert {run["id"] for run in remote_listed(fresh, "--deleted", "-Fl", "-")} >= set(chosen)
    assert not {run["id"] for run in remote_listed(fresh)} & set(chosen)

    result = remote(fresh, "restore", *chosen, input="\n")  # restore's default answer is yes
    assert result.exit_code == 0, result.stderr
    assert [k for k in fresh.keys() if not k.endswith("meta-id")] == before
    assert {run["id"] for run in remote_listed(fresh)} == {run["id"] for run in local_listed(fresh)}


def test_runs_changed_elsewhere_are_synced_into_the_mirror(fresh):
    gone = local_listed(fresh)[0]["id"]
    remote_listed(fresh)
    vanished = [fresh.prefix("runs") + key for key in fresh.run_keys({gone}, deleted=False)]
    fresh.s3.delete_objects(Bucket=fresh.name, Delete={"Objects": [{"Key": k} for k in vanished]})
    assert gone not in {run["id"] for run in remote_listed(fresh)}
    assert gone not in os.listdir(mirror_dir(fresh) / "runs")

    # Guild's rule: while the bucket's meta-id is the mirror's, the mirror is current
    fresh.s3.put_object(Bucket=fresh.name, Key=fresh.prefix() + "meta-id", Body=b"first")
    remote_listed(fresh)
    assert (mirror_dir(fresh) / "meta-id").read_text() == "first"
    also_gone = local_listed(fresh)[1]["id"]
    vanished = [fresh.prefix("runs") + key for key in fresh.run_keys({also_gone}, deleted=False)]
    fresh.s3.delete_objects(Bucket=fresh.name, Delete={"Objects": [{"Key": k} for k in vanished]})
    assert also_gone in {run["id"] for run in remote_listed(fresh)}

    # acting on a run the bucket no longer has: reported, and the mirror synced in full next time
    result = remote(fresh, "delete", also_gone, "-y")
    assert result.exit_code == 0, result.stderr
    assert f"could not change {also_gone[:8]} on store: no objects in the bucket" in result.stderr
    assert "Deleted 0 run(s) on store" in result.stderr
    assert also_gone not in {run["id"] for run in remote_listed(fresh)}


def test_delete_permanent_removes_only_that_runs_objects(fresh):
    doomed = local_listed(fresh)[-1]["id"]
    before = fresh.keys()
    doomed_keys = {fresh.prefix("runs") + key for key in fresh.run_keys({doomed}, deleted=False)}
    result = remote(fresh, "delete", "--permanent", doomed[:8], "-y")
    assert result.exit_code == 0, result.stderr
    assert [k for k in fresh.keys() if not k.endswith("meta-id")] == sorted(set(before) - doomed_keys)
    assert doomed not in os.listdir(mirror_dir(fresh) / "runs")


@pytest.mark.parametrize("command, answer", [("purge", "n\n"), ("purge", "\n"), ("delete", "n\n"), ("restore", "no\n")])
def test_answering_no_changes_nothing_and_exits_4(shared, command, answer):
    before = shared.keys()
    result = remote(shared, command, input=answer)
    assert result.exit_code == 4, result.stderr
    assert shared.keys() == before


def test_dry_run_changes_nothing(shared):
    before = shared.keys()
    result = remote(shared, "purge", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "(dry run: nothing changed)" in result.stderr
    assert shared.keys() == before


def test_local_env_gives_credentials_and_endpoint_as_for_guilds_aws_commands(shared, tmp_path):
    shared.s3.create_bucket(Bucket="empty-runs")
    local_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_ENDPOINT_URL_S3": shared.env["AWS_ENDPOINT_URL_S3"]}
    config = tmp_path / "config.yml"
    config.write_text("remotes:\n  store:\n    type: s3\n    bucket: empty-runs\n    local-env: " + json.dumps(local_env))
    env = {**shared.env, "GUILD_CONFIG": str(config), "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
           "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{_closed_port()}"}
    result = runq(None, "runs", "purge", "-r", "store", env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "Nothing to purge.\n"


# Errors


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_missing_bucket_is_one_line(shared, tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("remotes:\n  store:\n    type: s3\n    bucket: no-such-bucket-here\n")
    result = runq(None, "runs", "list", "-r", "store", env={**shared.env, "GUILD_CONFIG": str(config)})
    assert_one_line_error(result, "no-such-bucket-here", "does not exist")
    assert result.exit_code == 1


def test_missing_credentials_are_one_line(shared):
    result = remote(shared, "list", env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": None})
    assert_one_line_error(result, "no AWS credentials")
    assert result.exit_code == 1


def test_boto3_missing_says_what_to_install(shared, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # `import boto3` fails as if it were not installed
    result = remote(shared, "list")
    assert_one_line_error(result, "install runq[s3]")


@pytest.mark.skipif(not RUNQ_SCRIPT.exists(), reason="runq is not installed in this venv")
def test_an_unreachable_endpoint_is_one_line_from_the_installed_script(shared):
    env = {**os.environ, **shared.env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{_closed_port()}"}
    done = subprocess.run([str(RUNQ_SCRIPT), "runs", "purge", "-r", "store", "-y"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("runq: cannot reach S3"), done.stderr


# Guild's own S3 remote (it runs the `aws` CLI) on the same buckets: about
# 30 s more, so only with RUNQ_S3_COMPARE_GUILD=1

COMPARE_GUILD = os.environ.get("RUNQ_S3_COMPARE_GUILD") == "1"
needs_aws = pytest.mark.skipif(
    not COMPARE_GUILD or shutil.which("aws") is None,
    reason="set RUNQ_S3_COMPARE_GUILD=1 (and have the aws CLI, which Guild's S3 remote runs)",
)


def guild(bucket, tmp_dir, *args):
    """guild 0.9.0 with a config of its own, so that its mirror is its own."""
    config = tmp_dir / "guild-config" / "config.yml"
    if not config.exists():
        config.parent.mkdir(parents=True)
        config.write_text(Path(bucket.env["GUILD_CONFIG"]).read_text())
        (tmp_dir / "guild-home").mkdir()
    env = {**os.environ, **bucket.env, "GUILD_CONFIG": str(config), "GUILD_HOME": str(tmp_dir / "guild-home")}
    done = subprocess.run([str(guild_script()), *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_aws
@pytest.mark.parametrize("args", [["-a"], ["-a", "--deleted", "-Fl", "bestmodel"]])
def test_listing_equals_guilds_own_s3_listing(shared, tmp_path, args):
    result = remote(shared, "list", *args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == guild(shared, tmp_path, "runs", "list", "-r", "store", *args)


@needs_aws
def test_delete_and_purge_leave_the_bucket_as_guilds_do(fresh, tmp_path):
    guilds = Bucket(fresh.home, fresh.name + "-guild", fresh.root, fresh.env, fresh.s3)
    s3server.upload_home(fresh.s3, guilds.name, guilds.root, fresh.home)
    guild_config = {**fresh.env, "GUILD_CONFIG": str(tmp_path / "guild-config.yml")}
    (tmp_path / "guild-config.yml").write_text(f"remotes:\n  store:\n    type: s3\n    bucket: {guilds.name}\n")
    guilds.env = guild_config
    for command in (["delete", "-Fm"], ["purge", "-Fo", "train"]):
        result = remote(fresh, *command, "-y")
        assert result.exit_code == 0, result.stderr
        assert "0 run(s)" not in result.stderr
        guild(guilds, tmp_path, "runs", *command, "-r", "store", "-y")
        assert [k for k in fresh.keys() if k != "meta-id"] == [k for k in guilds.keys() if k != "meta-id"]


def test_index_of_an_s3_remote_is_its_mirrors(shared):
    result = runq(None, "index", "-r", "store", "--rebuild", env=shared.env)
    assert result.exit_code == 0, result.stderr
    assert str(mirror_dir(shared)) in result.stdout
    assert "Runs:         20" in result.stdout
