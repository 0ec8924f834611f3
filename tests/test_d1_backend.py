"""D1Backend against a local D1 server (workerd through Miniflare)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from d1store.backends.base import Limits, Statement
from d1store.backends.d1 import BASE_URL_ENV, D1Backend
from d1store.errors import BackendError, RequestTooLargeError, ValidationError
from d1store.local_d1 import LocalD1Server
from d1store.testing.fault_proxy import FaultProxy

TOKEN = "tok-SECRET-123"


@pytest.fixture
def server(d1store_local_d1: LocalD1Server) -> LocalD1Server:
    return d1store_local_d1


@pytest.fixture
def backend(server: LocalD1Server) -> Iterator[D1Backend]:
    with D1Backend(server.account_id, server.database_id, TOKEN, base_url=server.base_url) as b:
        yield b


@pytest.fixture
def table(backend: D1Backend) -> Iterator[str]:
    """Create a table with a unique name, because the server is shared by the session."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    backend.execute(
        [Statement(f"CREATE TABLE {name} (id TEXT PRIMARY KEY, body TEXT, n INTEGER)")],
        write=True,
    )
    backend.request_count = backend.attempt_count = 0
    yield name
    backend.execute([Statement(f"DROP TABLE IF EXISTS {name}")], write=True)


def ids_in(backend: D1Backend, table: str) -> list[str]:
    (result,) = backend.execute([Statement(f"SELECT id FROM {table} ORDER BY id")], write=False)
    return [row[0] for row in result.rows]


def test_execute_empty_sends_nothing(backend: D1Backend) -> None:
    assert backend.execute([], write=True) == []
    assert backend.request_count == 0
    assert backend.attempt_count == 0


def test_batch_is_one_http_request(server: LocalD1Server, table: str) -> None:
    with (
        FaultProxy(server.base_url) as proxy,
        D1Backend("a", "d", TOKEN, base_url=proxy.base_url) as backend,
    ):
        results = backend.execute(
            [
                Statement(f"INSERT INTO {table} (id, body) VALUES (?, ?)", ("a", "x")),
                Statement(f"INSERT INTO {table} (id, body) VALUES (?, ?)", ("b", "y")),
                Statement(f"UPDATE {table} SET body = ? WHERE id IN (?, ?)", ("z", "a", "b")),
                Statement(f"SELECT id, body FROM {table} ORDER BY id"),
            ],
            write=True,
        )

        assert proxy.request_count == 1
        assert backend.request_count == 1
        assert backend.attempt_count == 1
    assert [r.changes for r in results] == [1, 1, 2, 0]
    assert results[3].rows == [("a", "z"), ("b", "z")]


def test_batch_is_atomic(backend: D1Backend, table: str) -> None:
    backend.execute([Statement(f"INSERT INTO {table} (id) VALUES ('a')")], write=True)

    with pytest.raises(BackendError) as caught:
        backend.execute(
            [
                Statement(f"INSERT INTO {table} (id) VALUES ('b')"),
                Statement(f"UPDATE {table} SET body = 'changed'"),
                Statement(f"INSERT INTO {table} (id) VALUES ('a')"),
            ],
            write=True,
        )

    error = caught.value
    assert "UNIQUE constraint failed" in error.message
    assert error.status == 400
    assert error.transient is False
    assert error.attempts == 1
    assert ids_in(backend, table) == ["a"]
    (result,) = backend.execute([Statement(f"SELECT body FROM {table}")], write=False)
    assert result.rows == [(None,)]


def test_request_count_per_call(backend: D1Backend, table: str) -> None:
    for key in ("a", "b", "c"):
        backend.execute([Statement(f"INSERT INTO {table} (id) VALUES (?)", (key,))], write=True)
    ids_in(backend, table)

    assert backend.request_count == 4
    assert backend.attempt_count == 4


def test_values_round_trip(backend: D1Backend, table: str) -> None:
    backend.execute(
        [
            Statement(f"INSERT INTO {table} VALUES (?, ?, ?)", ("a", "text é ✓", 2**53)),
            Statement(f"INSERT INTO {table} VALUES (?, ?, ?)", ("b", None, True)),
            Statement(f"INSERT INTO {table} VALUES (?, ?, ?)", ("c", '{"k": [1]}', -7)),
        ],
        write=True,
    )

    (result,) = backend.execute([Statement(f"SELECT * FROM {table} ORDER BY id")], write=False)
    assert result.rows == [
        ("a", "text é ✓", 2**53),
        ("b", None, 1),
        ("c", '{"k": [1]}', -7),
    ]


