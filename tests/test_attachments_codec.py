"""Reference format, payload detection and the directory store, without a database."""

from __future__ import annotations

import base64
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from d1store import Message, ValidationError
from d1store.attachments import (
    MARKER,
    AttachmentCodec,
    AttachmentNotFoundError,
    AttachmentRef,
    DirectoryAttachmentStore,
    parse_reference,
)

HEX = "ab" * 32


def encoded(size: int, seed: int = 1) -> str:
    return base64.b64encode(random.Random(seed).randbytes(size)).decode("ascii")


@pytest.fixture
def files(tmp_path: Path) -> DirectoryAttachmentStore:
    return DirectoryAttachmentStore(tmp_path / "files")


@pytest.fixture
def codec(files: DirectoryAttachmentStore) -> AttachmentCodec:
    return AttachmentCodec(files, threshold=1_000)


def round_trip(codec: AttachmentCodec, content: Any) -> tuple[Any, Any]:
    """Offload and upload ``content``; return the stored form and the restored form."""
    plan = codec.offload_messages([Message(id="m1", thread_id="t1", role="user", content=content)])
    plan.upload()
    stored = plan.stored[0].content
    restored = codec.restore(plan.stored)[0].content
    return stored, restored


def test_reference_text_round_trip() -> None:
    reference = AttachmentRef("data-url", "image/png;name=a b.png", 12, HEX)

    text = str(reference)

    assert text == f"{MARKER}data-url/image%2Fpng%3Bname%3Da%20b.png/12/sha256/{HEX}"
    assert parse_reference(text) == reference
    assert reference.media_type == "image/png"
    assert reference.key == f"sha256/{HEX}"


@pytest.mark.parametrize(
    "text",
    [
        f"{MARKER}data-url/image%2Fpng/12/sha256/{HEX[:-1]}",
        f"{MARKER}zip/image%2Fpng/12/sha256/{HEX}",
        f"{MARKER}base64/image/png/12/sha256/{HEX}",
        f"{MARKER}base64/x/012/sha256/{HEX}",
        f"{MARKER}base64/x/12/sha256/{HEX.upper()}",
        f" {MARKER}base64/x/12/sha256/{HEX}",
    ],
)
def test_parse_reference_rejects(text: str) -> None:
    with pytest.raises(ValidationError, match="invalid attachment reference"):
        parse_reference(text)


def test_media_type_defaults() -> None:
    assert AttachmentRef("data-url", "", 1, HEX).media_type == "text/plain"
    assert AttachmentRef("base64", "", 1, HEX).media_type == "application/octet-stream"


def test_data_url_in_text_round_trip(codec: AttachmentCodec) -> None:
    padded = encoded(2_999)
    # Hex digits follow the padding, and they must not become part of the reference.
    content = f"before ![a](data:image/png;base64,{encoded(3_000)}) and data:;base64,{padded}abc0 end"

    stored, restored = round_trip(codec, content)

    assert padded.endswith("=")
    assert stored.count(MARKER) == 2
    assert stored.endswith("abc0 end")
    assert restored == content


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image", "image": "PAYLOAD", "mimeType": "image/jpeg"},
        {"type": "file", "data": "PAYLOAD", "mediaType": "application/pdf"},
        {"inline_data": {"mime_type": "audio/wav", "data": "PAYLOAD"}},
        {"type": "input_audio", "input_audio": {"data": "PAYLOAD", "format": "wav"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,PAYLOAD"}},
        {"experimental_attachments": [{"url": "data:;base64,PAYLOAD", "name": "x"}]},
    ],
)
def test_message_formats_offloaded(codec: AttachmentCodec, part: dict[str, Any]) -> None:
    payload = encoded(2_000)
    content = [eval_payload(part, payload)]

    stored, restored = round_trip(codec, content)

    assert payload not in repr(stored)
    assert MARKER in repr(stored)
    assert restored == content


def eval_payload(value: Any, payload: str) -> Any:
    if isinstance(value, str):
        return value.replace("PAYLOAD", payload)
    if isinstance(value, list):
        return [eval_payload(item, payload) for item in value]
    return {key: eval_payload(item, payload) for key, item in value.items()}


def test_media_type_from_sibling(codec: AttachmentCodec) -> None:
    content = {"type": "file", "data": encoded(2_000), "mediaType": "application/pdf"}

    stored, _ = round_trip(codec, content)

    assert parse_reference(stored["data"]).media_type == "application/pdf"
    assert parse_reference(stored["data"]).size == 2_000


