"""Threads repository, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from d1store import D1Store, Message, NotFoundError, Thread, ValidationError


def make_thread(thread_id: str, resource_id: str = "user-1", **fields: object) -> Thread:
    return Thread(id=thread_id, resource_id=resource_id, **fields)  # type: ignore[arg-type]


def test_save_and_get_round_trip(store: D1Store) -> None:
    saved = store.threads.save(make_thread("t1", title="Trip plans", metadata={"lang": "en", "n": 1}))
    loaded = store.threads.get("t1")
    assert loaded == saved
    assert loaded is not None
    assert loaded.created_at.tzinfo is UTC


def test_get_unknown_returns_none(store: D1Store) -> None:
    assert store.threads.get("missing") is None


def test_get_with_other_resource_returns_none(store: D1Store) -> None:
    store.threads.save(make_thread("t1", resource_id="alice"))
    assert store.threads.get("t1", resource_id="bob") is None
    assert store.threads.get("t1", resource_id="alice") is not None


@pytest.mark.parametrize("title", ["[draft]", "{x}", '{"a": 1}', "null", "123", "  spaced  ", ""])
def test_title_that_looks_like_json_is_kept(store: D1Store, title: str) -> None:
    store.threads.save(make_thread("t1", title=title))
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.title == title


def test_save_replaces_whole_record(store: D1Store) -> None:
    store.threads.save(make_thread("t1", title="old", metadata={"a": 1, "b": 2}))
    store.threads.save(make_thread("t1", resource_id="user-2", title="new", metadata={"c": 3}))
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.title == "new"
    assert loaded.resource_id == "user-2"
    assert loaded.metadata == {"c": 3}
    assert store.threads.list(per_page=None).total == 1


def test_update_merges_metadata_and_bumps(store: D1Store) -> None:
    original = store.threads.save(make_thread("t1", title="a", metadata={"keep": 1, "drop": 2}))
    updated = store.threads.update("t1", metadata={"drop": None, "add": [1, 2]})
    assert updated is not None
    assert updated.title == "a"
    assert updated.metadata == {"keep": 1, "add": [1, 2]}
    assert updated.updated_at > original.updated_at
    assert updated.created_at == original.created_at
    assert store.threads.get("t1") == updated


def test_update_title_only_keeps_metadata(store: D1Store) -> None:
    store.threads.save(make_thread("t1", title="a", metadata={"keep": True}))
    updated = store.threads.update("t1", title="b")
    assert updated is not None
    assert updated.title == "b"
    assert updated.metadata == {"keep": True}


def test_update_unknown_raises_not_found(store: D1Store) -> None:
    with pytest.raises(NotFoundError, match="thread 'nope' not found") as caught:
        store.threads.update("nope", title="x")
    assert caught.value.entity_type == "thread"
    assert caught.value.entity_id == "nope"


def test_delete_removes_messages_and_metadata(store: D1Store) -> None:
    store.threads.save(make_thread("t1", metadata={"a": 1}))
    store.threads.save(make_thread("t2"))
    store.messages.save(
        [
            Message(id="m1", thread_id="t1", role="user", content="hi", metadata={"x": 1}),
            Message(id="m2", thread_id="t2", role="user", content="other"),
        ]
    )
    assert store.threads.delete("t1") is True
    assert store.threads.get("t1") is None
    assert store.messages.get("m1") is None
    assert store.metadata.get("message", "m1") == {}
    assert store.metadata.get("thread", "t1") == {}
    assert store.messages.get("m2") is not None


def test_delete_unknown_returns_false(store: D1Store) -> None:
    assert store.threads.delete("nope") is False


def test_list_filters_by_resource(store: D1Store) -> None:
    for index in range(3):
        store.threads.save(make_thread(f"a{index}", resource_id="alice"))
    store.threads.save(make_thread("b0", resource_id="bob"))
    page = store.threads.list(resource_id="alice")
    assert page.total == 3
    assert {thread.resource_id for thread in page.items} == {"alice"}


def test_list_metadata_filter_matches_json_type(store: D1Store) -> None:
    store.threads.save(make_thread("int", metadata={"v": 1, "tag": "x"}))
    store.threads.save(make_thread("str", metadata={"v": "1", "tag": "x"}))
    store.threads.save(make_thread("float", metadata={"v": 1.0, "tag": "x"}))
    assert [t.id for t in store.threads.list(metadata={"v": 1}).items] == ["int"]
    assert [t.id for t in store.threads.list(metadata={"v": "1"}).items] == ["str"]
    assert [t.id for t in store.threads.list(metadata={"v": 1.0}).items] == ["float"]
    assert store.threads.list(metadata={"tag": "x"}).total == 3


def test_list_metadata_filter_ands_keys(store: D1Store) -> None:
    store.threads.save(make_thread("both", metadata={"a": 1, "b": {"k": [1]}}))
    store.threads.save(make_thread("one", metadata={"a": 1, "b": {"k": [2]}}))
    page = store.threads.list(metadata={"a": 1, "b": {"k": [1]}})
    assert [thread.id for thread in page.items] == ["both"]
    assert page.total == 1


def test_list_orders_with_id_tie_breaker(store: D1Store) -> None:
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    for thread_id in ["b", "a", "c"]:
        store.threads.save(make_thread(thread_id, created_at=stamp, updated_at=stamp))
    assert [t.id for t in store.threads.list().items] == ["c", "b", "a"]
    assert [t.id for t in store.threads.list(descending=False).items] == ["a", "b", "c"]


def test_list_orders_by_updated_at(store: D1Store) -> None:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for offset, thread_id in enumerate(["x", "y", "z"]):
        stamp = base + timedelta(minutes=offset)
        store.threads.save(make_thread(thread_id, created_at=stamp, updated_at=stamp))
    store.threads.update("x", title="touched")
    assert [t.id for t in store.threads.list(order_by="updated_at").items] == ["x", "z", "y"]
    assert [t.id for t in store.threads.list(order_by="created_at").items] == ["z", "y", "x"]


def test_list_pages_with_total_and_has_more(store: D1Store) -> None:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for index in range(5):
        stamp = base + timedelta(seconds=index)
        store.threads.save(make_thread(f"t{index}", created_at=stamp, updated_at=stamp))
    first = store.threads.list(per_page=2, descending=False)
    last = store.threads.list(per_page=2, page=2, descending=False)
    everything = store.threads.list(per_page=None)
    empty = store.threads.list(per_page=0)
    assert [t.id for t in first.items] == ["t0", "t1"]
    assert first.total == 5
    assert first.has_more is True
    assert [t.id for t in last.items] == ["t4"]
    assert last.has_more is False
    assert len(everything.items) == 5
    assert everything.has_more is False
    assert empty.items == []
    assert empty.total == 5
    assert empty.has_more is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"page": -1}, "invalid page -1"),
        ({"per_page": -5}, "invalid per_page -5"),
        ({"order_by": "title"}, "invalid order_by 'title'"),
    ],
)
def test_list_rejects_bad_paging(store: D1Store, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        store.threads.list(**kwargs)  # type: ignore[arg-type]


def test_naive_datetime_taken_as_utc(store: D1Store) -> None:
    naive = datetime(2024, 5, 6, 7, 8, 9, 123456)
    store.threads.save(make_thread("t1", created_at=naive, updated_at=naive))
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.created_at == naive.replace(tzinfo=UTC)


def test_aware_datetime_converted_to_utc(store: D1Store) -> None:
    local = datetime(2024, 5, 6, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    store.threads.save(make_thread("t1", created_at=local, updated_at=local))
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.created_at == local
    assert loaded.created_at.utcoffset() == timedelta(0)
