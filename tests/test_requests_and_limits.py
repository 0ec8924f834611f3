"""One request per call, D1's limits, and retries, on every backend.

On D1 ``request_count`` counts HTTP requests; on SQLite it counts
transactions. Both must be exactly one per repository call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from d1store import (
    BackendError,
    D1Store,
    Include,
    Message,
    RequestTooLargeError,
    Resource,
    RowTooLargeError,
    Thread,
)
from d1store.backends.base import Limits, Statement
from d1store.testing.fault_proxy import RESET_AFTER, FaultProxy, status


def seed(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1", metadata={"k": 1}))
    store.threads.save(Thread(id="t2", resource_id="r1"))
    store.resources.save(Resource(id="r1"))
    store.messages.save(
        [Message(id=f"m{index}", thread_id="t1", role="user", content="x") for index in range(5)]
    )


CALLS: dict[str, Callable[[D1Store], Any]] = {
    "threads.get": lambda s: s.threads.get("t1"),
    "threads.list": lambda s: s.threads.list(resource_id="r1", metadata={"k": 1}),
    "threads.save": lambda s: s.threads.save(Thread(id="t3", resource_id="r1", metadata={"a": 1})),
    "threads.update": lambda s: s.threads.update("t1", title="x", metadata={"k": None}),
    "threads.delete": lambda s: s.threads.delete("t2"),
    "messages.save": lambda s: s.messages.save([Message(id="n1", thread_id="t1", role="user", content="y")]),
    "messages.get": lambda s: s.messages.get("m1"),
    "messages.get_many": lambda s: s.messages.get_many([f"m{index}" for index in range(1000)]),
    "messages.list": lambda s: s.messages.list(["t1", "t2"], include=[Include(id="m2", previous=1, next=1)]),
    "messages.last": lambda s: s.messages.last("t1", 3),
    "messages.update": lambda s: s.messages.update("m1", content="z", thread_id="t2", metadata={"q": 1}),
    "messages.delete": lambda s: s.messages.delete([f"m{index}" for index in range(150)]),
    "metadata.get": lambda s: s.metadata.get("thread", "t1"),
    "metadata.set": lambda s: s.metadata.set("thread", "t1", "k", [1]),
    "metadata.merge": lambda s: s.metadata.merge("resource", "r1", {"a": 1, "b": None}),
    "metadata.delete": lambda s: s.metadata.delete("thread", "t1"),
    "resources.get": lambda s: s.resources.get("r1"),
    "resources.save": lambda s: s.resources.save(Resource(id="r2", metadata={"a": 1})),
    "resources.update": lambda s: s.resources.update("r1", working_memory="wm", metadata={"x": 1}),
    "resources.delete": lambda s: s.resources.delete("r1"),
    "init": lambda s: s.init(),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_one_request_per_call(store: D1Store, name: str) -> None:
    seed(store)
    before = store.request_count
    CALLS[name](store)
    assert store.request_count - before == 1


def test_session_commit_is_one_request(store: D1Store) -> None:
    seed(store)
    before = store.request_count
    with store.session() as session:
        session.threads.update("t1", title="a")
        session.messages.save(
            [Message(id=f"s{index}", thread_id="t1", role="user", content="x") for index in range(40)]
        )
        session.messages.delete(["m1"])
        session.resources.update("r1", working_memory="wm")
    assert store.request_count - before == 1


def test_forty_messages_one_call(store: D1Store) -> None:
    seed(store)
    batch = [
        Message(id=f"f{index}", thread_id="t2", role="assistant", content={"i": index}) for index in range(40)
    ]
    before = store.request_count
    store.messages.save(batch)
    assert store.request_count - before == 1
    assert [message.id for message in store.messages.list("t2", per_page=None).items] == [m.id for m in batch]


def test_thousand_ids_split_statements(store: D1Store) -> None:
    seed(store)
    store.messages.save(
        [Message(id=f"k{index}", thread_id="t2", role="user", content="x") for index in range(300)]
    )
    requested = [f"k{index}" for index in range(300)] + [f"none{index}" for index in range(700)]
    before = store.request_count
    assert len(store.messages.get_many(requested)) == 300
    assert store.messages.delete(requested[:150]) == 150
    assert store.request_count - before == 2
    assert store.messages.list("t2").total == 150


def test_cjk_message_of_120_kb(store: D1Store) -> None:
    seed(store)
    text = ("会話の記憶を保存します。" * 10_000)[:120_000]
    store.messages.save([Message(id="cjk", thread_id="t1", role="user", content=text)])
    message = store.messages.get("cjk")
    assert message is not None
    assert message.content == text
    assert len(text.encode()) > 300_000


def test_row_over_limit_sends_nothing(store: D1Store) -> None:
    seed(store)
    before = store.request_count
    big = "x" * 2_500_000
    with pytest.raises(RowTooLargeError, match=r"row 'big' is 2,500,\d{3} bytes .*'content'") as caught:
        store.messages.save(
            [
                Message(id="ok", thread_id="t1", role="user", content="fine"),
                Message(id="big", thread_id="t1", role="user", content=big),
            ]
        )
    assert caught.value.field == "content"
    assert caught.value.limit == 2_000_000
    assert store.request_count == before
    assert store.messages.get("ok") is None


def test_row_limit_counts_utf8_bytes(make_store: Callable[..., D1Store]) -> None:
    store = make_store(max_row_bytes=10_000)
    seed(store)
    with pytest.raises(RowTooLargeError):
        store.threads.save(Thread(id="t9", resource_id="r1", title="é" * 6_000))
    store.threads.save(Thread(id="t9", resource_id="r1", title="e" * 6_000))
    with pytest.raises(RowTooLargeError, match="metadata 'note'"):
        store.metadata.set("thread", "t9", "note", "ü" * 6_000)


def test_session_with_large_row_writes_nothing(store: D1Store) -> None:
    seed(store)
    with pytest.raises(RowTooLargeError), store.session() as session:
        session.threads.update("t1", title="changed")
        session.messages.save([Message(id="huge", thread_id="t1", role="user", content="y" * 2_100_000)])
    thread = store.threads.get("t1")
    assert thread is not None
    assert thread.title == ""


def test_statement_limits_enforced_everywhere(store: D1Store) -> None:
    seed(store)
    too_many = Statement("SELECT " + ", ".join("?" for _ in range(101)), tuple(range(101)))
    too_long = Statement("SELECT '" + "x" * 100_001 + "'")
    before = store.request_count
    with pytest.raises(BackendError, match="too many SQL variables"):
        store.backend.execute([too_many], write=False)
    with pytest.raises(BackendError, match="statement too long"):
        store.backend.execute([too_long], write=False)
    assert store.request_count == before
    assert Limits().max_params == 100


def test_lost_response_retry_keeps_one_copy(d1_store: D1Store, backend: str) -> None:
    if backend != "d1":
        pytest.skip("needs the local D1 server behind a proxy")
    server_url = d1_store.backend.base_url  # type: ignore[attr-defined]
    with FaultProxy(server_url) as proxy:
        store = D1Store(
            f"cloudflare_d1://local:tok@local?base_url={proxy.base_url}", table_prefix=d1_store.table_prefix
        )
        try:
            store.threads.save(Thread(id="t1", resource_id="r1"))
            proxy.enqueue(RESET_AFTER, status(503))
            store.messages.save(
                [Message(id=f"r{index}", thread_id="t1", role="user", content="x") for index in range(30)]
            )
            assert store.backend.attempt_count - store.request_count == 2  # type: ignore[attr-defined]
            page = store.messages.list("t1", per_page=None)
            assert page.total == 30
            assert [message.id for message in page.items] == [f"r{index}" for index in range(30)]
            assert proxy.forwarded_count >= 2
        finally:
            store.close()


def test_update_measures_whole_row(make_store: Callable[..., D1Store]) -> None:
    store = make_store(max_row_bytes=5_000)
    store.threads.save(Thread(id="t1", resource_id="r" * 500))
    store.messages.save([Message(id="m1", thread_id="t1", resource_id="u" * 500, role="user", content="a")])
    with pytest.raises(RowTooLargeError, match="row 'm1' is 5,0") as caught:
        store.messages.update("m1", content="x" * 4_470, metadata={"k": 1})
    assert caught.value.size > 5_000
    message = store.messages.get("m1")
    assert message is not None
    assert message.content == "a"
    assert message.metadata == {}
    with pytest.raises(RowTooLargeError, match="row 't1'"):
        store.threads.update("t1", title="y" * 4_480)
    with pytest.raises(RowTooLargeError, match=r"row 'w+' is 5,034 bytes"):
        store.resources.update("w" * 500, working_memory="z" * 4_480)
    assert store.resources.get("w" * 500) is None
    store.messages.update("m1", content="x" * 3_000)


def test_metadata_over_two_megabytes_reads_back(store: D1Store) -> None:
    metadata = {f"k{index}": "x" * 100_000 for index in range(30)}
    store.threads.save(Thread(id="big", resource_id="r1", metadata=metadata))
    store.threads.save(Thread(id="small", resource_id="r1"))
    store.messages.save(
        [Message(id="m1", thread_id="big", role="user", content="x", metadata={"q": '"' * 700_000})]
    )
    thread = store.threads.get("big")
    assert thread is not None
    assert thread.metadata == metadata
    assert store.threads.list(resource_id="r1").total == 2
    assert store.messages.list("big").items[0].metadata == {"q": '"' * 700_000}


def test_request_size_limit_on_every_backend(make_store: Callable[..., D1Store]) -> None:
    store = make_store()
    store.threads.save(Thread(id="t1", resource_id="r1"))
    before = store.request_count
    with pytest.raises(RequestTooLargeError, match="over the limit of 50,000,000"):
        store.messages.save(
            [
                Message(id=f"m{index}", thread_id="t1", role="user", content="x" * 1_900_000)
                for index in range(27)
            ]
        )
    assert store.request_count == before
    assert store.messages.list("t1").total == 0


def test_results_carry_column_names(store: D1Store) -> None:
    (result,) = store.backend.execute([Statement("SELECT 1 AS one, 'x' AS two")], write=False)
    assert result.columns == ["one", "two"]
    assert result.rows == [(1, "x")]
