"""Cloudflare D1 backend: one HTTP request per atomic statement list.

Statements are compiled with the ``sqlalchemy-cloudflare-d1`` dialect, but
sent by our own httpx client instead of that package's DBAPI. That DBAPI
(0.4.1) posts each statement as a separate request and has no-op
commit/rollback, so it cannot make a call atomic. It also turns every error
into ``OperationalError``, has a fixed 30 s timeout and never retries, so it
cannot tell a transient failure from an SQL error.

Every call of :meth:`D1Backend.execute` becomes one ``POST {base_url}/raw``
with a ``{"batch": [...]}`` body, which D1 runs as one implicit transaction.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random as random_module
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import httpx
import sqlalchemy
from sqlalchemy.engine import Dialect
from sqlalchemy_cloudflare_d1.dialect import CloudflareD1Dialect

from d1store.backends.base import Limits, Result, Statement
from d1store.errors import BackendError, RequestTooLargeError, ValidationError

__all__ = ["D1Backend", "RetryPolicy", "classify_failure"]

logger = logging.getLogger(__name__)

#: Environment variable read when no ``base_url`` is given, for example to
#: point the backend at a local D1 server.
BASE_URL_ENV: Final = "CF_D1_BASE_URL"

_CLOUDFLARE_BASE_URL: Final = (
    "https://api.cloudflare.com/client/v4/accounts/{account_id}/d1/database/{database_id}"
)

# D1 sends numbers as JSON doubles, so larger integers would be stored rounded.
_MAX_EXACT_INT: Final = 2**53

# Substrings of D1 messages that Cloudflare's D1 documentation ("Retry
# queries" and the D1_ERROR list on "Debug D1") marks as worth a retry.
# NOTE: the overload and storage-timeout texts have not been seen in a live
# D1 response, so their exact wording is unverified.
_TRANSIENT_MARKERS: Final = (
    "network connection lost",
    "storage caused object to be reset",
    "reset because its code was updated",
    "cannot resolve d1 db due to transient issue",
    "d1 db is overloaded",
    "storage operation exceeded timeout",
    "storage operation timed out",
)

# Substrings that mark a failure of the SQL itself. They win over the
# transient markers: a batch that violated a FOREIGN KEY was reported as
# HTTP 500 "Durable Object was reset ... FOREIGN KEY constraint failed", and
# sending it again fails the same way.
_DETERMINISTIC_MARKERS: Final = (
    "constraint failed",
    "sqlite_constraint",
    "sqlite_error",
    "sqlite_toobig",
    "sqlite_range",
    "sqlite_mismatch",
    "sqlite_auth",
    "sqlite_readonly",
    "d1_type_error",
    "d1_column_notfound",
    "syntax error",
    "no such table",
    "no such column",
    "too many sql variables",
)

# Gateway, timeout and rate-limit statuses, which do not depend on the SQL.
_TRANSIENT_STATUSES: Final = frozenset({408, 429, 502, 503, 504})


def _ensure(condition: bool, message: str) -> None:
    if not condition:
        raise ValidationError(message)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry schedule for transient D1 failures: exponential backoff with full jitter.

    The n-th retry waits a uniform random time in ``[0, min(max_delay,
    base_delay * 2 ** (n - 1))]`` seconds. A ``Retry-After`` header from the
    server (HTTP 429 or 503) is a minimum: the wait is never shorter, even
    when that is longer than ``max_delay``, because retrying earlier only
    collects another 429. ``max_elapsed`` bounds the whole call, counted from
    the first attempt: when the next wait would end past it, the backend
    gives up at once instead of sleeping.

    ``sleep`` and ``random`` exist so that tests can record the waits without
    sleeping. ``random`` returns a float in ``[0, 1)``.
    """

    max_attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    max_elapsed: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    random: Callable[[], float] = field(default=random_module.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        _ensure(
            self.max_attempts >= 1,
            f"max_attempts must be at least 1, got {self.max_attempts!r}",
        )
        _ensure(
            self.base_delay >= 0 and math.isfinite(self.base_delay),
            f"base_delay must be a finite number of seconds >= 0, got {self.base_delay!r}",
        )
        _ensure(
            self.max_delay >= self.base_delay and math.isfinite(self.max_delay),
            f"max_delay must be finite and >= base_delay, got {self.max_delay!r}",
        )
        _ensure(
            self.max_elapsed > 0,
            f"max_elapsed must be a number of seconds > 0, got {self.max_elapsed!r}",
        )

    def backoff_ceiling(self, attempt: int) -> float:
        """Return the longest jittered wait after failed attempt ``attempt`` (1-based)."""
        # min() before the power would overflow for very large attempt numbers.
        exponent = min(attempt - 1, 64)
        return float(min(self.max_delay, self.base_delay * 2.0**exponent))

    def next_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Return the seconds to wait after failed attempt ``attempt`` (1-based).

        ``retry_after`` is the server's ``Retry-After`` in seconds, if any.
        """
        jittered = self.random() * self.backoff_ceiling(attempt)
        if retry_after is None:
            return jittered
        return max(retry_after, jittered)

    def delays(self) -> Iterator[float]:
        """Yield the wait before each retry when the server sends no ``Retry-After``."""
        for attempt in range(1, self.max_attempts):
            yield self.next_delay(attempt)


@dataclass(frozen=True)
class _Failure:
    """One failed attempt, as reported to the log and to the caller."""

    message: str
    transient: bool
    status: int | None = None
    retry_after: float | None = None


def classify_failure(status: int, body: Any) -> tuple[str, bool]:
    """Return D1's message for a failed response and whether to retry it.

    ``body`` is the decoded JSON body, or ``None`` when it was not JSON. An
    SQL error is never transient, whatever the status. A known transient D1
    message is retried whatever the status. Otherwise only 408, 429, 502, 503
    and 504 are retried, and a 500 is retried only when it carries no D1
    error, because a 500 with an unknown D1 message may be deterministic.
    """
    message = _error_message(body)
    lowered = (message or "").lower()
    if any(marker in lowered for marker in _DETERMINISTIC_MARKERS):
        transient = False
    else:
        transient = (
            any(marker in lowered for marker in _TRANSIENT_MARKERS)
            or status in _TRANSIENT_STATUSES
            or (status == 500 and message is None)
        )
    if message is None:
        message = f"D1 API returned HTTP {status} {httpx.codes.get_reason_phrase(status)}"
    return message, transient


def _error_message(body: Any) -> str | None:
    """Return the text of the ``errors`` list of a Cloudflare API body, if any."""
    if not isinstance(body, Mapping):
        return None
    errors = body.get("errors")
    texts: list[str] = []
    if isinstance(errors, list):
        for error in errors:
            if isinstance(error, Mapping) and error.get("message"):
                texts.append(str(error["message"]))
            elif isinstance(error, str):
                texts.append(error)
    # A batch entry can carry its own error instead of the top-level list.
    results = body.get("result")
    if not texts and isinstance(results, list):
        for entry in results:
            if isinstance(entry, Mapping) and entry.get("error"):
                texts.append(str(entry["error"]))
    return "; ".join(texts) if texts else None


def _parse_retry_after(value: str | None) -> float | None:
    """Return a ``Retry-After`` header (seconds or HTTP date) as seconds from now."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _json_param(value: Any, index: int, position: int) -> Any:
    """Return ``value`` as D1's JSON API takes it, or raise for a type it cannot carry."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        # Sent as 1/0 as in SQLite. sqlalchemy-cloudflare-d1 0.4.1 reports
        # that D1's REST API turned JSON booleans into strings.
        return int(value)
    if isinstance(value, int):
        _ensure(
            -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT,
            f"statement {index} parameter {position}: integer {value} is outside "
            f"+-2**53, which D1 cannot store exactly because it sends numbers as "
            f"JSON doubles; store it as text",
        )
        return value
    if isinstance(value, float):
        _ensure(
            math.isfinite(value),
            f"statement {index} parameter {position}: {value!r} cannot be sent to D1; "
            "use NULL or a finite number",
        )
        return value
    raise ValidationError(
        f"statement {index} parameter {position}: type {type(value).__name__} is not "
        "supported by the D1 backend; pass str, int, float, bool or None"
    )


class D1Backend:
    """Backend that runs each statement list as one D1 ``batch`` HTTP request.

    A transient failure (see :func:`classify_failure`) is retried with the
    same request body under ``retry``. A retry after a dropped connection may
    run a write twice, because D1 may have applied it before the connection
    was lost. The data mapper therefore builds only idempotent writes
    (upserts and deletes by key).

    NOTE: an attempt that timed out here may still reach D1 after the call
    has returned. If another call changed the same rows in between, the late
    attempt undoes that change; without idempotency keys on D1's side this
    cannot be detected.

    The counters are updated under a lock, so threads may share one backend
    and its httpx connection pool.
    """

    name: str = "cloudflare_d1"

    def __init__(
        self,
        account_id: str,
        database_id: str,
        api_token: str,
        *,
        base_url: str | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        _ensure(bool(api_token), "api_token is missing: pass a Cloudflare API token")
        _ensure(timeout > 0, f"timeout must be a number of seconds > 0, got {timeout!r}")

        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or None
        if base_url is None:
            _ensure(
                bool(account_id) and bool(database_id),
                "account_id and database_id are required unless base_url is given",
            )
            base_url = _CLOUDFLARE_BASE_URL.format(account_id=account_id, database_id=database_id)

        self.account_id = account_id
        self.database_id = database_id
        self.base_url = _checked_base_url(base_url.rstrip("/"))
        # Annotated as the protocol declares it: a settable attribute is invariant.
        self.dialect: Dialect = CloudflareD1Dialect()
        # The dialect compiles positional "?" placeholders, as Statement requires.
        assert self.dialect.paramstyle == "qmark"
        self.limits = limits if limits is not None else Limits()
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.request_count = 0
        self.attempt_count = 0
        self._counter_lock = threading.Lock()

        self._client = httpx.Client(
            headers={
                "Authorization": f"Bearer {api_token}",
                "Content-Type": "application/json",
            },
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_url(cls, url: sqlalchemy.URL | str, **kwargs: Any) -> D1Backend:
        """Create a backend from ``cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID``.

        Query options: ``base_url`` (string), ``timeout`` (seconds per HTTP
        attempt) and ``max_attempts`` (attempts per call, replacing the
        default :class:`RetryPolicy`'s value). Keyword arguments override the
        query options of the same name.
        """
        try:
            parsed = sqlalchemy.make_url(url)
        except sqlalchemy.exc.ArgumentError:
            # The URL text contains the token, so it is not repeated here.
            raise ValidationError(
                "invalid D1 URL: expected cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID"
            ) from None
        _ensure(
            parsed.get_backend_name() == "cloudflare_d1",
            f"invalid D1 URL: scheme {parsed.drivername!r} is not cloudflare_d1",
        )
        _ensure(
            bool(parsed.username and parsed.password and parsed.host),
            # No part of the URL is shown: a token may sit in any of them.
            "invalid D1 URL: expected cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID "
            f"(account id {'present' if parsed.username else 'missing'}, "
            f"token {'present' if parsed.password else 'missing'}, "
            f"database id {'present' if parsed.host else 'missing'})",
        )
        options = dict(parsed.query)
        unknown = set(options) - {"base_url", "timeout", "max_attempts"}
        _ensure(
            not unknown,
            f"invalid D1 URL: unknown query options {sorted(unknown)}; "
            "supported: base_url, timeout, max_attempts",
        )
        if "base_url" in options:
            kwargs.setdefault("base_url", _single(options, "base_url"))
        if "timeout" in options:
            kwargs.setdefault("timeout", _number(options, "timeout", float))
        if "max_attempts" in options and "retry" not in kwargs:
            kwargs["retry"] = RetryPolicy(max_attempts=_number(options, "max_attempts", int))
        assert parsed.username is not None and parsed.password is not None
        assert parsed.host is not None
        return cls(parsed.username, parsed.host, parsed.password, **kwargs)

    def execute(self, statements: Sequence[Statement], *, write: bool) -> list[Result]:
        """Run ``statements`` as one D1 batch and return one result per statement.

        ``write`` only labels log records: reads and writes are retried alike.
        Raises :class:`RequestTooLargeError` before sending a body over
        ``limits.max_request_bytes``, and :class:`BackendError` when D1 fails.
        """
        if not statements:
            return []
        # Checked here too, so that an oversized statement costs no request.
        self.limits.check(statements)
        body = self._encode(statements)
        with self._counter_lock:
            self.request_count += 1
        payload = self._send(body, len(statements), write=write)
        return _parse_results(payload, len(statements))

    def _encode(self, statements: Sequence[Statement]) -> bytes:
        batch = [
            {
                "sql": statement.sql,
                "params": [
                    _json_param(value, index, position)
                    for position, value in enumerate(statement.params, start=1)
                ],
            }
            for index, statement in enumerate(statements)
        ]
        body = json.dumps({"batch": batch}, ensure_ascii=False, allow_nan=False).encode()
        if len(body) > self.limits.max_request_bytes:
            raise RequestTooLargeError(len(body), self.limits.max_request_bytes, "D1 request body in bytes")
        return body

    def _send(self, body: bytes, statement_count: int, *, write: bool) -> Any:
        """POST ``body`` with retries and return the decoded JSON of the success."""
        policy = self.retry
        kind = "write" if write else "read"
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            with self._counter_lock:
                self.attempt_count += 1
            remaining = policy.max_elapsed - (time.monotonic() - started)
            outcome = self._attempt(body, timeout=max(0.001, min(self.timeout, remaining)))
            if not isinstance(outcome, _Failure):
                return outcome

            if not outcome.transient:
                logger.debug(
                    "D1 %s batch of %s statements failed without retry (attempt %s): %s",
                    kind,
                    statement_count,
                    attempt,
                    outcome.message,
                )
                raise BackendError(
                    outcome.message,
                    attempts=attempt,
                    transient=False,
                    status=outcome.status,
                )

            delay = policy.next_delay(attempt, outcome.retry_after)
            elapsed = time.monotonic() - started
            if attempt >= policy.max_attempts or elapsed + delay > policy.max_elapsed:
                logger.error(
                    "D1 %s batch of %s statements failed after %s attempts in %.1f s, giving up: %s",
                    kind,
                    statement_count,
                    attempt,
                    elapsed,
                    _describe(outcome),
                )
                raise BackendError(
                    outcome.message,
                    attempts=attempt,
                    transient=True,
                    status=outcome.status,
                )
            logger.warning(
                "D1 %s batch attempt %s of %s failed (%s); retrying in %.2f s",
                kind,
                attempt,
                policy.max_attempts,
                _describe(outcome),
                delay,
            )
            policy.sleep(delay)

    def _attempt(self, body: bytes, *, timeout: float) -> Any:
        """Send ``body`` once; return the decoded JSON on success, else a :class:`_Failure`."""
        try:
            response = self._client.post(f"{self.base_url}/raw", content=body, timeout=timeout)
        except httpx.TransportError as exc:
            # Connection refused or dropped, timeouts: the request may or may
            # not have reached D1, so only idempotent statement lists are safe
            # to retry. See the class docstring.
            return _Failure(f"request to D1 failed: {_describe_exception(exc)}", transient=True)

        try:
            payload = response.json()
        except ValueError:
            payload = None

        if response.is_success and isinstance(payload, Mapping) and payload.get("success"):
            return payload

        message, transient = classify_failure(response.status_code, payload)
        if response.is_success and payload is None:
            # A 2xx that is not JSON comes from something between us and D1.
            message = f"D1 API returned HTTP {response.status_code} with a body that is not JSON"
            transient = True
        return _Failure(
            message,
            transient=transient,
            status=response.status_code,
            retry_after=_parse_retry_after(response.headers.get("Retry-After")),
        )

    def close(self) -> None:
        """Close the HTTP client and its connections."""
        self._client.close()

    def describe(self) -> str:
        """Return the backend name and URL, with the API token masked."""
        return f"{self.name} {self.base_url} (token ***)"

    def __repr__(self) -> str:
        return f"D1Backend(base_url={self.base_url!r}, api_token='***')"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _checked_base_url(base_url: str) -> str:
    """Return ``base_url`` if httpx can send to it, else raise :class:`ValidationError`."""
    try:
        parsed = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ValidationError(
            f"invalid D1 base URL {base_url!r}: {exc}; use http(s)://HOST[:PORT]/PATH"
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationError(f"invalid D1 base URL {base_url!r}: use http(s)://HOST[:PORT]/PATH")
    return base_url


def _describe(failure: _Failure) -> str:
    if failure.status is None:
        return failure.message
    return f"HTTP {failure.status}: {failure.message}"


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse_results(payload: Any, expected: int) -> list[Result]:
    """Turn the ``result`` list of a ``/raw`` batch response into :class:`Result` objects."""
    entries = payload.get("result")
    if not isinstance(entries, list) or len(entries) != expected:
        count = len(entries) if isinstance(entries, list) else "no"
        raise BackendError(f"D1 returned {count} results for a batch of {expected} statements")
    results: list[Result] = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise BackendError(f"D1 returned a malformed statement result: {entry!r:.200}")
        table = entry.get("results") or {}
        rows = (table.get("rows") or []) if isinstance(table, Mapping) else []
        columns = (table.get("columns") or []) if isinstance(table, Mapping) else []
        meta = entry.get("meta") or {}
        changes = meta.get("changes", 0) if isinstance(meta, Mapping) else 0
        results.append(
            Result(rows=[tuple(row) for row in rows], changes=int(changes or 0), columns=list(columns))
        )
    return results


def _single(options: Mapping[str, str | tuple[str, ...]], key: str) -> str:
    value = options[key]
    _ensure(isinstance(value, str), f"invalid D1 URL: query option {key!r} is given twice")
    assert isinstance(value, str)
    return value


def _number(options: Mapping[str, str | tuple[str, ...]], key: str, kind: Callable[[str], Any]) -> Any:
    text = _single(options, key)
    try:
        return kind(text)
    except ValueError:
        raise ValidationError(
            f"invalid D1 URL: query option {key}={text!r} is not a {kind.__name__}"
        ) from None
