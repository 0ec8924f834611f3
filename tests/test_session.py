"""Sessions (units of work), on every backend."""

from __future__ import annotations

import pytest

from d1store import D1Store, D1StoreError, Message, NotFoundError, Resource, Thread


def test_commit_applies_all_writes(store: D1Store) -> None:
    with store.session() as session:
        saved = session.threads.save(Thread(id="t1", resource_id="r1"))
        stored = session.messages.save([Message(id="m1", thread_id="t1", role="user", content="hi")])
        assert session.pending > 0
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.created_at == saved.created_at
    # The message saved after the thread bumped its updated_at.
    assert loaded.updated_at >= stored[0].created_at
    assert store.messages.get("m1") == stored[0]


def test_exception_discards_everything(store: D1Store) -> None:
    with pytest.raises(RuntimeError, match="boom"), store.session() as session:
        session.threads.save(Thread(id="t1", resource_id="r1"))
        session.resources.save(Resource(id="r1"))
        raise RuntimeError("boom")
    assert store.threads.get("t1") is None
    assert store.resources.get("r1") is None


def test_reads_do_not_see_pending_writes(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1", title="before"))
    with store.session() as session:
        session.threads.save(Thread(id="t1", resource_id="r1", title="after"))
        session.threads.save(Thread(id="t2", resource_id="r1"))
        seen = session.threads.get("t1")
        assert seen is not None
        assert seen.title == "before"
        assert session.threads.get("t2") is None
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.title == "after"


def test_update_merge_delete_return_none(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1"))
    with store.session() as session:
        assert session.threads.update("t1", title="x") is None
        assert session.metadata.merge("thread", "t1", {"k": 1}) is None
        assert session.resources.update("r1", working_memory="wm") is None
        assert session.messages.delete(["nothing"]) is None
        assert session.threads.delete("other") is None
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.title == "x"
    assert loaded.metadata == {"k": 1}


def test_missing_target_fails_at_commit(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1", title="kept"))
    session = store.session()
    with pytest.raises(NotFoundError, match="thread 'ghost' not found"), session:
        session.threads.update("t1", title="changed")
        session.threads.save(Thread(id="t2", resource_id="r1"))
        session.threads.update("ghost", title="x")
    loaded = store.threads.get("t1")
    assert loaded is not None
    assert loaded.title == "kept"
    assert store.threads.get("t2") is None


def test_thread_saved_in_session_accepts_messages(store: D1Store) -> None:
    with store.session() as session:
        session.threads.save(Thread(id="t1", resource_id="r1"))
        session.messages.save([Message(id="m1", thread_id="t1", role="user", content="hi")])
        session.messages.update("m1", content="edited")
    message = store.messages.get("m1")
    assert message is not None
    assert message.content == "edited"


def test_failed_call_adds_nothing_to_session(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1"))
    with store.session() as session:
        session.threads.update("t1", title="ok")
        pending = session.pending
        with pytest.raises(ValueError, match="role"):
            session.messages.save(
                [
                    Message(id="m1", thread_id="t1", role="user", content="a"),
                    {"id": "m2", "thread_id": "t1", "role": "nobody", "content": "b"},
                ]
            )
        assert session.pending == pending
    assert store.messages.get("m1") is None


def test_closed_session_rejects_writes(store: D1Store) -> None:
    with store.session() as session:
        pass
    with pytest.raises(D1StoreError, match="already been committed"):
        session.threads.save(Thread(id="t1", resource_id="r1"))


def test_session_is_one_request(store: D1Store) -> None:
    before = store.request_count
    with store.session() as session:
        session.threads.save(Thread(id="t1", resource_id="r1"))
        session.messages.save(
            [Message(id=f"m{index}", thread_id="t1", role="user", content="x") for index in range(60)]
        )
        session.metadata.set("thread", "t1", "k", 1)
    assert store.request_count - before == 1
