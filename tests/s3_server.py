"""A real S3-compatible server for tests: moto's server mode on a free loopback port.

Registered as a pytest plugin by ``tests/conftest.py``. Use the ``s3_bucket`` fixture: it
starts the server once per session, points the AWS environment at it for the test (so s3fs,
boto3 and subprocesses started with ``os.environ`` all reach it) and yields the URL of a fresh,
empty bucket, e.g. ``"s3://test-3f2a9c1d"``::

    def test_something(s3_bucket: str, tmp_path: Path) -> None:
        runner = BatchRunner(f"sqlite:///{tmp_path}/b.db", artifacts=f"{s3_bucket}/prefix")
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL (``http://127.0.0.1:<port>``) of a moto S3 server for the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point the AWS environment at the test server (and nowhere else); returns the
    endpoint URL."""
    no_file = str(tmp_path / "no-aws-config")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", no_file)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", no_file)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """The URL (``s3://<name>``) of a new, empty bucket on the test server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_env,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    ).create_bucket(Bucket=name)
    return f"s3://{name}"