@pytest.mark.parametrize(
    "content",
    [
        # Line-wrapped base64 would not come back byte-exact from the decoded bytes.
        {"type": "file", "data": "\n".join([encoded(2_000)[i : i + 76] for i in range(0, 2_668, 76)])},
        # Not base64 at all.
        {"type": "text", "data": "x " * 2_000},
        # Non-zero padding bits: decodes, but encodes back differently.
        {"type": "file", "data": encoded(2_000)[:-2] + "B="},
        # Below the threshold.
        {"type": "file", "data": encoded(600)},
        "data:image/png;base64," + encoded(600),
    ],
)
def test_payload_stays_inline(codec: AttachmentCodec, content: Any) -> None:
    stored, restored = round_trip(codec, content)

    assert stored == content
    assert restored == content
    assert list(codec.store.iter_keys()) == []


def test_unchanged_content_not_copied(codec: AttachmentCodec) -> None:
    message = Message(id="m1", thread_id="t1", role="user", content=[{"type": "text", "text": "hi"}])

    plan = codec.offload_messages([message])

    assert plan.stored[0] is message


def test_restore_fetches_each_object_once(codec: AttachmentCodec, files: DirectoryAttachmentStore) -> None:
    fetched: list[str] = []
    original_get = files.get

    def counting_get(key: str) -> bytes:
        fetched.append(key)
        return original_get(key)

    files.get = counting_get  # type: ignore[method-assign]
    content = "data:image/png;base64," + encoded(2_000)
    messages = [Message(id=f"m{index}", thread_id="t1", role="user", content=content) for index in range(20)]
    plan = codec.offload_messages(messages)
    plan.upload()

    restored = codec.restore(plan.stored)

    assert len(fetched) == 1
    assert [message.content for message in restored] == [content] * 20


def test_read_missing_object(codec: AttachmentCodec) -> None:
    with pytest.raises(AttachmentNotFoundError, match="not in the attachment store") as caught:
        codec.read(f"{MARKER}base64//1/sha256/{HEX}")

    assert caught.value.message_id is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 0}, "invalid attachment_threshold 0"),
        ({"threshold": True}, "invalid attachment_threshold True"),
        ({"mode": "lazy"}, "invalid attachment_mode 'lazy'"),
    ],
)
def test_codec_rejects_options(
    files: DirectoryAttachmentStore, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        AttachmentCodec(files, **options)


def test_codec_rejects_store() -> None:
    with pytest.raises(ValidationError, match="pass an AttachmentStore"):
        AttachmentCodec(object())  # type: ignore[arg-type]


def test_directory_put_get_stat(files: DirectoryAttachmentStore) -> None:
    files.put(f"sha256/{HEX}", b"payload", "image/png")

    assert files.get(f"sha256/{HEX}") == b"payload"
    found = files.stat(f"sha256/{HEX}")
    assert found is not None
    assert found.size == 7
    assert (files.root / "sha256" / "ab" / HEX).read_bytes() == b"payload"
    assert [path.name for path in (files.root / "sha256" / "ab").iterdir()] == [HEX]


def test_directory_missing_object(files: DirectoryAttachmentStore) -> None:
    assert files.stat("sha256/none") is None
    assert not files.exists("sha256/none")
    assert not files.touch("sha256/none")
    files.delete("sha256/none")
    with pytest.raises(AttachmentNotFoundError):
        files.get("sha256/none")


def test_directory_touch_updates_mtime(files: DirectoryAttachmentStore) -> None:
    files.put("a/b", b"x", "text/plain")
    path = files.root / "a" / "b" / "b"
    os.utime(path, (1_000_000, 1_000_000))

    assert files.touch("a/b")

    assert path.stat().st_mtime > 1_000_000


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "a//b", ".hidden", "a/", "", "a b"])
def test_directory_rejects_key(files: DirectoryAttachmentStore, key: str) -> None:
    with pytest.raises(ValidationError, match="invalid attachment key"):
        files.put(key, b"x", "text/plain")


def test_directory_iter_skips_foreign(files: DirectoryAttachmentStore) -> None:
    files.put(f"sha256/{HEX}", b"x", "text/plain")
    (files.root / "README").write_text("not an object")
    (files.root / "sha256" / "ab" / ".tmp-123").write_bytes(b"partial")
    (files.root / "sha256" / "ab" / "cd-misplaced").write_bytes(b"x")

    assert list(files.iter_keys()) == [f"sha256/{HEX}"]


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", readme.split("## Attachments", 1)[1], re.S)
    assert block is not None, "README has no attachments example"
    script = tmp_path / "example.py"
    script.write_text(block.group(1), encoding="utf-8")

    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    assert len(list(DirectoryAttachmentStore(tmp_path / "attachments").iter_keys())) == 1
