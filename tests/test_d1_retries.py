"""Retries of D1Backend through the fault proxy, and the failure classifier."""

from __future__ import annotations

import email.utils
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from d1store.backends.base import Statement
from d1store.backends.d1 import D1Backend, RetryPolicy, classify_failure
from d1store.errors import BackendError, ValidationError
from d1store.local_d1 import LocalD1Server
from d1store.testing.fault_proxy import (
    RESET_AFTER,
    RESET_BEFORE,
    FaultProxy,
    delay,
    status,
)

TOKEN = "tok-SECRET-123"

# Seen from Cloudflare's API when a batch violated a FOREIGN KEY.
FOREIGN_KEY_RESET = (
    "D1_ERROR: Durable Object was reset while the request was in flight: "
    "FOREIGN KEY constraint failed: SQLITE_CONSTRAINT"
)


class Sleeps:
    """Records the waits of a RetryPolicy instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def proxy(d1store_local_d1: LocalD1Server) -> Iterator[FaultProxy]:
    with FaultProxy(d1store_local_d1.base_url, timeout=10) as running:
        yield running


def make_backend(proxy: FaultProxy, sleeps: Sleeps, **policy: float) -> D1Backend:
    retry = RetryPolicy(sleep=sleeps, random=lambda: 0.5, **policy)  # type: ignore[arg-type]
    return D1Backend("acct", "db", TOKEN, base_url=proxy.base_url, retry=retry, timeout=5)


@pytest.fixture
def backend(proxy: FaultProxy, sleeps: Sleeps) -> Iterator[D1Backend]:
    with make_backend(proxy, sleeps) as b:
        yield b


@pytest.fixture
def table(backend: D1Backend, proxy: FaultProxy) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    backend.execute(
        [Statement(f"CREATE TABLE {name} (id TEXT PRIMARY KEY, body TEXT, n INTEGER)")],
        write=True,
    )
    backend.request_count = backend.attempt_count = 0
    proxy.request_count = proxy.forwarded_count = 0
    yield name
    proxy.clear()
    backend.execute([Statement(f"DROP TABLE IF EXISTS {name}")], write=True)


def upsert(table: str, key: str, body: str) -> Statement:
    return Statement(
        f"INSERT INTO {table} (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        (key, body),
    )


def count_rows(backend: D1Backend, table: str, key: str) -> int:
    sql = f"SELECT COUNT(*) FROM {table} WHERE id = ?"
    (result,) = backend.execute([Statement(sql, (key,))], write=False)
    return int(result.rows[0][0])


# Retries through the proxy


def test_503_then_success(backend: D1Backend, proxy: FaultProxy, sleeps: Sleeps, table: str) -> None:
    proxy.enqueue(status(503))

    backend.execute([upsert(table, "a", "x")], write=True)

    assert backend.request_count == 1
    assert backend.attempt_count == 2
    assert proxy.request_count == 2
    assert proxy.forwarded_count == 1
    # Full jitter with random() == 0.5 and base_delay 0.1: half of 0.1 s.
    assert sleeps.delays == [pytest.approx(0.05)]
    assert count_rows(backend, table, "a") == 1


def test_429_waits_retry_after_real_sleep(proxy: FaultProxy) -> None:
    proxy.enqueue(status(429, retry_after=1))
    with D1Backend("acct", "db", TOKEN, base_url=proxy.base_url) as backend:
        started = time.monotonic()
        (result,) = backend.execute([Statement("SELECT 1")], write=False)
        elapsed = time.monotonic() - started

    assert result.rows == [(1,)]
    assert backend.attempt_count == 2
    assert elapsed >= 0.95


def test_retry_after_above_max_delay_is_honoured(proxy: FaultProxy, sleeps: Sleeps) -> None:
    proxy.enqueue(status(429, retry_after=7))
    with make_backend(proxy, sleeps, max_delay=2.0) as backend:
        backend.execute([Statement("SELECT 1")], write=False)

    assert sleeps.delays == [7.0]


def test_retry_after_past_budget_gives_up(proxy: FaultProxy, sleeps: Sleeps) -> None:
    proxy.enqueue(status(429, retry_after=30))
    with (
        make_backend(proxy, sleeps, max_elapsed=10.0) as backend,
        pytest.raises(BackendError) as caught,
    ):
        backend.execute([Statement("SELECT 1")], write=False)

    assert caught.value.attempts == 1
    assert caught.value.transient is True
    assert caught.value.status == 429
    assert sleeps.delays == []


def test_reset_after_applied_upsert_once(backend: D1Backend, proxy: FaultProxy, table: str) -> None:
    proxy.enqueue(RESET_AFTER)

    backend.execute([upsert(table, "a", "x")], write=True)

    assert proxy.fault_counts["reset_after"] == 1
    # Both attempts reached D1: the first write was applied, its response lost.
    assert proxy.forwarded_count == 2
    assert backend.attempt_count == 2
    assert count_rows(backend, table, "a") == 1


def test_reset_after_repeats_non_idempotent_write(backend: D1Backend, proxy: FaultProxy, table: str) -> None:
    # Why the mapper sends only idempotent writes: a lost response means a resend.
    backend.execute([Statement(f"INSERT INTO {table} (id, n) VALUES ('a', 0)")], write=True)
    proxy.enqueue(RESET_AFTER)

    backend.execute([Statement(f"UPDATE {table} SET n = n + 1 WHERE id = 'a'")], write=True)

    (result,) = backend.execute([Statement(f"SELECT n FROM {table}")], write=False)
    assert result.rows == [(2,)]


def test_reset_before_is_retried(backend: D1Backend, proxy: FaultProxy, table: str) -> None:
    proxy.enqueue(RESET_BEFORE, RESET_BEFORE)

    backend.execute([upsert(table, "a", "x")], write=True)

    assert backend.attempt_count == 3
    assert proxy.forwarded_count == 1
    assert count_rows(backend, table, "a") == 1


def test_read_timeout_is_retried(proxy: FaultProxy, sleeps: Sleeps) -> None:
    proxy.enqueue(delay(2))
    retry = RetryPolicy(sleep=sleeps, random=lambda: 0.5)
    with D1Backend("a", "d", TOKEN, base_url=proxy.base_url, retry=retry, timeout=0.3) as backend:
        (result,) = backend.execute([Statement("SELECT 1")], write=False)

    assert result.rows == [(1,)]
    assert backend.attempt_count == 2


def test_sql_error_not_retried(backend: D1Backend, proxy: FaultProxy, sleeps: Sleeps, table: str) -> None:
    with pytest.raises(BackendError) as caught:
        backend.execute([Statement(f"INSERT INTO {table} (missing) VALUES (1)")], write=True)

    # The local engine reports: "D1_ERROR: table t_... has no column named missing: SQLITE_ERROR".
    assert "has no column named missing" in caught.value.message
    assert caught.value.transient is False
    assert caught.value.attempts == 1
    assert caught.value.status == 400
    assert backend.attempt_count == 1
    assert proxy.request_count == 1
    assert sleeps.delays == []


def test_give_up_after_max_attempts(
    backend: D1Backend,
    proxy: FaultProxy,
    sleeps: Sleeps,
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy.enqueue(*[status(503)] * 5)

    with pytest.raises(BackendError) as caught:
        backend.execute([upsert(table, "a", "x")], write=True)

    error = caught.value
    assert error.attempts == 5
    assert error.transient is True
    assert error.status == 503
    assert error.message == "fault proxy: injected HTTP 503"
    assert str(error) == "fault proxy: injected HTTP 503 (gave up after 5 attempts)"
    assert backend.attempt_count == 5
    assert backend.request_count == 1
    assert len(sleeps.delays) == 4

    ours = [r for r in caplog.records if r.name == "d1store.backends.d1"]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    errors = [r for r in ours if r.levelno == logging.ERROR]
    assert [r.args[1] for r in warnings] == [1, 2, 3, 4]  # type: ignore[index]
    assert "attempt 1 of 5" in warnings[0].getMessage()
    assert "HTTP 503" in warnings[0].getMessage()
    assert "retrying in 0.05 s" in warnings[0].getMessage()
    assert len(errors) == 1
    assert "after 5 attempts" in errors[0].getMessage()
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
    assert TOKEN not in caplog.text
    assert TOKEN not in str(error)


def test_give_up_on_dropped_connections(proxy: FaultProxy, sleeps: Sleeps) -> None:
    proxy.enqueue(*[RESET_BEFORE] * 3)
    with (
        make_backend(proxy, sleeps, max_attempts=3) as backend,
        pytest.raises(BackendError) as caught,
    ):
        backend.execute([Statement("SELECT 1")], write=False)

    assert caught.value.attempts == 3
    assert caught.value.transient is True
    assert caught.value.status is None
    assert caught.value.message.startswith("request to D1 failed: ")
    assert proxy.forwarded_count == 0


def test_connection_refused_gives_up(sleeps: Sleeps) -> None:
    # Port 9 (discard) on loopback has no listener in the test environment.
    retry = RetryPolicy(max_attempts=2, sleep=sleeps, random=lambda: 0.5)
    with (
        D1Backend("a", "d", TOKEN, base_url="http://127.0.0.1:9/d1", retry=retry) as backend,
        pytest.raises(BackendError) as caught,
    ):
        backend.execute([Statement("SELECT 1")], write=False)

    assert caught.value.attempts == 2
    assert "ConnectError" in caught.value.message


# Classification, without a database


@pytest.mark.parametrize(
    ("code", "body", "transient"),
    [
        (
            500,
            {
                "success": False,
                "errors": [{"code": 7500, "message": FOREIGN_KEY_RESET}],
            },
            False,
        ),
        (
            400,
            {
                "errors": [
                    {
                        "code": 7500,
                        "message": "D1_ERROR: no such table: x: SQLITE_ERROR",
                    }
                ]
            },
            False,
        ),
        (
            503,
            {"errors": [{"message": "D1_ERROR: UNIQUE constraint failed: t.id"}]},
            False,
        ),
        # An SQL failure wins over a transient marker in the same message.
        (
            500,
            {"errors": [{"message": "Network connection lost: FOREIGN KEY constraint failed"}]},
            False,
        ),
        (500, {"errors": [{"message": "D1_ERROR: Network connection lost."}]}, True),
        (
            500,
            {"errors": [{"message": "D1 DB storage caused object to be reset."}]},
            True,
        ),
        (
            500,
            {"errors": [{"message": "D1 DB reset because its code was updated."}]},
            True,
        ),
        (
            500,
            {"errors": [{"message": "Cannot resolve D1 DB due to transient issue on remote node."}]},
            True,
        ),
        (
            500,
            {"errors": [{"message": "D1 DB is overloaded. Requests queued for too long."}]},
            True,
        ),
        (
            500,
            {
                "errors": [
                    {"message": "D1 DB storage operation exceeded timeout which caused object to be reset."}
                ]
            },
            True,
        ),
        (400, {"errors": [{"message": "D1_ERROR: Network connection lost."}]}, True),
        (500, {"errors": [{"message": "D1_ERROR: something new"}]}, False),
        (500, None, True),
        (502, None, True),
        (503, None, True),
        (504, None, True),
        (
            429,
            {
                "errors": [
                    {
                        "code": 971,
                        "message": "Please wait and consider throttling your request speed",
                    }
                ]
            },
            True,
        ),
        (401, {"errors": [{"code": 10000, "message": "Authentication error"}]}, False),
        (413, None, False),
    ],
)
def test_classify_failure(code: int, body: object, transient: bool) -> None:
    message, is_transient = classify_failure(code, body)
    assert is_transient is transient
    assert message


def test_foreign_key_reset_not_retried(sleeps: Sleeps) -> None:
    calls: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {
            "success": False,
            "errors": [{"code": 7500, "message": FOREIGN_KEY_RESET}],
        }
        return httpx.Response(500, json=body)

    retry = RetryPolicy(sleep=sleeps)
    transport = httpx.MockTransport(respond)
    with (
        D1Backend(
            "a",
            "d",
            TOKEN,
            base_url="http://127.0.0.1:9",
            retry=retry,
            transport=transport,
        ) as backend,
        pytest.raises(BackendError) as caught,
    ):
        backend.execute([Statement("INSERT INTO c VALUES (1, 99)")], write=True)

    assert caught.value.transient is False
    assert caught.value.attempts == 1
    assert caught.value.status == 500
    assert caught.value.message == FOREIGN_KEY_RESET
    assert len(calls) == 1
    assert sleeps.delays == []


def test_request_body_and_headers(sleeps: Sleeps) -> None:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(500, json={"errors": [{"message": "Network connection lost."}]})
        result = {"results": {"columns": ["x"], "rows": [[1]]}, "meta": {"changes": 0}}
        return httpx.Response(200, json={"success": True, "result": [result]})

    retry = RetryPolicy(sleep=sleeps, random=lambda: 0.5)
    transport = httpx.MockTransport(respond)
    with D1Backend(
        "a",
        "d",
        TOKEN,
        base_url="http://127.0.0.1:9/db",
        retry=retry,
        transport=transport,
    ) as backend:
        (result,) = backend.execute([Statement("SELECT ?", (True,))], write=False)

    assert result.rows == [(1,)]
    assert len(seen) == 2
    assert seen[0].url == "http://127.0.0.1:9/db/raw"
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(seen[0].content) == {"batch": [{"sql": "SELECT ?", "params": [1]}]}
    # A retry resends the same body.
    assert seen[1].content == seen[0].content


def test_retry_after_http_date(sleeps: Sleeps) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if not sleeps.delays:
            when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
            return httpx.Response(429, headers={"Retry-After": when})
        result = {"results": {"columns": ["1"], "rows": [[1]]}, "meta": {"changes": 0}}
        return httpx.Response(200, json={"success": True, "result": [result]})

    retry = RetryPolicy(sleep=sleeps, random=lambda: 0.5)
    transport = httpx.MockTransport(respond)
    with D1Backend(
        "a", "d", TOKEN, base_url="http://127.0.0.1:9", retry=retry, transport=transport
    ) as backend:
        backend.execute([Statement("SELECT 1")], write=False)

    assert len(sleeps.delays) == 1
    # The date has whole seconds, so up to one second is lost.
    assert 1.9 <= sleeps.delays[0] <= 3.1


# RetryPolicy


def test_policy_delays_double_up_to_max_delay() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay=0.1, max_delay=1.0, random=lambda: 1.0)
    assert list(policy.delays()) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_policy_full_jitter_uses_random() -> None:
    policy = RetryPolicy(random=lambda: 0.25)
    assert policy.next_delay(3) == pytest.approx(0.1 * 4 * 0.25)
    assert policy.next_delay(3, retry_after=0.01) == pytest.approx(0.1)
    assert policy.next_delay(3, retry_after=9.0) == 9.0
    assert policy.next_delay(10_000) == pytest.approx(5.0 * 0.25)


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"base_delay": -1.0},
        {"max_delay": 0.01},
        {"max_elapsed": 0.0},
    ],
)
def test_policy_rejects_bad_values(options: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**options)  # type: ignore[arg-type]


# Fault proxy


def test_proxy_rejects_non_loopback_upstream() -> None:
    for url in ("http://192.0.2.1/d1", "http://example.com/d1", "https://127.0.0.1/d1"):
        with pytest.raises(ValueError):
            FaultProxy(url)


def test_proxy_seeded_mix_is_repeatable(d1store_local_d1: LocalD1Server) -> None:
    body = {"sql": "SELECT 1"}
    headers = {"Authorization": "Bearer local"}
    runs: list[list[str]] = []
    for _ in range(2):
        outcomes: list[str] = []
        mix = [(status(503), 0.3), (RESET_BEFORE, 0.2)]
        with FaultProxy(d1store_local_d1.base_url, mix=mix, seed=7) as proxy:
            for _ in range(40):
                try:
                    response = httpx.post(f"{proxy.base_url}/raw", json=body, headers=headers)
                except httpx.TransportError:
                    outcomes.append("reset")
                else:
                    outcomes.append(str(response.status_code))
        runs.append(outcomes)

        assert proxy.request_count == 40
        assert proxy.fault_counts["status"] == outcomes.count("503")
        assert proxy.fault_counts["reset_before"] == outcomes.count("reset")
        assert proxy.forwarded_count == outcomes.count("200")

    assert runs[0] == runs[1]
    assert set(runs[0]) == {"200", "503", "reset"}


def test_backend_survives_random_faults(backend: D1Backend, proxy: FaultProxy, table: str) -> None:
    mixed = FaultProxy(proxy.upstream, mix=[(status(503), 0.2), (RESET_AFTER, 0.2)], seed=3)
    retry = RetryPolicy(max_attempts=10, sleep=lambda _: None)
    with (
        mixed,
        D1Backend("a", "d", TOKEN, base_url=mixed.base_url, retry=retry) as flaky,
    ):
        for index in range(20):
            flaky.execute([upsert(table, f"k{index:02d}", "v")], write=True)

    assert mixed.fault_count > 0
    assert flaky.attempt_count == 20 + mixed.fault_count
    (result,) = backend.execute([Statement(f"SELECT COUNT(*) FROM {table}")], write=False)
    assert result.rows == [(20,)]
