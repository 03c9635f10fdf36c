"""An S3 API on loopback (moto's server, in a thread of the test process)
and a bucket filled from a Guild home, for tests of S3 remotes."""

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@contextmanager
def s3_server():
    """The endpoint URL of a fresh S3 server on 127.0.0.1 (a free port)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_environ(endpoint, tmp_dir):
    """What boto3 needs to talk to `endpoint` only: test credentials, and no
    AWS config or credentials file of the user's."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_CONFIG_FILE": os.path.join(tmp_dir, "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(tmp_dir, "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def upload_home(s3, bucket, root, home):
    """Every file of the home's runs/ and trash/runs/ as objects under ROOT/."""
    s3.create_bucket(Bucket=bucket)
    prefix = "" if root in ("", "/") else root + "/"  # Guild's keys: `/a/b` keeps its slash
    paths = [
        os.path.join(dirpath, name)
        for sub in ("runs", os.path.join("trash", "runs"))
        for dirpath, _dirs, files in os.walk(os.path.join(home, sub))
        for name in files
    ]

    def put(path):
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=prefix + os.path.relpath(path, home).replace(os.sep, "/"), Body=f.read())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, paths))


def all_keys(s3, bucket):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))
