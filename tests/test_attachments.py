"""Attachments offloaded to a directory store, on every database backend."""

from __future__ import annotations

import base64
import hashlib
import os
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from d1store import D1Store, Message, NotFoundError, RowTooLargeError, Thread
from d1store.attachments import (
    MARKER,
    AttachmentError,
    AttachmentNotFoundError,
    DirectoryAttachmentStore,
    collect_garbage,
    parse_reference,
)
from d1store.backends.base import Statement

StoreFactory = Any


def image(size: int, seed: int = 1) -> bytes:
    """Return ``size`` bytes that start like a PNG file and are random after that."""
    return b"\x89PNG\r\n\x1a\n" + random.Random(seed).randbytes(size - 8)


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def openai_content(data: bytes) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": data_url(data)}},
    ]


def stored_content(store: D1Store, message_id: str) -> str:
    """Return the content column exactly as the database stores it."""
    table = store.tables.messages.name
    statement = Statement(f"SELECT content FROM {table} WHERE id = ?", (message_id,))
    text: str = store.backend.execute([statement], write=False)[0].rows[0][0]
    return text


@pytest.fixture
def files(tmp_path: Path) -> DirectoryAttachmentStore:
    return DirectoryAttachmentStore(tmp_path / "attachments")


@pytest.fixture
def att_store(make_store: StoreFactory, files: DirectoryAttachmentStore) -> D1Store:
    store: D1Store = make_store(attachments=files)
    store.threads.save(Thread(id="t1", resource_id="alice"))
    return store


class FailingStore(DirectoryAttachmentStore):
    """A directory store whose uploads fail, as a full disk or an unreachable bucket would."""

    def put(self, key: str, data: bytes, media_type: str) -> None:
        raise AttachmentError(f"uploading attachment {key} failed: no space left on device")


def test_image_5mb_round_trip(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    picture = image(5 * 1024 * 1024)
    content = openai_content(picture)

    att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])

    row = stored_content(att_store, "m1")
    # The 7 MB of base64 text is replaced by a reference of about 120 bytes.
    assert len(row.encode()) < 400
    assert MARKER in row
    read = att_store.messages.get("m1")
    assert read is not None
    assert read.content == content
    url = read.content[1]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == picture
    assert list(files.iter_keys()) == [f"sha256/{hashlib.sha256(picture).hexdigest()}"]


def test_shared_image_stored_once(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    picture = image(100_000)
    messages = [
        Message(id=f"m{index:03d}", thread_id="t1", role="user", content=openai_content(picture))
        for index in range(100)
    ]

    att_store.messages.save(messages)

    assert len(list(files.iter_objects())) == 1
    listed = att_store.messages.list("t1", per_page=None).items
    assert len(listed) == 100
    assert all(message.content == openai_content(picture) for message in listed)


def test_reads_restore_every_path(att_store: D1Store) -> None:
    picture = image(80_000)
    content = openai_content(picture)
    att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])

    assert att_store.messages.get_many(["m1"])[0].content == content
    assert att_store.messages.last("t1", 1)[0].content == content
    assert att_store.messages.list("t1").items[0].content == content
    included = att_store.messages.list("t1", per_page=0, include=["m1"]).items
    assert included[0].content == content


def test_save_returns_inline_content(att_store: D1Store) -> None:
    content = openai_content(image(80_000))

    saved = att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])

    assert saved[0].content == content


def test_small_payload_stays_inline(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    content = openai_content(image(1_000))

    att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])

    assert MARKER not in stored_content(att_store, "m1")
    assert list(files.iter_keys()) == []


def test_threshold_option(make_store: StoreFactory, files: DirectoryAttachmentStore) -> None:
    store = make_store(attachments=files, attachment_threshold=100)
    store.threads.save(Thread(id="t1", resource_id="alice"))

    store.messages.save([Message(id="m1", thread_id="t1", role="user", content=openai_content(image(200)))])

    assert MARKER in stored_content(store, "m1")
    assert len(list(files.iter_keys())) == 1


