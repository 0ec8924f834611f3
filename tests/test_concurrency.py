"""Concurrent writers on one database: nothing lost, duplicated or locked.

Workers are threads sharing one store, or processes with a store each. Each
saves, updates, moves and deletes its own messages in a shared thread and in
a thread of its own, and updates threads and metadata in sessions, for
``D1STORE_CONCURRENCY_SECONDS`` seconds (default 2). Each worker reports the
messages it left in the database. Afterwards the database must hold exactly
the union of those reports.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from d1store import D1Store, Message, Thread
from d1store.backends.sqlite import SQLiteBackend

StoreFactory = Callable[..., D1Store]

SECONDS = float(os.environ.get("D1STORE_CONCURRENCY_SECONDS", "2"))
SHARED = "shared"


def own_thread(worker: int) -> str:
    return f"own-{worker}"


@dataclass
class Report:
    """What one worker wrote, as it saw it."""

    worker: int
    #: Message id -> (thread id, content) of every message the worker left in place.
    live: dict[str, tuple[str, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    calls: int = 0
    errors: list[str] = field(default_factory=list)


class Worker:
    """Random writes by one worker, with a model of what they left behind."""

    def __init__(self, store: D1Store, worker: int, seed: int) -> None:
        self.store = store
        self.report = Report(worker)
        self.random = random.Random(seed)
        self.serial = 0

    def run(self, seconds: float) -> Report:
        deadline = time.monotonic() + seconds
        operations: list[Callable[[], None]] = [
            self.save,
            self.save,
            self.update,
            self.move,
            self.delete,
            self.session,
            self.touch_shared,
            self.read,
        ]
        while time.monotonic() < deadline:
            try:
                self.random.choice(operations)()
            except Exception as exc:  # reported to the test, which fails on any error
                self.report.errors.append(f"{type(exc).__name__}: {exc}")
                break
            self.report.calls += 1
        return self.report

    def _new_messages(self, count: int) -> list[Message]:
        thread_id = self.random.choice([SHARED, own_thread(self.report.worker)])
        messages = []
        for _ in range(count):
            self.serial += 1
            message_id = f"w{self.report.worker}-{self.serial}"
            messages.append(
                Message(id=message_id, thread_id=thread_id, role="user", content=f"v0 {message_id}")
            )
        return messages

    def _remember(self, messages: list[Message]) -> None:
        for message in messages:
            assert isinstance(message.content, str)
            self.report.live[message.id] = (message.thread_id, message.content)

    def _pick(self) -> str | None:
        if not self.report.live:
            return None
        return self.random.choice(sorted(self.report.live))

    def save(self) -> None:
        messages = self._new_messages(self.random.randint(1, 5))
        self.store.messages.save(messages)
        self._remember(messages)

    def update(self) -> None:
        message_id = self._pick()
        if message_id is None:
            return
        thread_id, content = self.report.live[message_id]
        version = int(content.split()[0][1:]) + 1
        new_content = f"v{version} {message_id}"
        self.store.messages.update(message_id, content=new_content)
        self.report.live[message_id] = (thread_id, new_content)

    def move(self) -> None:
        message_id = self._pick()
        if message_id is None:
            return
        thread_id, content = self.report.live[message_id]
        target = own_thread(self.report.worker) if thread_id == SHARED else SHARED
        self.store.messages.update(message_id, thread_id=target)
        self.report.live[message_id] = (target, content)

    def delete(self) -> None:
        chosen = {self._pick() for _ in range(self.random.randint(1, 3))} - {None}
        if not chosen:
            return
        removed = self.store.messages.delete(sorted(str(item) for item in chosen))
        assert removed == len(chosen), f"delete removed {removed} of {len(chosen)} messages"
        for message_id in chosen:
            assert message_id is not None
            del self.report.live[message_id]
            self.report.deleted.add(message_id)

    def session(self) -> None:
        messages = self._new_messages(self.random.randint(1, 3))
        worker = self.report.worker
        with self.store.session() as session:
            session.messages.save(messages)
            session.threads.update(own_thread(worker), title=f"worker {worker} call {self.report.calls}")
            session.metadata.set("thread", own_thread(worker), "calls", self.report.calls)
        self._remember(messages)

    def touch_shared(self) -> None:
        self.store.threads.update(SHARED, metadata={f"worker_{self.report.worker}": self.report.calls})

    def read(self) -> None:
        self.store.messages.last(SHARED, 5)
        self.store.threads.list(per_page=5)


def prepare(store: D1Store, workers: int) -> None:
    store.threads.save(Thread(id=SHARED, resource_id="r"))
    for worker in range(workers):
        store.threads.save(Thread(id=own_thread(worker), resource_id="r"))


def check_outcome(store: D1Store, reports: list[Report], workers: int) -> None:
    """Compare the database with the union of the workers' reports."""
    errors = [error for report in reports for error in report.errors]
    assert not [error for error in errors if "locked" in error], errors
    assert errors == []
    assert len(reports) == workers
    assert all(report.calls > 0 for report in reports)

    expected: dict[str, tuple[str, str]] = {}
    for report in reports:
        expected.update(report.live)
    thread_ids = [SHARED, *(own_thread(worker) for worker in range(workers))]
    page = store.messages.list(thread_ids, per_page=None)
    ids = [message.id for message in page.items]
    assert len(ids) == len(set(ids)), "a message was returned twice"
    assert page.total == len(expected)
    stored = {message.id: (message.thread_id, message.content) for message in page.items}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    assert missing == [], "messages lost"
    assert extra == [], "messages present that should not be (deleted or never reported)"
    changed = sorted(key for key in expected if stored[key] != expected[key])
    assert changed == [], "messages whose thread or content differs from the last write"

    for thread_id in thread_ids:
        thread = store.threads.get(thread_id)
        assert thread is not None
        newest = [message.created_at for message in page.items if message.thread_id == thread_id]
        if newest:
            assert thread.updated_at >= max(newest), (
                f"thread {thread_id} updated_at is before its newest message"
            )


