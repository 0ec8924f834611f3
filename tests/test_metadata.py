"""Metadata repository, on every backend."""

from __future__ import annotations

import pytest

from d1store import D1Store, Message, NotFoundError, Resource, Thread, ValidationError


@pytest.fixture
def entities(store: D1Store) -> D1Store:
    store.threads.save(Thread(id="t1", resource_id="r1", metadata={"a": 1}))
    store.messages.save([Message(id="m1", thread_id="t1", role="user", content="hi")])
    store.resources.save(Resource(id="r1"))
    return store


@pytest.mark.parametrize(
    ("entity_type", "entity_id"), [("thread", "t1"), ("message", "m1"), ("resource", "r1")]
)
def test_set_get_merge_delete(entities: D1Store, entity_type: str, entity_id: str) -> None:
    entities.metadata.set(entity_type, entity_id, "k", {"nested": [1, 2.5]})
    entities.metadata.set(entity_type, entity_id, "empty", None)
    stored = entities.metadata.get(entity_type, entity_id)
    assert stored["k"] == {"nested": [1, 2.5]}
    assert "empty" in stored
    assert stored["empty"] is None
    merged = entities.metadata.merge(entity_type, entity_id, {"k": None, "new": "v"})
    assert merged is not None
    assert "k" not in merged
    assert merged["new"] == "v"
    assert entities.metadata.delete(entity_type, entity_id, "new") == 1
    assert entities.metadata.delete(entity_type, entity_id, "new") == 0
    assert entities.metadata.get(entity_type, entity_id) == {
        key: value for key, value in merged.items() if key != "new"
    }


def test_delete_all_keys(entities: D1Store) -> None:
    entities.metadata.merge("thread", "t1", {"b": 2, "c": 3})
    assert entities.metadata.delete("thread", "t1") == 3
    assert entities.metadata.get("thread", "t1") == {}


@pytest.mark.parametrize("entity_type", ["thread", "message", "resource"])
def test_set_on_missing_entity_raises(entities: D1Store, entity_type: str) -> None:
    with pytest.raises(NotFoundError, match=f"{entity_type} 'ghost' not found"):
        entities.metadata.set(entity_type, "ghost", "k", 1)
    with pytest.raises(NotFoundError):
        entities.metadata.merge(entity_type, "ghost", {"k": 1})
    assert entities.metadata.get(entity_type, "ghost") == {}


def test_set_bumps_thread_updated_at(entities: D1Store) -> None:
    before = entities.threads.get("t1")
    entities.metadata.set("thread", "t1", "k", 1)
    after = entities.threads.get("t1")
    assert before is not None and after is not None
    assert after.updated_at > before.updated_at
    assert after.metadata == {"a": 1, "k": 1}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.metadata.get("user", "x"), "invalid entity_type 'user'"),
        (lambda s: s.metadata.set("thread", "t1", "", 1), "invalid metadata key ''"),
        (lambda s: s.metadata.set("thread", "t1", 5, 1), "invalid metadata key 5"),
        (lambda s: s.metadata.set("thread", "t1", "k", b"bytes"), "not JSON"),
        (lambda s: s.metadata.set("thread", "t1", "k", float("inf")), "JSON cannot represent"),
        (lambda s: s.metadata.merge("thread", "t1", {("a",): 1}), "non-string key"),
        (lambda s: s.metadata.set("thread", " ", "k", 1), "entity_id must not be empty"),
    ],
)
def test_bad_input_rejected(entities: D1Store, call: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        call(entities)  # type: ignore[operator]
    assert entities.metadata.get("thread", "t1") == {"a": 1}


@pytest.mark.parametrize(
    "key",
    [
        "with space",
        "dot.ted",
        "$dollar",
        "quote'",
        'double"',
        "'; DROP TABLE threads; --",
        "ключ",
        "🔑",
        "a\\b",
    ],
)
def test_odd_keys_round_trip(entities: D1Store, key: str) -> None:
    entities.metadata.set("thread", "t1", key, key)
    assert entities.metadata.get("thread", "t1")[key] == key
    assert [t.id for t in entities.threads.list(metadata={key: key}).items] == ["t1"]
