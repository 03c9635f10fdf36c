"""S3 remotes as Guild 0.9.0 keeps them, through boto3.

A bucket holds runs under `ROOT/runs/<id>/` and deleted runs under
`ROOT/trash/runs/<id>/`. Guild selects on a local mirror of their metadata
(opref, attrs, LOCK files) in `<config dir>/remotes/NAME/meta/<md5 of the
S3 URI>`, a directory with a Guild home's layout; runq syncs the same mirror
with Guild's rule (those files only, vanished ones removed, skipped while
the bucket's `meta-id` matches the mirror's), selects on its index like any
home, then acts on the bucket: deleting objects in batched `DeleteObjects`
requests, moving a run between `runs/` and `trash/runs/` as a copy then a
delete. Credentials, region and endpoint come from boto3's usual chain
(`AWS_*` variables, profiles; `AWS_ENDPOINT_URL_S3` for another endpoint).
"""

import hashlib
import os
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timezone
from typing import Optional

from .remote import RemoteError

RUNS = "runs"
DELETED_RUNS = "trash/runs"
META_ID = "meta-id"
DELETE_BATCH = 1000  # keys per DeleteObjects request, S3's limit
COPY_LIMIT = 5 * 1024**3  # CopyObject's limit; larger objects are copied in parts
WORKERS = 8
# Guild's `aws s3 sync --include` patterns, held to a run's own .guild directory
MIRRORED = re.compile(r"(?:runs|trash/runs)/[^/]+/\.guild/(?:opref|attrs/[^/]+|LOCK[^/]*)$")


# Guild's `local-env` (variables for its aws commands) as boto3 session arguments
LOCAL_ENV_SETTINGS = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_PROFILE": "profile_name",
    "AWS_DEFAULT_REGION": "region_name",
}
LOCAL_ENV_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


@dataclass(frozen=True)
class S3Remote:
    name: str
    bucket: str
    root: str = "/"
    region: Optional[str] = None
    config_path: str = ""
    local_env: tuple = ()  # (name, value) pairs

    @property
    def uri(self):
        return f"s3://{self.bucket}/{join_key(self.root)}"

    def key(self, *parts):
        return join_key(self.root, *parts)

    @property
    def mirror_dir(self):
        """Guild's `meta_sync.local_meta_dir`: shared with Guild's own mirror."""
        safe_name = re.sub(r"\W+", "-", self.name).strip("-") or "-"
        remotes_dir = os.path.join(os.path.dirname(self.config_path), "remotes", safe_name)
        return os.path.join(remotes_dir, "meta", hashlib.md5(self.uri.encode()).hexdigest())


def join_key(root, *parts):
    """Guild's `_join_path`: the parts joined by `/`, leaving out `` and `/`.
    A root such as `/a/b` keeps its slash, so its keys start with one (as
    `aws s3` makes them from Guild's `s3://BUCKET//a/b/...` URIs)."""
    return "/".join(part for part in (root, *parts) if part not in ("/", ""))


def remote_from_config(name, item, path):
    if not item.get("bucket"):
        raise RemoteError(f"remote '{name}' in {path} is missing required config: bucket")
    return S3Remote(name, str(item["bucket"]), str(item.get("root") or "/"),
                    None if item.get("region") is None else str(item["region"]), path,
                    _local_env(name, item.get("local-env"), path))


def _local_env(name, value, path):
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise RemoteError(f"remote '{name}' in {path}: local-env must be a mapping of variables",
                          hint="runq does not read local-env from a file")
    return tuple((str(k), str(v)) for k, v in value.items())


def remote_from_spec(spec, path):
    """`s3:BUCKET[/ROOT]`, named as Guild names it."""
    bucket, _, root = spec.partition("/")
    if not bucket:
        raise RemoteError(f"invalid s3 spec '{spec}'", hint="expected format s3:BUCKET[/ROOT]")
    name = f"s3:{bucket}/{root}" if root else f"s3:{bucket}"
    return S3Remote(name, bucket, "/" + root, None, path)


# boto3, and what its failures mean


