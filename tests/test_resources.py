"""Resources repository (working memory), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from d1store import D1Store, Resource, Thread, ValidationError


def test_save_get_round_trip(store: D1Store) -> None:
    saved = store.resources.save(
        Resource(id="u1", working_memory="# Notes\n- likes tea", metadata={"tz": "UTC"})
    )
    assert store.resources.get("u1") == saved


def test_get_unknown_returns_none(store: D1Store) -> None:
    assert store.resources.get("nobody") is None


def test_update_creates_missing(store: D1Store) -> None:
    created = store.resources.update("u1", working_memory="fresh", metadata={"a": 1})
    assert created is not None
    assert created.working_memory == "fresh"
    assert created.metadata == {"a": 1}
    assert store.resources.get("u1") == created


def test_update_keeps_unpassed_working_memory(store: D1Store) -> None:
    stamp = datetime(2024, 1, 1, tzinfo=UTC)
    store.resources.save(
        Resource(
            id="u1", working_memory="keep me", metadata={"a": 1, "b": 2}, created_at=stamp, updated_at=stamp
        )
    )
    updated = store.resources.update("u1", metadata={"b": None, "c": 3})
    assert updated is not None
    assert updated.working_memory == "keep me"
    assert updated.metadata == {"a": 1, "c": 3}
    assert updated.created_at == stamp
    assert updated.updated_at > stamp


def test_update_can_clear_working_memory(store: D1Store) -> None:
    store.resources.save(Resource(id="u1", working_memory="old"))
    updated = store.resources.update("u1", working_memory=None)
    assert updated is not None
    assert updated.working_memory is None


def test_save_replaces_metadata(store: D1Store) -> None:
    store.resources.save(Resource(id="u1", metadata={"a": 1}))
    store.resources.save(Resource(id="u1", metadata={"b": 2}))
    loaded = store.resources.get("u1")
    assert loaded is not None
    assert loaded.metadata == {"b": 2}


def test_delete_keeps_threads(store: D1Store) -> None:
    store.resources.save(Resource(id="u1", metadata={"a": 1}))
    store.threads.save(Thread(id="t1", resource_id="u1"))
    assert store.resources.delete("u1") is True
    assert store.resources.delete("u1") is False
    assert store.metadata.get("resource", "u1") == {}
    assert store.threads.get("t1") is not None


def test_update_rejects_non_string_memory(store: D1Store) -> None:
    with pytest.raises(ValidationError, match="invalid working_memory 42"):
        store.resources.update("u1", working_memory=42)  # type: ignore[arg-type]
    assert store.resources.get("u1") is None
