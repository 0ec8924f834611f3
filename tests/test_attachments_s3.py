"""The S3 attachment store against a real S3 API: moto's server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import itertools
import random
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from d1store import D1Store, Message, Thread
from d1store.attachments import (
    MARKER,
    AttachmentError,
    AttachmentNotFoundError,
    S3AttachmentStore,
    collect_garbage,
)
from d1store.backends.base import Statement

pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

StoreFactory = Any
CREDENTIALS = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret-value"}
_buckets = itertools.count()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """Start moto's S3-compatible server on a free loopback port."""
    with pytest.MonkeyPatch.context() as patch:
        # The tests always pass credentials and a region, so boto3 never asks
        # an instance metadata service. This variable rules it out as well.
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def s3_store(endpoint: str, bucket: str, *, prefix: str = "attachments/") -> S3AttachmentStore:
    """Return a store whose boto3 client the store creates itself from the endpoint and credentials."""
    return S3AttachmentStore(
        bucket, prefix=prefix, endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS
    )


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> Any:
    # Creating a boto3 client takes about half a second, so the tests share one.
    return s3_store(s3_endpoint, "unused").client


@pytest.fixture
def bucket(s3_client: Any) -> S3AttachmentStore:
    name = f"d1store-test-{next(_buckets)}"
    s3_client.create_bucket(Bucket=name)
    return S3AttachmentStore(name, client=s3_client)


def image(size: int, seed: int = 1) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + random.Random(seed).randbytes(size - 8)


def openai_content(data: bytes) -> list[dict[str, Any]]:
    url = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]


def stored_size(store: D1Store, message_id: str) -> int:
    table = store.tables.messages.name
    statement = Statement(f"SELECT length(CAST(content AS BLOB)) FROM {table} WHERE id = ?", (message_id,))
    size: int = store.backend.execute([statement], write=False)[0].rows[0][0]
    return size


def test_s3_put_get_stat(bucket: S3AttachmentStore) -> None:
    bucket.put("sha256/abc", b"payload", "image/png")

    assert bucket.get("sha256/abc") == b"payload"
    found = bucket.stat("sha256/abc")
    assert found is not None
    assert found.size == 7
    assert found.media_type == "image/png"
    assert list(bucket.iter_keys()) == ["sha256/abc"]
    names = [item["Key"] for item in bucket.client.list_objects_v2(Bucket=bucket.bucket)["Contents"]]
    assert names == ["attachments/sha256/abc"]


def test_s3_missing_object(bucket: S3AttachmentStore) -> None:
    assert bucket.stat("sha256/none") is None
    assert not bucket.touch("sha256/none")
    bucket.delete("sha256/none")
    with pytest.raises(AttachmentNotFoundError, match="sha256/none"):
        bucket.get("sha256/none")


def test_s3_touch_keeps_object(bucket: S3AttachmentStore) -> None:
    bucket.put("sha256/abc", b"payload", "image/png")

    assert bucket.touch("sha256/abc")

    assert bucket.get("sha256/abc") == b"payload"
    found = bucket.stat("sha256/abc")
    assert found is not None
    assert found.media_type == "image/png"


def test_s3_delete_and_prefix(bucket: S3AttachmentStore, s3_client: Any) -> None:
    other = S3AttachmentStore(bucket.bucket, prefix="other", client=s3_client)
    bucket.put("sha256/one", b"1", "text/plain")
    other.put("sha256/two", b"2", "text/plain")

    bucket.delete("sha256/one")

    assert list(bucket.iter_keys()) == []
    assert list(other.iter_keys()) == ["sha256/two"]


def test_s3_repr_hides_credentials(s3_endpoint: str) -> None:
    store = s3_store(s3_endpoint, "any-bucket")

    assert CREDENTIALS["aws_secret_access_key"] not in repr(store)
    assert CREDENTIALS["aws_access_key_id"] not in repr(store)


def test_s3_rejects_prefix(s3_endpoint: str) -> None:
    with pytest.raises(ValueError, match=re.escape("invalid prefix '../up'")):
        s3_store(s3_endpoint, "any-bucket", prefix="../up")


def test_s3_image_5mb_round_trip(make_store: StoreFactory, bucket: S3AttachmentStore) -> None:
    store = make_store(attachments=bucket)
    store.threads.save(Thread(id="t1", resource_id="alice"))
    picture = image(5 * 1024 * 1024)
    content = openai_content(picture)

    store.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])

    assert stored_size(store, "m1") < 400
    read = store.messages.get("m1")
    assert read is not None
    assert read.content == content
    key = f"sha256/{hashlib.sha256(picture).hexdigest()}"
    assert bucket.get(key) == picture
    found = bucket.stat(key)
    assert found is not None
    assert found.media_type == "image/png"


def test_s3_shared_image_stored_once(make_store: StoreFactory, bucket: S3AttachmentStore) -> None:
    store = make_store(attachments=bucket)
    store.threads.save(Thread(id="t1", resource_id="alice"))
    content = openai_content(image(100_000))

    store.messages.save(
        [Message(id=f"m{index:03d}", thread_id="t1", role="user", content=content) for index in range(100)]
    )

    assert len(list(bucket.iter_keys())) == 1
    listed = store.messages.list("t1", per_page=None).items
    assert [message.content for message in listed] == [content] * 100


def test_s3_upload_failure_writes_nothing(make_store: StoreFactory, s3_endpoint: str) -> None:
    missing = s3_store(s3_endpoint, "no-such-bucket")
    store = make_store(attachments=missing)
    store.threads.save(Thread(id="t1", resource_id="alice"))

    with pytest.raises(AttachmentError, match="s3://no-such-bucket/attachments/ failed"):
        store.messages.save(
            [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
        )

    assert store.messages.get("m1") is None


def test_s3_gc(make_store: StoreFactory, bucket: S3AttachmentStore) -> None:
    store = make_store(attachments=bucket)
    store.threads.save(Thread(id="t1", resource_id="alice"))
    kept_picture, dropped_picture = image(70_000, seed=1), image(70_000, seed=2)
    store.messages.save(
        [
            Message(id="m1", thread_id="t1", role="user", content=openai_content(kept_picture)),
            Message(id="m2", thread_id="t1", role="user", content=openai_content(dropped_picture)),
        ]
    )
    store.messages.delete(["m2"])
    dropped_key = f"sha256/{hashlib.sha256(dropped_picture).hexdigest()}"

    dry = collect_garbage(bucket, store, grace=timedelta(0), dry_run=True)
    assert dry.deleted == [dropped_key]
    assert len(list(bucket.iter_keys())) == 2

    report = collect_garbage(bucket, store, grace=timedelta(0))

    assert report.deleted == [dropped_key]
    assert report.referenced == 1
    assert list(bucket.iter_keys()) == [f"sha256/{hashlib.sha256(kept_picture).hexdigest()}"]
    read = store.messages.get("m1")
    assert read is not None
    assert MARKER not in repr(read.content)