def test_hundred_params_pass_and_101_fail(backend: D1Backend) -> None:
    hundred = Statement("SELECT " + ", ".join(["?"] * 100), tuple(range(100)))
    (result,) = backend.execute([hundred], write=False)
    assert result.rows == [tuple(range(100))]

    over = Statement("SELECT " + ", ".join(["?"] * 101), tuple(range(101)))
    with pytest.raises(BackendError, match="statement 0 binds 101 parameters") as refused:
        backend.execute([over], write=False)
    # The client-side check of the same limit sends nothing.
    assert refused.value.transient is False
    assert backend.attempt_count == 1


def test_engine_rejects_101_params(server: LocalD1Server) -> None:
    # With the client-side check lifted, D1 itself rejects the statement.
    lifted = D1Backend(
        server.account_id,
        server.database_id,
        server.api_token,
        base_url=server.base_url,
        limits=Limits(max_params=1_000),
    )
    over = Statement("SELECT " + ", ".join(["?"] * 101), tuple(range(101)))
    with lifted, pytest.raises(BackendError) as caught:
        lifted.execute([over], write=False)
    # The local engine reports: "D1_ERROR: too many SQL variables at offset 207: SQLITE_ERROR".
    assert "too many SQL variables at offset" in caught.value.message
    assert caught.value.transient is False
    assert lifted.attempt_count == 1


def test_request_too_large_is_not_sent(server: LocalD1Server) -> None:
    limits = Limits(max_request_bytes=1_000)
    with D1Backend("a", "d", TOKEN, base_url=server.base_url, limits=limits) as backend:
        with pytest.raises(RequestTooLargeError) as caught:
            backend.execute([Statement("SELECT ?", ("x" * 1_000,))], write=False)

        assert caught.value.limit == 1_000
        assert caught.value.size > 1_000
        assert backend.request_count == 0
        assert backend.attempt_count == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"bytes", "type bytes is not supported"),
        (2**53 + 1, "outside +-2**53"),
        (float("nan"), "cannot be sent to D1"),
    ],
)
def test_unsupported_params_rejected(backend: D1Backend, value: object, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected.replace("+", r"\+").replace("*", r"\*")):
        backend.execute([Statement("SELECT ?", (value,))], write=False)
    assert backend.attempt_count == 0


def test_token_masked_in_repr_and_describe(backend: D1Backend) -> None:
    assert TOKEN not in repr(backend)
    assert TOKEN not in backend.describe()
    assert backend.describe() == f"cloudflare_d1 {backend.base_url} (token ***)"
    assert backend.name == "cloudflare_d1"
    assert backend.dialect.paramstyle == "qmark"


def test_from_url_runs_against_server(server: LocalD1Server) -> None:
    with D1Backend.from_url(server.url) as backend:
        (result,) = backend.execute([Statement("SELECT ?", (7,))], write=False)

    assert result.rows == [(7,)]
    assert backend.base_url == server.base_url


def test_from_url_reads_options() -> None:
    url = (
        f"cloudflare_d1://acct:{TOKEN}@db1"
        "?base_url=http%3A%2F%2F127.0.0.1%3A9%2Fd1&timeout=2.5&max_attempts=2"
    )
    with D1Backend.from_url(url) as backend:
        assert backend.account_id == "acct"
        assert backend.database_id == "db1"
        assert backend.base_url == "http://127.0.0.1:9/d1"
        assert backend.timeout == 2.5
        assert backend.retry.max_attempts == 2
        assert TOKEN not in repr(backend)


@pytest.mark.parametrize(
    "url",
    [
        f"cloudflare_d1://acct:{TOKEN}@",
        f"sqlite://acct:{TOKEN}@db1",
        f"cloudflare_d1://acct:{TOKEN}@db1?retries=3",
        f"cloudflare_d1://acct:{TOKEN}@db1?timeout=soon",
        "not a url",
    ],
)
def test_from_url_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        D1Backend.from_url(url)
    assert TOKEN not in str(caught.value)


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/env/")
    with D1Backend("acct", "db1", TOKEN) as backend:
        assert backend.base_url == "http://127.0.0.1:9/env"

    monkeypatch.delenv(BASE_URL_ENV)
    # Only built, never contacted.
    with D1Backend("acct", "db1", TOKEN) as backend:
        assert backend.base_url == ("https://api.cloudflare.com/client/v4/accounts/acct/d1/database/db1")


def test_close_closes_client(server: LocalD1Server) -> None:
    backend = D1Backend("a", "d", TOKEN, base_url=server.base_url)
    with backend:
        backend.execute([Statement("SELECT 1")], write=False)
    assert backend._client.is_closed
