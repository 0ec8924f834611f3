"""Thread archiving (``archived_at``), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from d1store import D1Store, NotFoundError, Thread, ValidationError


def test_new_thread_is_active(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r"))
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.archived_at is None


def test_update_archive_sets_time(store: D1Store) -> None:
    saved = store.threads.save(Thread(id="t1", resource_id="r", title="keep"))
    archived = store.threads.update("t1", archived=True)
    assert archived is not None
    assert archived.archived_at is not None
    assert archived.archived_at.tzinfo is UTC
    assert archived.archived_at == archived.updated_at
    assert archived.updated_at > saved.updated_at
    assert archived.title == "keep"
    assert store.threads.get("t1") == archived


def test_archive_twice_keeps_first_time(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r"))
    first = store.threads.update("t1", archived=True)
    second = store.threads.update("t1", archived=True)
    assert first is not None
    assert second is not None
    assert second.archived_at == first.archived_at
    assert second.updated_at > first.updated_at


def test_unarchive_clears_time(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r"))
    archived = store.threads.update("t1", archived=True)
    restored = store.threads.update("t1", archived=False)
    assert archived is not None
    assert restored is not None
    assert restored.archived_at is None
    assert restored.updated_at > archived.updated_at


def test_update_without_archived_keeps_state(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r"))
    archived = store.threads.update("t1", archived=True)
    retitled = store.threads.update("t1", title="new")
    assert archived is not None
    assert retitled is not None
    assert retitled.archived_at == archived.archived_at


def test_save_round_trips_archived_at(store: D1Store) -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    store.threads.save(Thread(id="t1", resource_id="r", archived_at=moment))
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.archived_at == moment
    store.threads.save(Thread(id="t1", resource_id="r"))
    replaced = store.threads.get("t1")
    assert replaced is not None
    assert replaced.archived_at is None


def test_naive_archived_at_is_utc() -> None:
    thread = Thread(id="t1", resource_id="r", archived_at=datetime(2024, 1, 1, 12))
    assert thread.archived_at == datetime(2024, 1, 1, 12, tzinfo=UTC)


def test_list_filters_archived(store: D1Store) -> None:
    for index in range(5):
        store.threads.save(Thread(id=f"t{index}", resource_id="alice" if index < 4 else "bob"))
    store.threads.update("t1", archived=True)
    store.threads.update("t3", archived=True)
    store.threads.update("t4", archived=True)

    every = store.threads.list(per_page=None)
    archived = store.threads.list(archived=True, per_page=None)
    active = store.threads.list(archived=False, per_page=None)
    assert every.total == 5
    assert sorted(thread.id for thread in archived.items) == ["t1", "t3", "t4"]
    assert archived.total == 3
    assert sorted(thread.id for thread in active.items) == ["t0", "t2"]
    assert active.total == 2

    alice_archived = store.threads.list(resource_id="alice", archived=True, per_page=None)
    assert sorted(thread.id for thread in alice_archived.items) == ["t1", "t3"]
    assert alice_archived.total == 2


def test_list_archived_pages(store: D1Store) -> None:
    for index in range(5):
        store.threads.save(Thread(id=f"t{index}", resource_id="r"))
        store.threads.update(f"t{index}", archived=index % 2 == 0)
    page = store.threads.list(archived=True, per_page=2, order_by="created_at", descending=False)
    assert [thread.id for thread in page.items] == ["t0", "t2"]
    assert page.total == 3
    assert page.has_more
    last = store.threads.list(archived=True, page=1, per_page=2, order_by="created_at", descending=False)
    assert [thread.id for thread in last.items] == ["t4"]
    assert not last.has_more


def test_list_archived_with_metadata(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r", metadata={"k": 1}))
    store.threads.save(Thread(id="t2", resource_id="r", metadata={"k": 1}))
    store.threads.update("t2", archived=True)
    page = store.threads.list(metadata={"k": 1}, archived=False)
    assert [thread.id for thread in page.items] == ["t1"]
    assert page.total == 1


@pytest.mark.parametrize("value", ["yes", 1, 0])
def test_update_rejects_non_bool(store: D1Store, value: object) -> None:
    store.threads.save(Thread(id="t1", resource_id="r"))
    with pytest.raises(ValidationError, match="invalid archived"):
        store.threads.update("t1", archived=value)  # type: ignore[arg-type]
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.archived_at is None


def test_list_rejects_non_bool(store: D1Store) -> None:
    with pytest.raises(ValidationError, match="invalid archived 'no'"):
        store.threads.list(archived="no")  # type: ignore[arg-type]


def test_archive_unknown_thread(store: D1Store) -> None:
    with pytest.raises(NotFoundError, match="missing"):
        store.threads.update("missing", archived=True)


def test_archive_in_session(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r"))
    with store.session() as session:
        assert session.threads.update("t1", archived=True) is None
        inside = session.threads.get("t1")
        assert inside is not None
        assert inside.archived_at is None
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.archived_at is not None