def s3_client(remote):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise RemoteError("S3 remotes need boto3", hint="install runq[s3]") from None
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    env = dict(remote.local_env)
    session = boto3.session.Session(**{arg: env[name] for name, arg in LOCAL_ENV_SETTINGS.items() if name in env})
    endpoint = next((env[name] for name in LOCAL_ENV_ENDPOINTS if name in env), None)
    return session.client("s3", region_name=remote.region, endpoint_url=endpoint, config=config)


def s3_error(remote, error):
    """A RemoteError saying in one line why a boto3 call failed."""
    from botocore import exceptions

    if isinstance(error, exceptions.NoCredentialsError):
        return RemoteError(f"no AWS credentials for remote '{remote.name}'",
                           hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    if isinstance(error, (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError)):
        return RemoteError(f"cannot reach S3 for remote '{remote.name}': {error}")
    if isinstance(error, exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code == "NoSuchBucket":
            return RemoteError(f"S3 bucket '{remote.bucket}' of remote '{remote.name}' does not exist")
        message = error.response.get("Error", {}).get("Message") or code
        return RemoteError(f"S3 refused a request for remote '{remote.name}': {code}: {message}")
    return RemoteError(f"S3 request for remote '{remote.name}' failed: {' '.join(str(error).split())}")


class S3Session:
    """A client for one remote; boto3's failures leave as RemoteErrors."""

    def __init__(self, remote):
        self.remote = remote
        self.client = s3_client(remote)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, _traceback):
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, (BotoCoreError, ClientError)):
            raise s3_error(self.remote, error) from None
        return False

    def objects(self, *parts):
        """{key: object summary} under the remote's `parts` prefix."""
        prefix = self.remote.key(*parts)
        prefix = prefix + "/" if prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.remote.bucket, Prefix=prefix)
        return {item["Key"]: item for page in pages for item in page.get("Contents", ())}

    def meta_id(self):
        try:
            body = self.client.get_object(Bucket=self.remote.bucket, Key=self.remote.key(META_ID))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        return body.read().decode(errors="replace").strip() or None

    def new_meta_id(self):
        """Tells Guild's mirrors (and runq's) that the runs changed."""
        meta_id = uuid.uuid4().hex
        self.client.put_object(Bucket=self.remote.bucket, Key=self.remote.key(META_ID), Body=meta_id.encode())
        return meta_id

    # The mirror

    def sync_mirror(self):
        """The mirror brought up to date; its path."""
        mirror = self.remote.mirror_dir
        remote_id = self.meta_id()
        if remote_id is not None and read_meta_id(mirror) == remote_id:
            return mirror
        write_meta_id(mirror, None)
        os.makedirs(os.path.join(mirror, RUNS), exist_ok=True)  # a home even while the bucket has no runs
        wanted = self._mirrored_objects()
        stale = [rel for rel, item in wanted.items() if not _current(os.path.join(mirror, rel), item)]
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda rel: self._download(wanted[rel], os.path.join(mirror, rel)), stale))
        remove_vanished(mirror, set(wanted))
        write_meta_id(mirror, remote_id)
        return mirror

    def _mirrored_objects(self):
        root = self.remote.key()
        start = len(root) + 1 if root else 0
        found = {}
        for key, item in self.objects().items():
            rel = key[start:]
            if MIRRORED.match(rel):
                found[rel] = item
        return found

    def _download(self, item, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.runq-part"
        body = self.client.get_object(Bucket=self.remote.bucket, Key=item["Key"])["Body"]
        with open(partial, "wb") as f:  # metadata files are small: one request each
            shutil.copyfileobj(body, f)
        modified = item["LastModified"].astimezone(timezone.utc).timestamp()
        os.utime(partial, (modified, modified))
        os.replace(partial, path)

    # Acting on runs

    def remove_runs(self, run_ids, deleted):
        """Deletes the runs' objects; (ids removed, {id: why} for failures)."""
        by_run = self._objects_by_run(DELETED_RUNS if deleted else RUNS, run_ids)
        failed = self.delete_keys([key for keys in by_run.values() for key in keys])
        return _outcome(run_ids, by_run, failed)

    def move_runs(self, run_ids, to_deleted):
        """Copies the runs' objects to the other root, then deletes the
        originals of the runs copied whole; (ids moved, {id: why})."""
        source, target = (RUNS, DELETED_RUNS) if to_deleted else (DELETED_RUNS, RUNS)
        by_run = self._objects_by_run(source, run_ids)
        source_prefix, target_prefix = self.remote.key(source) + "/", self.remote.key(target) + "/"
        copies = [(key, size, target_prefix + key[len(source_prefix):]) for keys in by_run.values() for key, size in keys.items()]
        with ThreadPoolExecutor(WORKERS) as pool:
            copy_failures = {key: why for key, why in pool.map(self._copy, copies) if why}
        copied = {run_id: keys for run_id, keys in by_run.items() if not copy_failures.keys() & keys.keys()}
        failed = self.delete_keys([key for keys in copied.values() for key in keys])
        failed.update(copy_failures)
        return _outcome(run_ids, by_run, failed)

    def _objects_by_run(self, root, run_ids):
        """{run id: {key: size}} of the runs' objects under `root`."""
        prefix = self.remote.key(root) + "/"
        wanted = set(run_ids)
        by_run = {}
        for key, item in self.objects(root).items():
            run_id = key[len(prefix):].split("/", 1)[0]
            if run_id in wanted:
                by_run.setdefault(run_id, {})[key] = item["Size"]
        return by_run

    def _copy(self, job):
        from botocore.exceptions import ClientError

        key, size, target = job
        source = {"Bucket": self.remote.bucket, "Key": key}
        try:
            if size > COPY_LIMIT:
                self.client.copy(source, self.remote.bucket, target)
            else:
                self.client.copy_object(CopySource=source, Bucket=self.remote.bucket, Key=target)
        except ClientError as e:
            return key, e.response.get("Error", {}).get("Code") or str(e)
        return key, None

    def delete_keys(self, keys):
        """{key: why} of the keys S3 did not delete."""
        failed = {}
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + DELETE_BATCH]]
            answer = self.client.delete_objects(Bucket=self.remote.bucket, Delete={"Objects": batch, "Quiet": True})
            failed.update({error["Key"]: error.get("Code", "failed") for error in answer.get("Errors", ())})
        return failed


