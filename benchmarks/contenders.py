"""Stores compared on one SQLite file: save N short messages, read them back.

Each contender gets a fresh database file, creates its schema and its
thread outside the clock, then times one bulk write and one full read of
the thread. The peers are optional (``pip install -e '.[bench]'``); a
contender whose package is missing is reported as skipped.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from d1store import D1Store, Message, Thread

__all__ = ["CONTENDERS", "Contender", "ContenderSpec", "short_texts"]

THREAD = "bench-thread"
_T = TypeVar("_T")


def short_texts(count: int) -> list[str]:
    """Return ``count`` short chat lines (about 40 characters each)."""
    return [f"message {index}: a short line of chat text" for index in range(count)]


class Contender(Protocol):
    """One store under test, bound to its own fresh database file."""

    def write(self) -> None:
        """Save the prepared messages in one call."""

    def read(self) -> int:
        """Read the thread back and return how many messages came back."""

    def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class ContenderSpec:
    """A contender's name, what it does, and how to open it."""

    name: str
    description: str
    open: Callable[[Path, list[str]], Contender]
    #: Modules whose absence skips this contender.
    requires: tuple[str, ...] = ()


class Floor:
    """Raw ``sqlite3``: the floor every other figure is divided by."""

    def __init__(self, path: Path, texts: list[str]) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA synchronous = NORMAL")
        self.connection.execute(
            "CREATE TABLE messages (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, role TEXT NOT NULL, "
            "content TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        self.connection.execute("CREATE INDEX ix_messages_thread_created ON messages (thread_id, created_at)")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        self.rows = [
            (f"m{index}", THREAD, "user", text, (start + timedelta(microseconds=index)).isoformat())
            for index, text in enumerate(texts)
        ]

    def write(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", self.rows)
        self.connection.execute("COMMIT")

    def read(self) -> int:
        cursor = self.connection.execute(
            "SELECT id, thread_id, role, content, created_at FROM messages "
            "WHERE thread_id = ? ORDER BY created_at",
            (THREAD,),
        )
        return len(cursor.fetchall())

    def close(self) -> None:
        self.connection.close()


class D1StoreSQLite:
    """d1store on SQLite: ``messages.save([...])`` and ``messages.list(per_page=None)``."""

    def __init__(self, path: Path, texts: list[str]) -> None:
        self.store = D1Store(f"sqlite:///{path}")
        self.store.init()
        self.store.threads.save(Thread(id=THREAD, resource_id="bench-user"))
        self.messages = [
            Message(id=f"m{index}", thread_id=THREAD, role="user", content=text)
            for index, text in enumerate(texts)
        ]

    def write(self) -> None:
        self.store.messages.save(self.messages)

    def read(self) -> int:
        return len(self.store.messages.list(THREAD, per_page=None).items)

    def close(self) -> None:
        self.store.close()


class _AsyncContender:
    """Runs an async peer's calls on one event loop owned by the contender."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.close()


class OpenAISQLiteSession(_AsyncContender):
    """OpenAI Agents SDK ``SQLiteSession``: ``add_items`` and ``get_items``."""

    def __init__(self, path: Path, texts: list[str]) -> None:
        from agents import SQLiteSession

        super().__init__()
        self.session = SQLiteSession(THREAD, db_path=path)
        self.items: list[Any] = [{"role": "user", "content": text} for text in texts]
        self.run(self.session.get_items())

    def write(self) -> None:
        self.run(self.session.add_items(self.items))

    def read(self) -> int:
        return len(self.run(self.session.get_items()))

    def close(self) -> None:
        self.session.close()
        super().close()


class OpenAISQLAlchemySession(_AsyncContender):
    """OpenAI Agents SDK ``SQLAlchemySession`` on ``sqlite+aiosqlite``."""

    def __init__(self, path: Path, texts: list[str]) -> None:
        from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

        super().__init__()
        self.session = SQLAlchemySession.from_url(
            THREAD, url=f"sqlite+aiosqlite:///{path}", create_tables=True
        )
        self.items: list[Any] = [{"role": "user", "content": text} for text in texts]
        self.run(self.session.get_items())

    def write(self) -> None:
        self.run(self.session.add_items(self.items))

    def read(self) -> int:
        return len(self.run(self.session.get_items()))

    def close(self) -> None:
        self.run(self.session.engine.dispose())
        super().close()


class LangChainSQLHistory:
    """LangChain ``SQLChatMessageHistory``: ``add_messages`` and ``messages``."""

    def __init__(self, path: Path, texts: list[str]) -> None:
        with warnings.catch_warnings():
            # langchain-community warns on import that it is being sunset.
            warnings.simplefilter("ignore")
            from langchain_community.chat_message_histories import SQLChatMessageHistory
            from langchain_core.messages import HumanMessage

        self.history = SQLChatMessageHistory(THREAD, connection=f"sqlite:///{path}")
        self.messages = [HumanMessage(content=text) for text in texts]
        _ = self.history.messages

    def write(self) -> None:
        self.history.add_messages(self.messages)

    def read(self) -> int:
        return len(self.history.messages)

    def close(self) -> None:
        self.history.engine.dispose()


CONTENDERS: tuple[ContenderSpec, ...] = (
    ContenderSpec(
        "sqlite3 floor",
        "executemany of a plain INSERT in one BEGIN IMMEDIATE transaction into one table "
        "(id TEXT PRIMARY KEY, thread_id, role, content, created_at; index on thread_id, created_at); "
        "rows prepared outside the clock; read = SELECT ... ORDER BY created_at into tuples",
        Floor,
    ),
    ContenderSpec(
        "d1store",
        "messages.save(list of Message) validates, stamps created_at, JSON-encodes content, checks row "
        "sizes, upserts in 100-parameter multi-row statements with the thread existence check, metadata "
        "replacement and thread updated_at bumps, all in one transaction; read = messages.list("
        "per_page=None): the rows and their metadata (without paging the rows give the total, so no "
        "count), mapped to Message models",
        D1StoreSQLite,
    ),
    ContenderSpec(
        "OpenAI SQLiteSession",
        "add_items(list of dicts): json.dumps per item, executemany INSERT plus session upsert in a "
        "worker thread (asyncio.to_thread); read = get_items(): SELECT ordered by id, json.loads per row",
        OpenAISQLiteSession,
        requires=("agents",),
    ),
    ContenderSpec(
        "OpenAI SQLAlchemySession",
        "add_items(list of dicts) through SQLAlchemy's async ORM session on aiosqlite: one INSERT with "
        "a parameter list in one transaction; read = get_items(): SELECT ordered by created_at, id",
        OpenAISQLAlchemySession,
        requires=("agents", "aiosqlite", "greenlet"),
    ),
    ContenderSpec(
        "LangChain SQLChatMessageHistory",
        "add_messages(list of HumanMessage): one ORM object per message (message_to_dict + json.dumps), "
        "one commit; read = .messages: ORM query ordered by id, messages_from_dict per row",
        LangChainSQLHistory,
        requires=("langchain_community", "langchain_core"),
    ),
)
