"""Messages repository, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from d1store import D1Store, Include, Message, NotFoundError, Thread, ValidationError

BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def thread_store(store: D1Store) -> D1Store:
    store.threads.save(Thread(id="t1", resource_id="alice"))
    store.threads.save(Thread(id="t2", resource_id="alice"))
    return store


def msg(message_id: str, thread_id: str = "t1", **fields: object) -> Message:
    fields.setdefault("role", "user")
    fields.setdefault("content", f"text of {message_id}")
    return Message(id=message_id, thread_id=thread_id, **fields)  # type: ignore[arg-type]


def timed(count: int, thread_id: str = "t1", prefix: str = "m") -> list[Message]:
    return [
        msg(f"{prefix}{index:03d}", thread_id, created_at=BASE + timedelta(seconds=index))
        for index in range(count)
    ]


def ids(messages: list[Message]) -> list[str]:
    return [message.id for message in messages]


def test_save_and_get_round_trip(thread_store: D1Store) -> None:
    saved = thread_store.messages.save(
        [
            msg(
                "m1",
                resource_id="alice",
                role="assistant",
                content=[{"type": "text", "text": "hi"}],
                metadata={"k": 1},
            )
        ]
    )
    assert thread_store.messages.get("m1") == saved[0]


def test_get_unknown_returns_none(thread_store: D1Store) -> None:
    assert thread_store.messages.get("missing") is None


def test_save_keeps_list_order_without_created_at(thread_store: D1Store) -> None:
    names = [f"z{index}" for index in range(50)][::-1]
    thread_store.messages.save([msg(name) for name in names])
    listed = thread_store.messages.list("t1", per_page=None).items
    assert ids(listed) == names


def test_save_unknown_thread_writes_nothing(thread_store: D1Store) -> None:
    with pytest.raises(NotFoundError, match="thread 'ghost' not found") as caught:
        thread_store.messages.save([msg("ok1"), msg("bad", thread_id="ghost"), msg("ok2")])
    assert caught.value.entity_id == "ghost"
    assert thread_store.messages.get_many(["ok1", "bad", "ok2"]) == []


def test_save_invalid_message_writes_nothing(thread_store: D1Store) -> None:
    with pytest.raises(ValueError, match="role"):
        thread_store.messages.save(
            [msg("ok1"), {"id": "bad", "thread_id": "t1", "role": "robot", "content": "x"}]
        )
    assert thread_store.messages.get("ok1") is None


def test_save_existing_id_updates_in_place(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("m1", content="first", metadata={"a": 1})])
    thread_store.messages.save([msg("m1", content="second")])
    page = thread_store.messages.list("t1")
    assert page.total == 1
    assert page.items[0].content == "second"
    assert page.items[0].metadata == {}


def test_save_moves_message_and_bumps_both(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("m1", "t1")])
    before = {thread.id: thread.updated_at for thread in thread_store.threads.list().items}
    thread_store.messages.save([msg("m1", "t2")])
    after = {thread.id: thread.updated_at for thread in thread_store.threads.list().items}
    assert thread_store.messages.list("t1").total == 0
    assert ids(thread_store.messages.list("t2").items) == ["m1"]
    assert after["t1"] > before["t1"]
    assert after["t2"] > before["t2"]


def test_save_bumps_thread_updated_at(thread_store: D1Store) -> None:
    before = thread_store.threads.get("t1")
    saved = thread_store.messages.save([msg("m1")])
    after = thread_store.threads.get("t1")
    assert before is not None and after is not None
    assert after.updated_at > before.updated_at
    assert after.updated_at >= saved[0].created_at


def test_update_changes_given_fields(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("m1", content="a", metadata={"x": 1, "y": 2})])
    updated = thread_store.messages.update("m1", content={"parts": [1]}, metadata={"y": None, "z": "new"})
    assert updated is not None
    assert updated.content == {"parts": [1]}
    assert updated.role == "user"
    assert updated.metadata == {"x": 1, "z": "new"}
    assert thread_store.messages.get("m1") == updated


def test_update_moves_thread_and_bumps_both(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("m1", "t1")])
    before = {thread.id: thread.updated_at for thread in thread_store.threads.list().items}
    moved = thread_store.messages.update("m1", thread_id="t2")
    after = {thread.id: thread.updated_at for thread in thread_store.threads.list().items}
    assert moved is not None
    assert moved.thread_id == "t2"
    assert after["t1"] > before["t1"]
    assert after["t2"] > before["t2"]


def test_update_unknown_message_raises(thread_store: D1Store) -> None:
    with pytest.raises(NotFoundError, match="message 'nope' not found"):
        thread_store.messages.update("nope", content="x")


def test_update_to_unknown_thread_raises(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("m1")])
    with pytest.raises(NotFoundError, match="thread 'ghost' not found"):
        thread_store.messages.update("m1", thread_id="ghost")
    message = thread_store.messages.get("m1")
    assert message is not None
    assert message.thread_id == "t1"


def test_update_rejects_bad_role(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("m1")])
    with pytest.raises(ValidationError, match="invalid role 'robot'"):
        thread_store.messages.update("m1", role="robot")


def test_list_orders_and_pages(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(7))
    first = thread_store.messages.list("t1", per_page=3)
    last = thread_store.messages.list("t1", per_page=3, page=2)
    newest = thread_store.messages.list("t1", per_page=3, descending=True)
    assert ids(first.items) == ["m000", "m001", "m002"]
    assert first.total == 7
    assert first.has_more is True
    assert ids(last.items) == ["m006"]
    assert last.has_more is False
    assert ids(newest.items) == ["m006", "m005", "m004"]


def test_list_equal_times_ordered_by_id(thread_store: D1Store) -> None:
    thread_store.messages.save([msg(name, created_at=BASE) for name in ["c", "a", "b"]])
    assert ids(thread_store.messages.list("t1").items) == ["a", "b", "c"]
    assert ids(thread_store.messages.list("t1", descending=True).items) == ["c", "b", "a"]


def test_list_per_page_none_and_zero(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(45))
    everything = thread_store.messages.list("t1", per_page=None)
    nothing = thread_store.messages.list("t1", per_page=0)
    assert len(everything.items) == 45
    assert everything.has_more is False
    assert nothing.items == []
    assert nothing.total == 45
    assert nothing.has_more is False


def test_list_start_end_inclusive(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(10))
    page = thread_store.messages.list(
        "t1", start=BASE + timedelta(seconds=2), end=BASE + timedelta(seconds=4)
    )
    assert ids(page.items) == ["m002", "m003", "m004"]
    assert page.total == 3


def test_list_several_threads(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(2, "t1", "a") + timed(2, "t2", "b"))
    page = thread_store.messages.list(["t1", "t2"], per_page=None)
    assert ids(page.items) == ["a000", "b000", "a001", "b001"]
    assert page.total == 4


def test_list_filters_by_message_resource(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("a", resource_id="alice"), msg("b", resource_id="bob"), msg("c")])
    page = thread_store.messages.list("t1", resource_id="alice")
    assert ids(page.items) == ["a"]
    assert page.total == 1


def test_include_adds_context_from_own_thread(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(10, "t1", "a") + timed(10, "t2", "b"))
    page = thread_store.messages.list("t1", per_page=2, include=[Include(id="b005", previous=2, next=1)])
    assert ids(page.items) == ["a000", "a001", "b003", "b004", "b005", "b006"]
    assert page.total == 10


def test_include_dedupes_and_orders_descending(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(10))
    page = thread_store.messages.list(
        "t1",
        per_page=3,
        descending=True,
        include=[{"id": "m005", "previous": 1, "next": 1}, Include(id="m006", previous=1), "m008"],
    )
    assert ids(page.items) == ["m009", "m008", "m007", "m006", "m005", "m004"]


def test_include_ignores_unknown_and_other_resources(thread_store: D1Store) -> None:
    messages = [
        msg(
            f"m{index}",
            resource_id="alice" if index % 2 else "bob",
            created_at=BASE + timedelta(seconds=index),
        )
        for index in range(6)
    ]
    thread_store.messages.save(messages)
    page = thread_store.messages.list(
        "t2",
        resource_id="alice",
        include=[Include(id="m3", previous=5, next=5), Include(id="ghost", previous=3)],
    )
    assert ids(page.items) == ["m1", "m3", "m5"]
    assert page.total == 0


def test_last_returns_newest_in_order(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(10))
    assert ids(thread_store.messages.last("t1", 3)) == ["m007", "m008", "m009"]
    assert thread_store.messages.last("t1", 0) == []
    assert ids(thread_store.messages.last("t1", 50)) == ids(timed(10))


def test_get_many_order_and_unknown(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(5))
    found = thread_store.messages.get_many(["m003", "ghost", "m001", "m003"])
    assert ids(found) == ["m003", "m001"]


def test_get_many_and_delete_thousands(thread_store: D1Store) -> None:
    thread_store.messages.save(timed(250))
    requested = [f"m{index:03d}" for index in range(250)] + [f"ghost{index}" for index in range(1000)]
    assert len(thread_store.messages.get_many(requested)) == 250
    assert thread_store.messages.delete(requested) == 250
    assert thread_store.messages.list("t1").total == 0


def test_delete_removes_metadata_and_bumps(thread_store: D1Store) -> None:
    thread_store.messages.save([msg("m1", metadata={"a": 1}), msg("m2")])
    before = thread_store.threads.get("t1")
    assert thread_store.messages.delete(["m1", "ghost"]) == 1
    after = thread_store.threads.get("t1")
    assert before is not None and after is not None
    assert after.updated_at > before.updated_at
    assert thread_store.metadata.get("message", "m1") == {}
    assert thread_store.messages.delete([]) == 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": ""}, "id must not be empty"),
        ({"id": "   "}, "id must not be empty"),
        ({"thread_id": "\t"}, "thread_id must not be empty"),
        ({"role": "robot"}, "role must be one of"),
        ({"content": None}, "content must not be null"),
        ({"content": 5}, "content must be a string, list or object"),
        ({"metadata": {"k": {1, 2}}}, "not JSON"),
        ({"metadata": {1: "x"}}, "non-string key 1"),
        ({"content": {"x": float("nan")}}, "JSON cannot represent"),
    ],
)
def test_bad_message_rejected_with_field(fields: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"id": "m1", "thread_id": "t1", "role": "user", "content": "x"}
    values.update(fields)
    with pytest.raises(ValueError, match=message):
        Message.model_validate(values)


def test_list_rejects_too_many_threads(thread_store: D1Store) -> None:
    with pytest.raises(ValidationError, match="invalid thread_id"):
        thread_store.messages.list([f"t{index}" for index in range(200)])


def test_save_repeated_id_last_wins(thread_store: D1Store) -> None:
    saved = thread_store.messages.save(
        [
            msg("a", content="first", metadata={"x": 1}),
            msg("b"),
            msg("a", content="second", metadata={"y": 2}),
        ]
    )
    assert ids(saved) == ["a", "b"]
    stored = thread_store.messages.get("a")
    assert stored is not None
    assert stored.content == "second"
    assert stored.metadata == {"y": 2}


def test_move_of_future_message_bumps_thread(thread_store: D1Store) -> None:
    future = datetime(2100, 1, 1, tzinfo=UTC)
    thread_store.messages.save([msg("later", "t1", created_at=future)])
    thread_store.messages.update("later", thread_id="t2")
    thread = thread_store.threads.get("t2")
    assert thread is not None
    assert thread.updated_at >= future
