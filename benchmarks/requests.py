"""Database requests per public call, and the cost of a bulk save against a trivial request.

On D1 every request is one HTTP round trip and counts against Cloudflare's
API rate limit (1,200 requests per 5 minutes per token), so each public call
should cost exactly one. ``store.request_count`` is read before and after
each call. Public methods without a recipe below are listed as unmeasured,
so that a new method shows up in the table instead of being missed.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable
from typing import Any

from d1store import D1Store, Include, Message, Resource, Thread
from d1store.backends.base import Statement

__all__ = ["bulk_save_against_trivial", "requests_per_method"]

Call = Callable[[D1Store], object]


def _session_commit(store: D1Store) -> None:
    with store.session() as session:
        session.threads.save(Thread(id="t-session", resource_id="r1"))
        session.messages.save([Message(id="m-session", thread_id="t-session", role="user", content="hi")])
        session.metadata.set("thread", "t-session", "k", 1)
        session.resources.update("r1", working_memory="notes")


# Run in this order: later calls use what earlier ones created.
RECIPES: dict[str, Call] = {
    "resources.save": lambda s: s.resources.save(Resource(id="r1", metadata={"plan": "pro"})),
    "resources.update": lambda s: s.resources.update("r1", working_memory="- likes trains"),
    "resources.get": lambda s: s.resources.get("r1"),
    "threads.save": lambda s: s.threads.save(Thread(id="t1", resource_id="r1", metadata={"k": 1})),
    "threads.get": lambda s: s.threads.get("t1"),
    "threads.list": lambda s: s.threads.list(resource_id="r1", metadata={"k": 1}),
    "threads.update": lambda s: s.threads.update("t1", title="renamed", metadata={"k": 2}),
    "messages.save (250)": lambda s: s.messages.save(
        [Message(id=f"m{i}", thread_id="t1", role="user", content=f"line {i}") for i in range(250)]
    ),
    "messages.get": lambda s: s.messages.get("m1"),
    "messages.get_many (250)": lambda s: s.messages.get_many([f"m{i}" for i in range(250)]),
    "messages.list": lambda s: s.messages.list("t1", include=[Include(id="m3", previous=1, next=1)]),
    "messages.last": lambda s: s.messages.last("t1", 10),
    "messages.update": lambda s: s.messages.update("m1", content="edited", metadata={"seen": True}),
    "metadata.set": lambda s: s.metadata.set("message", "m2", "score", 0.5),
    "metadata.merge": lambda s: s.metadata.merge("thread", "t1", {"k": None, "topic": "trip"}),
    "metadata.get": lambda s: s.metadata.get("thread", "t1"),
    "metadata.delete": lambda s: s.metadata.delete("message", "m2"),
    "messages.delete (250)": lambda s: s.messages.delete([f"m{i}" for i in range(250)]),
    "threads.delete": lambda s: s.threads.delete("t1"),
    "resources.delete": lambda s: s.resources.delete("r1"),
    "session commit (4 writes)": _session_commit,
}

_REPOSITORIES = ("threads", "messages", "metadata", "resources")


def _public_methods(store: D1Store) -> list[str]:
    names = []
    for repository in _REPOSITORIES:
        for name, _ in inspect.getmembers(type(getattr(store, repository)), inspect.isfunction):
            if not name.startswith("_"):
                names.append(f"{repository}.{name}")
    return names


def requests_per_method(store: D1Store) -> list[dict[str, Any]]:
    """Return one row per public call: the requests it sent (goal: 1)."""
    rows: list[dict[str, Any]] = []
    for name, call in RECIPES.items():
        before = store.request_count
        call(store)
        rows.append({"call": name, "requests": store.request_count - before})
    measured = {row["call"].split(" ")[0] for row in rows}
    for name in _public_methods(store):
        if name not in measured:
            rows.append({"call": name, "requests": None, "note": "no recipe in benchmarks/requests.py"})
    return rows


def bulk_save_against_trivial(store: D1Store, messages: int, runs: int) -> dict[str, Any]:
    """Time saving ``messages`` messages in one call against one ``SELECT 1`` on the same server."""
    store.threads.save(Thread(id="t-bulk", resource_id="r-bulk"))
    trivial, saves = [], []
    for run in range(runs):
        started = time.perf_counter()
        store.backend.execute([Statement("SELECT 1")], write=False)
        trivial.append(time.perf_counter() - started)

        batch = [
            Message(id=f"bulk-{run}-{index}", thread_id="t-bulk", role="user", content=f"line {index}")
            for index in range(messages)
        ]
        before = store.request_count
        started = time.perf_counter()
        store.messages.save(batch)
        saves.append(time.perf_counter() - started)
        if store.request_count - before != 1:
            raise RuntimeError(f"saving {messages} messages sent {store.request_count - before} requests")
    trivial_ms, save_ms = statistics.median(trivial) * 1000, statistics.median(saves) * 1000
    return {
        "messages": messages,
        "runs": runs,
        "trivial_request_ms": round(trivial_ms, 3),
        "bulk_save_ms": round(save_ms, 3),
        "ratio": round(save_ms / trivial_ms, 1),
    }