def _outcome(run_ids, by_run, failed_keys):
    """(ids done, {id: why}): a run is done when none of its keys failed."""
    why = {}
    for run_id, keys in by_run.items():
        bad = [failed_keys[key] for key in keys if key in failed_keys]
        if bad:
            why[run_id] = f"{len(bad)} object(s) failed ({bad[0]})"
    for run_id in run_ids:
        if run_id not in by_run:
            why[run_id] = "no objects in the bucket"
    return [run_id for run_id in run_ids if run_id not in why], why


def _current(path, item):
    """As `aws s3 sync` judges it: same size, not older than the object."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return False
    return stat.st_size == item["Size"] and stat.st_mtime >= item["LastModified"].timestamp()


def remove_vanished(mirror, wanted):
    """Removes mirrored files whose objects are gone, and run directories left
    without any."""
    for root in (RUNS, DELETED_RUNS):
        root_dir = os.path.join(mirror, root)
        for run_id in os.listdir(root_dir) if os.path.isdir(root_dir) else ():
            run_dir = os.path.join(root_dir, run_id)
            kept = False
            for dirpath, _dirs, files in os.walk(run_dir):
                for name in files:
                    rel = os.path.relpath(os.path.join(dirpath, name), mirror).replace(os.sep, "/")
                    if rel in wanted:
                        kept = True
                    else:
                        os.remove(os.path.join(dirpath, name))
            if not kept:
                shutil.rmtree(run_dir, ignore_errors=True)


def read_meta_id(mirror):
    try:
        with open(os.path.join(mirror, META_ID)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def write_meta_id(mirror, meta_id):
    """Writes the mirror's meta-id, or removes it (None) while the mirror changes."""
    path = os.path.join(mirror, META_ID)
    if meta_id is None:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(mirror, exist_ok=True)
    with open(path, "w") as f:
        f.write(meta_id)
