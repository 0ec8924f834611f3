"""Stored values come back exactly as given, on every backend."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from d1store import D1Store, Message, Thread

ODD_STRINGS = [
    "plain",
    "Ünïcödé ünd ß",
    "日本語のテキスト",
    "العربية من اليمين إلى اليسار",
    "עברית",
    "emoji 👩🏽‍💻🚀 and flags 🇺🇳",
    "combining e\u0301 a\u030a",
    "quotes ' \" ` and backslashes \\ \\\\",
    "nul \x00 inside",
    "control \x01\x1f\x7f",
    "line\nbreaks\r\ttabs",
    'looks like json: {"a": 1}',
    "[draft]",
    "'; DROP TABLE threads; --",
    "",
]

JSON_VALUES: list[Any] = [
    1,
    1.0,
    -0.0,
    0.1,
    1e308,
    2**53 + 1,
    2**64,
    -(2**70),
    True,
    False,
    None,
    [],
    {},
    [1, "two", 3.0, None, True],
    {"z": 1, "a": {"nested": [{"deep": ["x"]}]}},
    {"ключ": "значение", "🔑": "🔒", "": "empty key"},
]


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"next": [value]}
    return value


@pytest.mark.parametrize("text", ODD_STRINGS)
def test_strings_round_trip(store: D1Store, text: str) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1", title=text, metadata={"k": text}))
    store.messages.save(
        [Message(id="m1", thread_id="t1", role="user", content=text, metadata={text or "k": text})]
    )
    thread = store.threads.get("t1")
    message = store.messages.get("m1")
    assert thread is not None and message is not None
    assert thread.title == text
    assert thread.metadata == {"k": text}
    assert message.content == text
    assert message.metadata == {text or "k": text}


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_json_values_keep_type(store: D1Store, value: Any) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1", metadata={"v": value}))
    store.messages.save([Message(id="m1", thread_id="t1", role="tool", content=[value])])
    thread = store.threads.get("t1")
    message = store.messages.get("m1")
    assert thread is not None and message is not None
    assert thread.metadata["v"] == value
    assert type(thread.metadata["v"]) is type(value)
    assert message.content == [value]
    assert type(message.content[0]) is type(value)
    if isinstance(value, float):
        assert str(message.content[0]) == str(value)


def test_deeply_nested_json(store: D1Store) -> None:
    value = deep(99)
    store.threads.save(Thread(id="t1", resource_id="r1"))
    store.messages.save([Message(id="m1", thread_id="t1", role="user", content=value)])
    message = store.messages.get("m1")
    assert message is not None
    assert message.content == value


def test_timestamps_fixed_width_text(tmp_path: Path) -> None:
    path = tmp_path / "ts.db"
    with D1Store(f"sqlite:///{path}") as store:
        store.init()
        stamp = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        store.threads.save(Thread(id="t1", resource_id="r1", created_at=stamp, updated_at=stamp))
    stored = sqlite3.connect(path).execute("SELECT created_at FROM threads").fetchone()[0]
    assert stored == "2025-01-02T03:04:05.000000Z"


def test_microseconds_preserved(store: D1Store) -> None:
    stamp = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    store.threads.save(Thread(id="t1", resource_id="r1", created_at=stamp, updated_at=stamp))
    thread = store.threads.get("t1")
    assert thread is not None
    assert thread.created_at == stamp


def test_too_deep_json_rejected() -> None:
    with pytest.raises(ValueError, match="nested more than 200 levels deep"):
        Message(id="m1", thread_id="t1", role="user", content=deep(101))


@pytest.mark.parametrize("bad", ["\ud800", "ok \udfff"])
def test_lone_surrogates_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        Thread(id="t1", resource_id="r1", title=bad)
    with pytest.raises(ValueError, match="lone surrogate"):
        Message(id="m1", thread_id="t1", role="user", content={"k": bad})
