"""Every statement the repositories send is served by an index.

SQLite's ``EXPLAIN QUERY PLAN`` is read for each distinct statement of a
workload that calls every repository method. A ``SCAN`` of a store table
without an index is a full table scan, and fails the test.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from d1store import D1Store, Include, Message, Resource, Thread
from d1store.backends.base import Result, Statement

FULL_SCAN = re.compile(r"\bSCAN (\w+)\b(?! USING)")
# A search of the metadata table by entity type alone reads every entry of
# that type: as slow as a full scan once a store is large.
TYPE_ONLY_SEARCH = re.compile(r"\bSEARCH (\w+) USING (?:COVERING )?INDEX \w+ \(entity_type=\?\)")


def workload(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1", metadata={"k": 1}))
    store.threads.save(Thread(id="t2", resource_id="r1"))
    store.threads.get("t1")
    store.threads.get("t1", resource_id="r1")
    for order_by in ("created_at", "updated_at"):
        for descending in (True, False):
            store.threads.list(resource_id="r1", order_by=order_by, descending=descending)  # type: ignore[arg-type]
            store.threads.list(order_by=order_by, descending=descending, per_page=10)  # type: ignore[arg-type]
    store.threads.list(resource_id="r1", metadata={"k": 1})
    store.threads.list(metadata={"k": 1}, per_page=None)
    store.threads.update("t1", title="x", metadata={"k": None, "j": 2})
    store.messages.save(
        [Message(id=f"m{i}", thread_id="t1", role="user", content="x", metadata={"a": i}) for i in range(5)]
    )
    store.messages.get("m1")
    store.messages.get_many(["m1", "m2"])
    stamp = datetime(2020, 1, 1, tzinfo=UTC)
    for descending in (True, False):
        store.messages.list("t1", descending=descending, include=[Include(id="m2", previous=1, next=1)])
        store.messages.list(
            ["t1", "t2"], resource_id="r1", start=stamp, end=datetime.now(UTC), descending=descending
        )
        store.messages.list(
            "t1", resource_id="r1", include=[Include(id="m3", previous=1, next=1)], per_page=None
        )
    store.messages.last("t1", 2)
    store.messages.last("t1", 2, resource_id="r1")
    store.messages.update("m1", content="y", thread_id="t2", metadata={"a": None})
    store.messages.delete(["m1", "m2"])
    store.metadata.get("thread", "t1")
    store.metadata.set("thread", "t1", "z", 1)
    store.metadata.merge("message", "m3", {"q": 1, "a": None})
    store.metadata.delete("thread", "t1", "z")
    store.metadata.delete("message", "m3")
    store.resources.save(Resource(id="r1", metadata={"a": 1}))
    store.resources.update("r1", working_memory="wm", metadata={"a": None})
    store.resources.get("r1")
    store.resources.delete("r1")
    store.threads.delete("t1")


def test_no_full_table_scans(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    seen: dict[str, tuple[object, ...]] = {}
    with D1Store(f"sqlite:///{path}", table_prefix="qp_") as store:
        store.init()
        original = store.backend.execute

        def recording(statements: Sequence[Statement], *, write: bool) -> list[Result]:
            for statement in statements:
                seen.setdefault(statement.sql, statement.params)
            return original(statements, write=write)

        store.backend.execute = recording  # type: ignore[method-assign]
        workload(store)

    connection = sqlite3.connect(path)
    scans = []
    for sql, params in seen.items():
        plan = "\n".join(row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        for table in FULL_SCAN.findall(plan) + TYPE_ONLY_SEARCH.findall(plan):
            if table.startswith("qp_"):
                scans.append(f"{table} in:\n{sql}\n{plan}")
    assert len(seen) > 30
    assert scans == []


def test_detector_sees_full_scan(tmp_path: Path) -> None:
    with D1Store(f"sqlite:///{tmp_path / 'scan.db'}", table_prefix="qp_") as store:
        store.init()
    connection = sqlite3.connect(tmp_path / "scan.db")
    plan = " ".join(
        row[3]
        for row in connection.execute("EXPLAIN QUERY PLAN SELECT * FROM qp_messages WHERE content = 'x'")
    )
    assert FULL_SCAN.findall(plan) == ["qp_messages"]
    assert TYPE_ONLY_SEARCH.findall("SEARCH qp_metadata USING COVERING INDEX ix (entity_type=?)") == [
        "qp_metadata"
    ]