def test_anthropic_and_file_parts(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    picture, document = image(90_000, seed=1), image(90_000, seed=2)
    encoded_picture = base64.b64encode(picture).decode()
    encoded_document = base64.b64encode(document).decode()
    content = {
        "format": 2,
        "parts": [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": encoded_picture},
            },
            {"type": "file", "data": encoded_document, "mimeType": "application/pdf"},
        ],
    }

    att_store.messages.save([Message(id="m1", thread_id="t1", role="assistant", content=content)])

    row = stored_content(att_store, "m1")
    assert encoded_picture not in row
    assert "d1store-attachment://base64/application%2Fpdf/90000/sha256/" in row
    assert len(list(files.iter_keys())) == 2
    read = att_store.messages.get("m1")
    assert read is not None
    assert read.content == content


def test_update_offloads_content(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content="draft")])
    content = openai_content(image(80_000))

    updated = att_store.messages.update("m1", content=content)

    assert updated is not None
    assert updated.content == content
    assert MARKER in stored_content(att_store, "m1")
    assert len(list(files.iter_keys())) == 1


def test_reference_mode_and_open(make_store: StoreFactory, files: DirectoryAttachmentStore) -> None:
    store = make_store(attachments=files, attachment_mode="reference")
    store.threads.save(Thread(id="t1", resource_id="alice"))
    picture = image(80_000)

    saved = store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=openai_content(picture))]
    )

    read = store.messages.get("m1")
    assert read is not None
    reference = read.content[1]["image_url"]["url"]
    assert saved[0].content == read.content
    assert parse_reference(reference).media_type == "image/png"
    assert parse_reference(reference).size == len(picture)
    with store.attachments.open(reference) as file:
        assert file.read() == picture


def test_reference_mode_resave_keeps_reference(
    make_store: StoreFactory, files: DirectoryAttachmentStore
) -> None:
    store = make_store(attachments=files, attachment_mode="reference")
    store.threads.save(Thread(id="t1", resource_id="alice"))
    store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
    )
    read = store.messages.get("m1")
    assert read is not None

    store.messages.save([read.model_copy(update={"id": "m2"})])

    assert stored_content(store, "m2") == stored_content(store, "m1")
    assert len(list(files.iter_keys())) == 1


def test_upload_failure_writes_nothing(make_store: StoreFactory, tmp_path: Path) -> None:
    failing = FailingStore(tmp_path / "failing")
    store = make_store(attachments=failing)
    store.threads.save(Thread(id="t1", resource_id="alice"))
    before = store.threads.get("t1")

    with pytest.raises(AttachmentError, match="no space left"):
        store.messages.save(
            [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
        )

    assert store.messages.get("m1") is None
    assert store.threads.get("t1") == before


def test_failed_write_leaves_collectable_orphan(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    message = Message(id="m1", thread_id="no-such-thread", role="user", content=openai_content(image(80_000)))

    with pytest.raises(NotFoundError):
        att_store.messages.save([message])

    assert len(list(files.iter_keys())) == 1
    report = collect_garbage(files, att_store, grace=timedelta(0))
    assert len(report.deleted) == 1
    assert list(files.iter_keys()) == []


def test_row_too_large_uploads_nothing(make_store: StoreFactory, files: DirectoryAttachmentStore) -> None:
    store = make_store(attachments=files, max_row_bytes=50_000)
    store.threads.save(Thread(id="t1", resource_id="alice"))
    content = [*openai_content(image(80_000)), {"type": "text", "text": "x" * 60_000}]

    with pytest.raises(RowTooLargeError):
        store.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])

    assert list(files.iter_keys()) == []
    assert store.messages.get("m1") is None


def test_missing_object_names_message(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    att_store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
    )
    (key,) = files.iter_keys()
    files.delete(key)

    with pytest.raises(AttachmentNotFoundError, match="message 'm1' references attachment") as caught:
        att_store.messages.get("m1")

    assert caught.value.message_id == "m1"
    assert parse_reference(caught.value.reference).key == key


def test_corrupt_object_detected(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    att_store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
    )
    (key,) = files.iter_keys()
    files.put(key, b"something else", "image/png")

    with pytest.raises(AttachmentError, match="is corrupt"):
        att_store.messages.get("m1")