def store_url(store: D1Store, request: pytest.FixtureRequest, backend: str) -> str | None:
    """Return the URL another process opens the same database with (``None``: from the environment)."""
    if isinstance(store.backend, SQLiteBackend):
        return store.backend.engine.url.render_as_string(hide_password=False)
    if backend == "d1":
        return str(request.getfixturevalue("d1store_local_d1").url)
    return None


def open_store(url: str | None, prefix: str) -> D1Store:
    return D1Store.from_env(table_prefix=prefix) if url is None else D1Store(url, table_prefix=prefix)


def test_threads_share_store(store: D1Store) -> None:
    workers = 8
    prepare(store, workers)
    start = threading.Barrier(workers)
    reports: list[Report] = []

    def work(worker: int) -> None:
        start.wait()
        reports.append(Worker(store, worker, seed=worker).run(SECONDS))

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 60)
    assert not any(thread.is_alive() for thread in threads)
    check_outcome(store, reports, workers)


def collect(results: Any, processes: list[Any], timeout: float) -> list[Any]:
    """Return one result per process, failing fast when a process died without one."""
    deadline = time.monotonic() + timeout
    collected: list[Any] = []
    while len(collected) < len(processes):
        try:
            collected.append(results.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        codes = [process.exitcode for process in processes]
        if all(code is not None for code in codes) and results.empty():
            pytest.fail(
                f"{len(processes) - len(collected)} processes exited without a result; exit codes {codes}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no result from {len(processes) - len(collected)} processes after {timeout:.0f} s")
    for process in processes:
        process.join(30)
    return collected


def process_context() -> Any:
    """Return a forkserver context that has d1store imported, so workers start fast.

    A plain fork is unsafe because the test process runs server reader threads.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["d1store", "sqlalchemy", "httpx"])
    return context


def _work_in_process(url: str | None, prefix: str, worker: int, start: Any, results: Any) -> None:
    try:
        with open_store(url, prefix) as store:
            start.wait()
            results.put(Worker(store, worker, seed=100 + worker).run(SECONDS))
    except Exception as exc:  # reported to the parent
        results.put(Report(worker, errors=[f"{type(exc).__name__}: {exc}"]))


def test_processes_share_database(
    make_store: StoreFactory, backend: str, request: pytest.FixtureRequest
) -> None:
    workers = 4
    store = make_store()
    prepare(store, workers)
    url = store_url(store, request, backend)
    context = process_context()
    start = context.Barrier(workers)
    results = context.Queue()
    processes = [
        context.Process(target=_work_in_process, args=(url, store.table_prefix, worker, start, results))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    reports = collect(results, processes, timeout=SECONDS + 90)
    assert [process.exitcode for process in processes] == [0] * workers
    check_outcome(store, reports, workers)


def _init_in_process(url: str | None, prefix: str, start: Any, results: Any) -> None:
    try:
        with open_store(url, prefix) as store:
            start.wait()
            store.init()
            store.threads.save(Thread(id=f"t{os.getpid()}", resource_id="r"))
        results.put("ok")
    except Exception as exc:  # reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_init_from_four_processes(
    make_store: StoreFactory, backend: str, request: pytest.FixtureRequest
) -> None:
    store = make_store(init=False)
    url = store_url(store, request, backend)
    context = process_context()
    start = context.Barrier(4)
    results = context.Queue()
    processes = [
        context.Process(target=_init_in_process, args=(url, store.table_prefix, start, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    outcomes = collect(results, processes, timeout=90)
    assert [process.exitcode for process in processes] == [0] * 4
    assert outcomes == ["ok"] * 4
    assert store.threads.list().total == 4


def test_thread_update_keeps_later_time(store: D1Store) -> None:
    # The single-call form of the race above: a message saved with a later
    # time than the one thread.update takes must not end up newer than its thread.
    store.threads.save(Thread(id="t", resource_id="r"))
    later = datetime.now(UTC) + timedelta(days=1)
    store.messages.save([Message(id="m", thread_id="t", role="user", content="x", created_at=later)])
    updated = store.threads.update("t", title="renamed", metadata={"k": 1})
    assert updated is not None
    assert updated.updated_at >= later
    with store.session() as session:
        session.threads.update("t", title="again")
    stored = store.threads.get("t")
    assert stored is not None
    assert stored.updated_at >= later
