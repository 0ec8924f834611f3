"""``d1store attachments gc`` on every backend."""

from __future__ import annotations

import base64
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from d1store import D1Store, Message, Thread
from d1store.attachments import DirectoryAttachmentStore
from d1store.attachments.cli import attachments


@pytest.fixture
def url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    if backend == "d1":
        server_url: str = request.getfixturevalue("d1store_local_d1").url
        return server_url
    pytest.skip("the command line test needs a URL it can build, not the live tier")


def content(seed: int) -> list[dict[str, Any]]:
    data = base64.b64encode(random.Random(seed).randbytes(70_000)).decode("ascii")
    return [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]


@pytest.fixture
def populated(url: str, tmp_path: Path) -> tuple[str, Path]:
    """Store two messages with one image each, then delete one; return the prefix and directory."""
    directory = tmp_path / "files"
    prefix = f"cli_{uuid.uuid4().hex[:8]}_"
    with D1Store(url, table_prefix=prefix, attachments=DirectoryAttachmentStore(directory)) as store:
        store.init()
        store.threads.save(Thread(id="t1", resource_id="alice"))
        store.messages.save(
            [Message(id=f"m{seed}", thread_id="t1", role="user", content=content(seed)) for seed in (1, 2)]
        )
        store.messages.delete(["m2"])
    return prefix, directory


def run(url: str, prefix: str, *arguments: str) -> Any:
    options = ["gc", "--url", url, "--table-prefix", prefix, *arguments]
    return CliRunner().invoke(attachments, options, catch_exceptions=False)


def test_cli_gc_dry_run(url: str, populated: tuple[str, Path]) -> None:
    prefix, directory = populated

    result = run(url, prefix, "--dir", str(directory), "--grace-minutes", "0", "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.output.count("would delete sha256/") == 1
    assert (
        "2 objects, 1 referenced, 0 unreferenced but recent, 1 would delete (70,000 bytes)" in result.output
    )
    assert len(list(DirectoryAttachmentStore(directory).iter_keys())) == 2


def test_cli_gc_deletes(url: str, populated: tuple[str, Path]) -> None:
    prefix, directory = populated

    result = run(url, prefix, "--dir", str(directory), "--grace-minutes", "0")

    assert result.exit_code == 0, result.output
    assert result.output.count("deleted sha256/") == 1
    assert len(list(DirectoryAttachmentStore(directory).iter_keys())) == 1


def test_cli_gc_default_grace(url: str, populated: tuple[str, Path]) -> None:
    prefix, directory = populated

    result = run(url, prefix, "--dir", str(directory))

    assert result.exit_code == 0, result.output
    assert "1 unreferenced but recent, 0 deleted" in result.output
    assert len(list(DirectoryAttachmentStore(directory).iter_keys())) == 2


def test_cli_gc_needs_one_store(url: str, populated: tuple[str, Path]) -> None:
    prefix, _ = populated

    runner = CliRunner(env={"D1STORE_ATTACHMENTS_DIR": None, "D1STORE_ATTACHMENTS_BUCKET": None})

    result = runner.invoke(attachments, ["gc", "--url", url, "--table-prefix", prefix])

    assert result.exit_code == 2
    assert "pass exactly one of --dir and --s3-bucket" in result.output
