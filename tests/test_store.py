"""Construction, configuration, schema bootstrapping and the public API."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine

import d1store
from d1store import D1Store, SchemaNotInitializedError, Thread, ValidationError
from d1store.store import url_from_env

DOCUMENTED = {
    "BackendError",
    "D1Store",
    "D1StoreError",
    "Include",
    "Message",
    "NotFoundError",
    "Page",
    "RequestTooLargeError",
    "Resource",
    "RowTooLargeError",
    "SchemaNotInitializedError",
    "Session",
    "Thread",
    "ValidationError",
}


def test_all_matches_documented_names() -> None:
    assert set(d1store.__all__) == DOCUMENTED
    for name in DOCUMENTED:
        assert hasattr(d1store, name)


@pytest.mark.parametrize("prefix", ["", "dev_", "_x", "A1_b2", "p" * 32])
def test_valid_prefixes(tmp_path: Path, prefix: str) -> None:
    with D1Store(f"sqlite:///{tmp_path / 'db.sqlite'}", table_prefix=prefix) as store:
        store.init()
        names = {
            row[0]
            for row in sqlite3.connect(tmp_path / "db.sqlite").execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            )
        }
        assert names
        assert all(name.startswith(prefix) for name in names)


@pytest.mark.parametrize("prefix", ["1abc", "dev-", "a b", "x;drop", "p" * 33, "é_", "dev.", 'q"'])
def test_invalid_prefix_rejected(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid table_prefix"):
        D1Store(f"sqlite:///{tmp_path / 'db.sqlite'}", table_prefix=prefix)


def test_prefixes_do_not_see_each_other(make_store: object) -> None:
    first = make_store()  # type: ignore[operator]
    second = make_store()  # type: ignore[operator]
    first.threads.save(Thread(id="t1", resource_id="r1"))
    assert second.threads.get("t1") is None
    assert second.threads.list().total == 0
    assert first.threads.list().total == 1


def test_missing_schema_raises_with_both_fixes(make_store: object) -> None:
    store = make_store(init=False)  # type: ignore[operator]
    with pytest.raises(
        SchemaNotInitializedError, match=r"threads.*store\.init\(\).*alembic upgrade head"
    ) as caught:
        store.threads.get("t1")
    assert caught.value.table == f"{store.table_prefix}threads"
    with pytest.raises(SchemaNotInitializedError):
        store.messages.save([{"id": "m", "thread_id": "t", "role": "user", "content": "x"}])
    with pytest.raises(SchemaNotInitializedError):
        store.resources.update("r1", working_memory="x")


def test_init_is_idempotent(store: D1Store) -> None:
    store.threads.save(Thread(id="t1", resource_id="r1"))
    store.init()
    store.init()
    assert store.threads.get("t1") is not None


def _init_in_process(path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        with D1Store(f"sqlite:///{path}", table_prefix="race_") as store:
            store.init()
        queue.put("ok")
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(repr(exc))


def test_init_from_four_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    path = str(tmp_path / "race.db")
    workers = [context.Process(target=_init_in_process, args=(path, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = [queue.get(timeout=5) for _ in workers]
    assert outcomes == ["ok"] * 4


def test_accepts_existing_engine(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'engine.db'}")
    with D1Store(engine, table_prefix="e_") as store:
        store.init()
        store.threads.save(Thread(id="t1", resource_id="r1"))
    with D1Store(f"sqlite:///{tmp_path / 'engine.db'}", table_prefix="e_") as again:
        assert again.threads.get("t1") is not None
    engine.dispose()


def test_env_order() -> None:
    assert url_from_env({"D1STORE_URL": "sqlite:///x.db", "CLOUDFLARE_ACCOUNT_ID": "a"}) == "sqlite:///x.db"
    assert url_from_env({}) == "sqlite:///d1store.db"
    url = url_from_env(
        {"CLOUDFLARE_ACCOUNT_ID": "acc", "CLOUDFLARE_D1_DATABASE_ID": "db", "CLOUDFLARE_API_TOKEN": "tok"}
    )
    assert str(url).startswith("cloudflare_d1://acc:")
    with pytest.raises(ValidationError, match="CLOUDFLARE_D1_DATABASE_ID, CLOUDFLARE_API_TOKEN not set"):
        url_from_env({"CLOUDFLARE_ACCOUNT_ID": "acc"})


def test_from_env_uses_prefix(tmp_path: Path) -> None:
    env = {"D1STORE_URL": f"sqlite:///{tmp_path / 'env.db'}", "D1STORE_TABLE_PREFIX": "envp_"}
    with D1Store.from_env(env) as store:
        assert store.table_prefix == "envp_"


def test_token_hidden_in_repr_and_errors() -> None:
    token = "tok-SECRET-4242"
    store = D1Store(f"cloudflare_d1://acc:{token}@db?base_url=http://127.0.0.1:9/x")
    try:
        assert token not in repr(store)
        assert token not in repr(store.backend)
        assert token not in store.backend.describe()
    finally:
        store.close()
    with pytest.raises(ValidationError) as caught:
        D1Store(f"postgresql://acc:{token}@db")
    assert token not in str(caught.value)


def test_unsupported_url_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unsupported database URL"):
        D1Store("mysql://localhost/db")


def test_from_cloudflare_reaches_server(d1store_local_d1: object) -> None:
    server = d1store_local_d1
    with D1Store.from_cloudflare(
        account_id=server.account_id,  # type: ignore[attr-defined]
        database_id=server.database_id,  # type: ignore[attr-defined]
        api_token="tok-SECRET-fc",
        base_url=server.base_url,  # type: ignore[attr-defined]
        table_prefix="fromcf_",
        timeout=10,
    ) as store:
        store.init()
        store.threads.save(Thread(id="t1", resource_id="r1"))
        assert store.threads.get("t1") is not None
        assert store.request_count == 3
        assert "tok-SECRET-fc" not in repr(store)


def test_from_cloudflare_rejects_missing_token() -> None:
    with pytest.raises(ValidationError, match="missing api_token"):
        D1Store.from_cloudflare(account_id="acc", database_id="db", api_token="")
