"""Edge cases of input validation and configuration, on every backend."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from d1store import BackendError, D1Store, Message, Thread, ValidationError
from d1store.backends.base import Statement


def test_string_instead_of_id_list_rejected(store: D1Store) -> None:
    store.threads.save(Thread(id="t", resource_id="r"))
    store.messages.save(
        [Message(id=name, thread_id="t", role="user", content="x") for name in ("m1", "m", "1")]
    )
    with pytest.raises(ValidationError, match=r"pass a list of message ids, for example \['m1'\]"):
        store.messages.delete("m1")
    with pytest.raises(ValidationError, match="pass a list of message ids"):
        store.messages.get_many("m1")
    assert len(store.messages.get_many(["m1", "m", "1"])) == 3


def test_invalid_mapping_names_message(store: D1Store) -> None:
    store.threads.save(Thread(id="t", resource_id="r"))
    with pytest.raises(ValidationError, match="invalid message 'bad-7': role"):
        store.messages.save(
            [
                {"id": "good", "thread_id": "t", "role": "user", "content": "a"},
                {"id": "bad-7", "thread_id": "t", "role": "robot", "content": "a"},
            ]
        )
    assert store.messages.get("good") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"page": 10**15, "per_page": 100}, "page \\* per_page is over 2\\*\\*53"),
        ({"per_page": 2**60}, "invalid per_page"),
        ({"page": True}, "invalid page True"),
    ],
)
def test_huge_paging_rejected(store: D1Store, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        store.threads.list(**kwargs)  # type: ignore[arg-type]


def test_huge_last_count_rejected(store: D1Store) -> None:
    with pytest.raises(ValidationError, match="invalid n"):
        store.messages.last("t", 10**19)


def test_too_many_filter_keys_rejected(store: D1Store) -> None:
    store.threads.save(Thread(id="t", resource_id="r", metadata={f"k{index}": index for index in range(60)}))
    with pytest.raises(ValidationError, match="invalid metadata filter with 33 keys: at most 32"):
        store.threads.list(metadata={f"k{index}": index for index in range(33)})
    page = store.threads.list(resource_id="r", metadata={f"k{index}": index for index in range(32)})
    assert [thread.id for thread in page.items] == ["t"]


def test_untranslated_error_has_no_self_cause(store: D1Store) -> None:
    unit = store.threads._unit
    with pytest.raises(BackendError, match="syntax error") as caught:
        unit.read([Statement("SELEC 1")])
    assert caught.value.__cause__ is not caught.value


@pytest.mark.parametrize("prefix", ["sqlite_", "SQLITE_x", "_cf_", "_CF_data_"])
def test_reserved_prefixes_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="reserved by SQLite or D1"):
        D1Store("sqlite://", table_prefix=prefix)


def test_timestamp_out_of_range_rejected() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(ValueError, match="out of range in UTC"):
        Message(id="e", thread_id="t", role="user", content="e", created_at=early)


def test_memory_store_shared_across_threads() -> None:
    with D1Store("sqlite://") as store:
        store.init()
        store.threads.save(Thread(id="t", resource_id="r"))
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.append(store.threads.get("t")))
        worker.start()
        worker.join(10)
        assert len(seen) == 1
        assert isinstance(seen[0], Thread)


@pytest.mark.parametrize("url", ["http://127.0.0.1:notaport/x", "ftp://127.0.0.1/x"])
def test_bad_base_url_rejected(url: str) -> None:
    with pytest.raises(ValidationError, match="invalid D1 base URL"):
        D1Store(f"cloudflare_d1://acc:tok-SECRET@db?base_url={url}")


def test_token_in_wrong_url_slot_not_shown() -> None:
    with pytest.raises(ValidationError, match="token missing") as caught:
        D1Store("cloudflare_d1://SECRETtok123@db?base_url=http://127.0.0.1:9/x")
    assert "SECRETtok123" not in str(caught.value)


def test_invalid_mappings_raise_library_error(store: D1Store) -> None:
    with pytest.raises(ValidationError, match="invalid thread 't1': resource_id"):
        store.threads.save({"id": "t1", "resource_id": " "})
    with pytest.raises(ValidationError, match="invalid resource 'r1': metadata"):
        store.resources.save({"id": "r1", "metadata": {"k": float("nan")}})
    with pytest.raises(ValidationError, match="invalid include 'm1': previous"):
        store.messages.list("t1", include=[{"id": "m1", "previous": -1}])
    assert store.threads.get("t1") is None


def test_constructed_thread_is_checked_on_save(store: D1Store) -> None:
    unchecked = Thread.model_construct(id="", resource_id="r")
    with pytest.raises(ValidationError, match="invalid thread '': id"):
        store.threads.save(unchecked)