def test_reference_to_missing_object_rejected(att_store: D1Store) -> None:
    forged = f"{MARKER}data-url/image%2Fpng/10/sha256/{'0' * 64}"

    with pytest.raises(AttachmentNotFoundError, match="message 'm1'"):
        att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content=forged)])

    assert att_store.messages.get("m1") is None


def test_marker_text_kept_verbatim(att_store: D1Store) -> None:
    text = f"the scheme is {MARKER}base64/x/1/sha256/short, and that is not a reference"

    att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content=text)])

    read = att_store.messages.get("m1")
    assert read is not None
    assert read.content == text


def test_session_uploads_before_commit(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    content = openai_content(image(80_000))

    with att_store.session() as session:
        session.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])
        assert len(list(files.iter_keys())) == 1
        assert att_store.messages.get("m1") is None

    read = att_store.messages.get("m1")
    assert read is not None
    assert read.content == content


def test_delete_keeps_shared_object(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    content = openai_content(image(80_000))
    att_store.messages.save(
        [Message(id=name, thread_id="t1", role="user", content=content) for name in ("m1", "m2")]
    )

    att_store.messages.delete(["m1"])
    report = collect_garbage(files, att_store, grace=timedelta(0))

    assert report.deleted == []
    assert report.referenced == 1
    remaining = att_store.messages.get("m2")
    assert remaining is not None
    assert remaining.content == content


def test_gc_after_thread_delete(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    att_store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
    )
    (key,) = files.iter_keys()

    att_store.threads.delete("t1")
    report = collect_garbage(files, att_store, grace=timedelta(0))

    assert report.deleted == [key]
    assert report.deleted_bytes == 80_000
    assert list(files.iter_keys()) == []


def test_gc_dry_run_deletes_nothing(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    att_store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
    )
    att_store.messages.delete(["m1"])
    (key,) = files.iter_keys()

    report = collect_garbage(files, att_store, grace=timedelta(0), dry_run=True)

    assert report.dry_run
    assert report.deleted == [key]
    assert list(files.iter_keys()) == [key]


def test_gc_grace_keeps_recent(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    att_store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=openai_content(image(80_000)))]
    )
    att_store.messages.delete(["m1"])

    report = collect_garbage(files, att_store)

    assert report.recent == 1
    assert report.deleted == []
    assert len(list(files.iter_keys())) == 1


def test_gc_pages_through_references(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    # More referencing messages than one gc page contains (50), each with its own image.
    pictures = [image(70_000, seed=index) for index in range(60)]
    att_store.messages.save(
        [
            Message(id=f"m{index:03d}", thread_id="t1", role="user", content=openai_content(picture))
            for index, picture in enumerate(pictures)
        ]
    )
    att_store.messages.delete(["m005"])

    report = collect_garbage(files, att_store, grace=timedelta(0))

    assert report.objects == 60
    assert report.referenced == 59
    assert report.deleted == [f"sha256/{hashlib.sha256(pictures[5]).hexdigest()}"]


def test_gc_counts_every_prefix(make_store: StoreFactory, files: DirectoryAttachmentStore) -> None:
    first, second = make_store(attachments=files), make_store(attachments=files)
    for store, name in ((first, "a"), (second, "b")):
        store.threads.save(Thread(id="t1", resource_id="alice"))
        picture = image(70_000, seed=ord(name))
        store.messages.save([Message(id="m1", thread_id="t1", role="user", content=openai_content(picture))])

    together = collect_garbage(files, [first, second], grace=timedelta(0), dry_run=True)
    alone = collect_garbage(files, first, grace=timedelta(0), dry_run=True)

    assert together.deleted == []
    assert len(alone.deleted) == 1


def test_resave_touches_reused_object(att_store: D1Store, files: DirectoryAttachmentStore) -> None:
    content = openai_content(image(80_000))
    att_store.messages.save([Message(id="m1", thread_id="t1", role="user", content=content)])
    (key,) = files.iter_keys()
    path = files.root / "sha256" / key[7:9] / key[7:]
    old = path.stat().st_mtime - 7200
    os.utime(path, (old, old))

    att_store.messages.save([Message(id="m2", thread_id="t1", role="user", content=content)])

    assert path.stat().st_mtime > old + 3600
