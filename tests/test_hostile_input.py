"""Hostile and odd input: it round-trips exactly or is rejected before anything is sent.

Property-based with hypothesis on both backends. A rejection must be a
validation error (d1store's ``ValidationError`` or pydantic's, both
``ValueError``) raised before any request: ``store.request_count`` does not
move. ``D1STORE_HYPOTHESIS_EXAMPLES`` sets the examples per property
(default 100 on SQLite and 30 on D1).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d1store import D1Store, Message, Resource, RowTooLargeError, Thread, ValidationError
from d1store.encoding import MAX_ID_LENGTH, MAX_JSON_DEPTH, as_utc

_serial = itertools.count()

SQL_LOOKING = [
    "'; DROP TABLE threads; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM messages",
    "%",
    "_",
    "a%",
    "*",
    "\\",
    "NULL",
    "null",
    "?",
    ":id",
    "$1",
    "/* comment */",
    "d1store-guard:0",
]
ODD_KEYS = [
    "a.b",
    "$.a",
    "$",
    "a[0]",
    "'",
    '"',
    "`",
    "key with spaces",
    "a\x00b",
    "'; DROP TABLE metadata; --",
    "\u202eevil",
    "e\u0301",
    "🔑",
]

# Text that UTF-8 can encode: every code point except the surrogates.
TEXT = st.text(st.characters(codec="utf-8"), max_size=60)
# Right-to-left scripts, combining marks, NUL and other controls, emoji.
ODD_TEXT = st.lists(
    st.sampled_from(
        ["\u05d0", "\u0627", "\u202e", "\u200f", "\u0301", "\u0308", "\x00", "\x1b", "\r", "👩🏽‍💻", "a"]
    ),
    max_size=30,
).map("".join)
ANY_TEXT = TEXT | ODD_TEXT
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
BAD_TEXT = st.tuples(TEXT, SURROGATE, TEXT).map("".join)
IDS = (
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_ID_LENGTH).filter(str.strip)
    | st.sampled_from(SQL_LOOKING)
    | ODD_TEXT.filter(str.strip)
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.none() | st.booleans() | st.integers() | FLOATS | ANY_TEXT
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=25,
)
METADATA = st.dictionaries(ANY_TEXT.filter(bool) | st.sampled_from(ODD_KEYS), JSON, max_size=5)


def typed(value: Any) -> Any:
    """Return ``value`` with every scalar tagged by type, so 1, 1.0, True and -0.0 differ."""
    if isinstance(value, dict):
        return ("dict", sorted((key, typed(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("list", [typed(item) for item in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def examples(backend: str) -> int:
    configured = os.environ.get("D1STORE_HYPOTHESIS_EXAMPLES")
    if configured:
        return int(configured)
    return 100 if backend == "sqlite" else 30


def run(backend: str, test: Callable[..., None], **strategies: st.SearchStrategy[Any]) -> None:
    """Run ``test`` as a hypothesis property with the example budget of ``backend``."""
    prop = given(**strategies)(test)
    configured = settings(
        max_examples=examples(backend),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    configured(prop)()


def unique(name: str) -> str:
    return f"{name}-{next(_serial)}"


def rejected(store: D1Store, call: Callable[[], object], *fragments: str) -> str:
    """Assert that ``call`` raises a validation error naming ``fragments``, and sends nothing."""
    before = store.request_count
    with pytest.raises((ValidationError, pydantic.ValidationError)) as caught:
        call()
    assert store.request_count == before, "a request was sent for invalid input"
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message
    return message


# Round trips


def test_text_round_trips(store: D1Store, backend: str) -> None:
    def check(title: str, content: str, key: str, value: str, memory: str, kind: str) -> None:
        thread_id, message_id, resource_id = unique("t"), unique("m"), unique("r")
        store.threads.save(Thread(id=thread_id, resource_id=resource_id, title=title, metadata={key: value}))
        store.messages.save(
            [Message(id=message_id, thread_id=thread_id, role="tool", content=content, type=kind)]
        )
        store.resources.update(resource_id, working_memory=memory, metadata={key: value})

        thread = store.threads.get(thread_id)
        assert thread is not None
        assert thread.title == title
        assert thread.metadata == {key: value}
        message = store.messages.get(message_id)
        assert message is not None
        assert message.content == content
        assert message.type == kind
        resource = store.resources.get(resource_id)
        assert resource is not None
        assert resource.working_memory == memory
        assert resource.metadata == {key: value}

    run(
        backend,
        check,
        title=ANY_TEXT,
        content=ANY_TEXT,
        key=ANY_TEXT.filter(bool) | st.sampled_from(ODD_KEYS),
        value=ANY_TEXT,
        memory=ANY_TEXT,
        kind=ANY_TEXT,
    )


def test_ids_round_trip(store: D1Store, backend: str) -> None:
    neighbour = Thread(id="plain", resource_id="plain")
    store.threads.save(neighbour)

    def check(entity_id: str) -> None:
        if entity_id == "plain":
            return
        store.threads.save(Thread(id=entity_id, resource_id=entity_id))
        store.messages.save(
            [Message(id=entity_id, thread_id=entity_id, resource_id=entity_id, role="user", content="x")]
        )
        store.resources.save(Resource(id=entity_id))
        store.metadata.set("message", entity_id, entity_id, entity_id)

        thread = store.threads.get(entity_id, resource_id=entity_id)
        assert thread is not None
        assert thread.id == entity_id
        assert [item.id for item in store.threads.list(resource_id=entity_id).items] == [entity_id]
        page = store.messages.list(entity_id, resource_id=entity_id)
        assert [item.id for item in page.items] == [entity_id]
        assert store.metadata.get("message", entity_id) == {entity_id: entity_id}
        resource = store.resources.get(entity_id)
        assert resource is not None
        assert resource.id == entity_id
        # A pattern-looking id matches only itself.
        assert store.threads.get("plain", resource_id=entity_id) is None
        assert store.messages.delete([entity_id]) == 1
        assert store.threads.delete(entity_id) is True
        assert store.resources.delete(entity_id) is True
        assert store.threads.get(entity_id) is None

    run(backend, check, entity_id=IDS)
    assert store.threads.list().total == 1


def test_json_values_round_trip(store: D1Store, backend: str) -> None:
    thread_id = unique("t")
    store.threads.save(Thread(id=thread_id, resource_id="r"))

    def check(content: Any, metadata: dict[str, Any]) -> None:
        message_id = unique("m")
        store.messages.save(
            [Message(id=message_id, thread_id=thread_id, role="user", content=content, metadata=metadata)]
        )
        message = store.messages.get(message_id)
        assert message is not None
        assert typed(message.content) == typed(content)
        assert typed(message.metadata) == typed(metadata)

    run(
        backend,
        check,
        content=st.dictionaries(ANY_TEXT, JSON, max_size=4) | st.lists(JSON, max_size=4) | ANY_TEXT,
        metadata=METADATA,
    )


def test_metadata_filter_with_odd_keys(store: D1Store, backend: str) -> None:
    def check(key: str, value: Any) -> None:
        resource_id = unique("r")
        store.threads.save(Thread(id=unique("t"), resource_id=resource_id, metadata={key: value}))
        store.threads.save(Thread(id=unique("t"), resource_id=resource_id, metadata={key + "x": value}))
        found = store.threads.list(resource_id=resource_id, metadata={key: value}).items
        assert len(found) == 1
        assert typed(found[0].metadata) == typed({key: value})

    run(backend, check, key=st.sampled_from(ODD_KEYS) | ANY_TEXT.filter(bool), value=SCALARS)


@pytest.mark.parametrize(
    "value",
    [
        -0.0,
        0.0,
        5e-324,
        -5e-324,
        1.7976931348623157e308,
        0.1,
        1.0,
        1,
        2**53 + 1,
        2**63,
        -(2**63) - 1,
        10**4299,
    ],
)
def test_number_edges_round_trip(store: D1Store, value: Any) -> None:
    store.threads.save(Thread(id="t", resource_id="r", metadata={"n": value}))
    message = store.messages.save([Message(id="m", thread_id="t", role="user", content=[value])])[0]
    assert message.content == [value]
    stored = store.messages.get("m")
    thread = store.threads.get("t")
    assert stored is not None
    assert thread is not None
    assert typed(stored.content) == typed([value])
    assert typed(thread.metadata) == typed({"n": value})
    if isinstance(value, float):
        assert math.copysign(1.0, stored.content[0]) == math.copysign(1.0, value)


def test_nesting_limit_round_trips(store: D1Store) -> None:
    value: Any = "bottom"
    for _ in range(MAX_JSON_DEPTH):
        value = [value]
    store.threads.save(Thread(id="t", resource_id="r", metadata={"deep": value}))
    store.messages.save([Message(id="m", thread_id="t", role="user", content=value)])
    message = store.messages.get("m")
    thread = store.threads.get("t")
    assert message is not None
    assert thread is not None
    assert message.content == value
    assert thread.metadata == {"deep": value}


def test_id_length_limit_both_sides(store: D1Store) -> None:
    longest = "é" * MAX_ID_LENGTH
    store.threads.save(Thread(id=longest, resource_id=longest))
    store.messages.save(
        [Message(id=longest, thread_id=longest, resource_id=longest, role="user", content="x")]
    )
    store.resources.update(longest, working_memory="w")
    thread = store.threads.get(longest)
    assert thread is not None
    assert thread.id == longest
    message = store.messages.get(longest)
    assert message is not None
    assert message.id == longest


def test_row_limit_both_sides(store: D1Store) -> None:
    limit = store.backend.limits.max_row_bytes
    # created_at and updated_at are 27 bytes each; "é" is 2 bytes in UTF-8.
    fits = limit - len("t") - len("r") - 2 * 27
    store.threads.save(Thread(id="t", resource_id="r", title="é" * (fits // 2) + "a" * (fits % 2)))
    thread = store.threads.get("t")
    assert thread is not None
    assert len(thread.title.encode()) == fits
    over = "é" * (fits // 2 + 1)
    before = store.request_count
    with pytest.raises(RowTooLargeError, match=r"row 't' is .* bytes \(largest field: 'title'\)") as caught:
        store.threads.save(Thread(id="t", resource_id="r", title=over))
    assert caught.value.size == limit - fits + len(over.encode())
    assert caught.value.limit == limit
    assert store.request_count == before
    stored = store.threads.get("t")
    assert stored is not None
    assert stored.title == thread.title


# Rejections


def test_surrogates_rejected_everywhere(store: D1Store, backend: str) -> None:
    store.threads.save(Thread(id="t", resource_id="r"))
    store.messages.save([Message(id="m", thread_id="t", role="user", content="x")])

    def check(bad: str) -> None:
        rejected(
            store, lambda: store.threads.save({"id": "t", "resource_id": "r", "title": bad}), "surrogate"
        )
        rejected(store, lambda: store.threads.save({"id": bad, "resource_id": "r"}), "surrogate")
        rejected(store, lambda: store.threads.update("t", title=bad), "surrogate")
        rejected(store, lambda: store.threads.update("t", metadata={"k": [bad]}), "surrogate")
        rejected(store, lambda: store.threads.update(bad, title="x"), "surrogate")
        message = {"id": "m2", "thread_id": "t", "role": "user"}
        rejected(store, lambda: store.messages.save([{**message, "content": bad}]), "surrogate")
        rejected(store, lambda: store.messages.save([{**message, "content": {"k": bad}}]), "surrogate")
        rejected(
            store,
            lambda: store.messages.save([{**message, "content": "x", "metadata": {bad: 1}}]),
            "surrogate",
        )
        rejected(store, lambda: store.messages.update("m", content=[bad]), "surrogate")
        rejected(store, lambda: store.messages.get_many([bad]), "surrogate")
        rejected(store, lambda: store.metadata.set("thread", "t", bad, 1), "surrogate")
        rejected(store, lambda: store.metadata.set("thread", "t", "k", bad), "surrogate")
        rejected(store, lambda: store.resources.update("r", working_memory=bad), "surrogate")
        rejected(store, lambda: store.threads.list(metadata={bad: 1}), "surrogate")

    run(backend, check, bad=BAD_TEXT)
    thread = store.threads.get("t")
    message = store.messages.get("m")
    assert thread is not None
    assert thread.title == ""
    assert thread.metadata == {}
    assert message is not None
    assert message.content == "x"
    assert store.resources.get("r") is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_rejected(store: D1Store, bad: float) -> None:
    store.threads.save(Thread(id="t", resource_id="r"))
    text = repr(bad)
    rejected(
        store,
        lambda: store.messages.save([{"id": "m", "thread_id": "t", "role": "user", "content": [bad]}]),
        text,
        "finite",
    )
    rejected(store, lambda: store.threads.update("t", metadata={"x": {"y": bad}}), text, "finite")
    rejected(store, lambda: store.metadata.set("thread", "t", "k", bad), text, "finite")
    rejected(store, lambda: store.threads.list(metadata={"k": bad}), text, "finite")
    assert store.messages.get("m") is None
    thread = store.threads.get("t")
    assert thread is not None
    assert thread.metadata == {}


def test_over_long_ids_rejected(store: D1Store) -> None:
    store.threads.save(Thread(id="t", resource_id="r"))
    too_long = "x" * (MAX_ID_LENGTH + 1)
    limit = str(MAX_ID_LENGTH)
    rejected(store, lambda: store.threads.save({"id": too_long, "resource_id": "r"}), "id", limit)
    rejected(store, lambda: store.threads.save({"id": "t2", "resource_id": too_long}), "resource_id", limit)
    message = {"role": "user", "content": "x"}
    rejected(store, lambda: store.messages.save([{**message, "id": too_long, "thread_id": "t"}]), "id", limit)
    rejected(
        store,
        lambda: store.messages.save([{**message, "id": "m", "thread_id": too_long}]),
        "thread_id",
        limit,
    )
    rejected(store, lambda: store.threads.get(too_long), "thread_id", limit)
    rejected(store, lambda: store.messages.delete([too_long]), limit)
    rejected(store, lambda: store.resources.update(too_long, working_memory="x"), limit)
    rejected(store, lambda: store.metadata.set("thread", too_long, "k", 1), limit)
    assert store.threads.list().total == 1
    assert store.messages.list("t").total == 0


@pytest.mark.parametrize("bad", ["", " ", "\t\n", "\u3000"])
def test_blank_ids_rejected(store: D1Store, bad: str) -> None:
    rejected(store, lambda: store.threads.save({"id": bad, "resource_id": "r"}), "id")
    rejected(store, lambda: store.threads.get(bad), "thread_id")
    assert store.threads.list().total == 0


def test_too_deep_json_rejected(store: D1Store) -> None:
    store.threads.save(Thread(id="t", resource_id="r"))
    value: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        value = {"k": value}
    depth = str(MAX_JSON_DEPTH)
    rejected(
        store,
        lambda: store.messages.save([{"id": "m", "thread_id": "t", "role": "user", "content": value}]),
        depth,
    )
    rejected(store, lambda: store.threads.update("t", metadata={"deep": value}), depth)
    rejected(store, lambda: store.metadata.set("message", "m", "deep", value), depth)
    assert store.messages.get("m") is None


def test_integer_over_digit_limit_rejected(store: D1Store) -> None:
    # Python refuses to print ints of more than this many digits, so
    # json.dumps() could not encode them.
    huge = 10 ** sys.get_int_max_str_digits()
    store.threads.save(Thread(id="t", resource_id="r"))
    rejected(
        store,
        lambda: store.messages.save([{"id": "m", "thread_id": "t", "role": "user", "content": [huge]}]),
        "digits",
    )
    rejected(store, lambda: store.messages.update("m", content={"n": huge}), "digits")
    rejected(store, lambda: store.threads.update("t", metadata={"n": huge}), "digits")
    rejected(store, lambda: store.metadata.set("thread", "t", "n", huge), "digits")
    rejected(store, lambda: store.threads.list(metadata={"n": huge}), "digits")
    assert store.messages.get("m") is None


@pytest.mark.parametrize(
    "value",
    [b"bytes", (1, 2), {1, 2}, {1: "int key"}, object()],
    ids=["bytes", "tuple", "set", "int-key", "object"],
)
def test_non_json_values_rejected(store: D1Store, value: Any) -> None:
    store.threads.save(Thread(id="t", resource_id="r"))
    rejected(store, lambda: store.threads.update("t", metadata={"k": value}))
    rejected(store, lambda: store.metadata.set("thread", "t", "k", value))
    rejected(
        store,
        lambda: store.messages.save([{"id": "m", "thread_id": "t", "role": "user", "content": [value]}]),
    )
    thread = store.threads.get("t")
    assert thread is not None
    assert thread.metadata == {}


def test_timestamps_round_trip(store: D1Store, backend: str) -> None:
    thread_id = unique("t")
    store.threads.save(Thread(id=thread_id, resource_id="r"))
    offsets = st.timedeltas(
        min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
    )
    zones = st.none() | st.builds(timezone, offsets)

    def check(moment: datetime) -> None:
        message_id = unique("m")
        try:
            expected = as_utc(moment)
        except ValueError:
            rejected(
                store,
                lambda: Message(
                    id=message_id, thread_id=thread_id, role="user", content="x", created_at=moment
                ),
                "out of range",
            )
            return
        store.messages.save(
            [Message(id=message_id, thread_id=thread_id, role="user", content="x", created_at=moment)]
        )
        message = store.messages.get(message_id)
        assert message is not None
        assert message.created_at == expected
        assert message.created_at.tzinfo == UTC
        window = store.messages.list(thread_id, start=moment, end=moment, per_page=None).items
        assert message_id in [item.id for item in window]

    run(backend, check, moment=st.datetimes(timezones=zones))


@pytest.mark.parametrize(
    "call",
    [
        lambda store: store.messages.list("t", include=[{"id": "m", "previous": 2**64}]),
        lambda store: store.messages.list("t", include=[{"id": "m", "next": 2**53}]),
        lambda store: store.messages.list("t", include=[{"id": "m", "previous": -1}]),
        lambda store: store.messages.last("t", 2**64),
        lambda store: store.messages.last("t", -1),
        lambda store: store.threads.list(page=2**63),
        lambda store: store.threads.list(per_page=-1),
        lambda store: store.threads.list(page=True),
        lambda store: store.messages.list("t", per_page=1.5),
    ],
    ids=[
        "previous-2**64",
        "next-2**53",
        "previous-negative",
        "last-2**64",
        "last-negative",
        "page-2**63",
        "per-page-negative",
        "page-bool",
        "per-page-float",
    ],
)
def test_odd_counts_rejected(store: D1Store, call: Callable[[D1Store], object]) -> None:
    rejected(store, lambda: call(store))
