"""The embedded S3 keeps its world across restarts, so ``make dev`` serves what ``make demo`` left: the gold sets,
the drops and the exports, with their original ``LastModified`` (the landing sensor compares arrival times)."""

from __future__ import annotations

from pathlib import Path

import boto3

from dagster_project.devservices.s3 import start_s3
from tests.conftest import free_port


def client(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="local",
                        aws_secret_access_key="local-secret")


def listing(s3, bucket: str) -> dict[str, tuple]:
    return {o["Key"]: (o["LastModified"], o["Size"], o["ETag"])
            for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_objects_and_their_times_survive_a_restart_and_deletes_stay_deleted(tmp_path: Path) -> None:
    state, port = tmp_path / "s3", free_port()
    with start_s3("127.0.0.1", port, state) as s3_server:
        s3 = client(s3_server.url)
        s3.create_bucket(Bucket="landing-test")
        s3.put_object(Bucket="landing-test", Key="northbank/gold/gold set.jsonl", Body=b'{"text": "x"}\n',
                      ContentType="application/x-ndjson", Metadata={"source": "demo"})
        s3.put_object(Bucket="landing-test", Key="northbank/incoming/d1/manifest.json", Body=b"{}")
        s3.put_object(Bucket="landing-test", Key="to-delete", Body=b"x")
        s3.delete_objects(Bucket="landing-test", Delete={"Objects": [{"Key": "to-delete"}]})
        s3.upload_fileobj(__import__("io").BytesIO(b"z" * (9 * 1024 * 1024)), "landing-test", "big/export.bin")
        before = listing(s3, "landing-test")
    assert "to-delete" not in before and len(before) == 3

    with start_s3("127.0.0.1", port, state) as s3_server:  # a new process: only the mirror remembers
        s3 = client(s3_server.url)
        assert listing(s3, "landing-test") == before
        gold = s3.get_object(Bucket="landing-test", Key="northbank/gold/gold set.jsonl")
        assert gold["Body"].read() == b'{"text": "x"}\n' and gold["Metadata"] == {"source": "demo"}
        assert gold["ContentType"] == "application/x-ndjson"
        s3.delete_object(Bucket="landing-test", Key="big/export.bin")

    with start_s3("127.0.0.1", port, state) as s3_server:
        assert "big/export.bin" not in listing(client(s3_server.url), "landing-test")

    with start_s3("127.0.0.1", port) as plain:  # without a state folder: moto as it is, empty
        assert client(plain.url).list_buckets()["Buckets"] == []
