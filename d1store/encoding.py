"""The storage format of values, shared by every backend.

Both backends store the same text, so that ordering and comparisons in SQL
behave identically:

* timestamps as fixed-width ISO-8601 UTC text with microseconds and a ``Z``
  suffix (``2026-01-31T09:08:07.123456Z``), whose text order is time order;
* JSON values as canonical JSON text: sorted keys, no insignificant
  whitespace, ``ensure_ascii=False``. Python's ``json`` distinguishes ``1``
  from ``1.0``, so values round-trip with their type. It encodes integers of
  up to ``sys.get_int_max_str_digits()`` digits (4,300 by default), so
  longer ones are rejected.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_JSON_DEPTH",
    "dump_json",
    "format_timestamp",
    "parse_timestamp",
    "utc_now",
]

#: Ids are indexed and repeated in every metadata row, so they are bounded.
MAX_ID_LENGTH = 512
#: Python's json module recurses once per level; this stays well inside the
#: default recursion limit of 1000 on both the encoding and decoding side.
MAX_JSON_DEPTH = 200

_ONE_MICROSECOND = timedelta(microseconds=1)
_UTC_FORMAT = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"
# One shared encoder: json.dumps() with options builds a new one per call.
# encode() keeps no state between calls, so threads can share it.
_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC, taking a naive datetime as UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"datetime {value.isoformat()} is out of range in UTC (years 1 to 9999); "
            "use a later or earlier time"
        ) from None


def format_timestamp(value: datetime) -> str:
    """Format ``value`` as the fixed-width text stored in the database."""
    # isoformat() pads the year to four digits and, with an explicit
    # timespec, always writes six fractional digits: a fixed width.
    if value.tzinfo is UTC:
        # The usual case, formatted directly: the same text as isoformat()
        # in about two thirds of its time on an aware datetime (CPython 3.11).
        return _UTC_FORMAT % (
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
        )
    naive = as_utc(value).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> datetime:
    """Parse stored timestamp text back into an aware UTC datetime."""
    # Since Python 3.11, fromisoformat() reads the "Z" suffix as UTC.
    return datetime.fromisoformat(text)


def dump_json(value: Any) -> str:
    """Encode an already validated JSON value as canonical text."""
    return _CANONICAL_JSON.encode(value)


class MonotonicClock:
    """Source of strictly increasing timestamps within this process.

    Messages saved in one call without an explicit ``created_at`` must keep
    their list order even when the system clock does not advance between
    them, so each one gets at least one microsecond more than the last.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = datetime.min.replace(tzinfo=UTC)

    def next(self, count: int) -> list[datetime]:
        """Return ``count`` increasing timestamps, none earlier than now."""
        with self._lock:
            start = max(utc_now(), self._last + _ONE_MICROSECOND)
            stamps = [start + _ONE_MICROSECOND * index for index in range(count)]
            if stamps:
                self._last = stamps[-1]
            return stamps


clock = MonotonicClock()


def check_text(field: str, value: str) -> None:
    """Reject strings that cannot be stored as UTF-8 (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{field} contains a lone surrogate at position {exc.start} ({value[exc.start]!r}), "
            "which cannot be encoded as UTF-8; pass valid Unicode text"
        ) from None


def check_id(field: str, value: object) -> str:
    """Return ``value`` if it is a usable id, else raise ``ValueError``."""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{field} must not be empty or whitespace, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"{field} is {len(value)} characters long, over the maximum of {MAX_ID_LENGTH}: {value[:40]!r}..."
        )
    check_text(field, value)
    return value


def check_json(field: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``field`` unless ``value`` is plain JSON.

    Accepted: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
    finite ``float``, ``bool`` and ``None``, nested at most
    ``MAX_JSON_DEPTH`` levels. Tuples, sets, bytes, NaN and infinities are
    rejected because they would not come back as given.
    """
    if isinstance(value, str):
        check_text(field, value)
        return
    path: list[str] = []
    problem = _find_json_problem(value, path)
    if problem is not None:
        location = field + "".join(path)
        if len(location) > 120:
            location = f"{location[:100]}...(depth {len(path)})"
        raise ValueError(f"{location} {problem}")


def _find_json_problem(value: Any, path: list[str]) -> str | None:
    """Return what is wrong with ``value``, leaving its location in ``path``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"contains a lone surrogate at position {exc.start}, which cannot be encoded "
                "as UTF-8; pass valid Unicode text"
            )
        return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _find_int_problem(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"is {value!r}, which JSON cannot represent; use a finite number or null"
    if len(path) >= MAX_JSON_DEPTH and isinstance(value, (list, dict)):
        return f"is nested more than {MAX_JSON_DEPTH} levels deep; flatten the value"
    if isinstance(value, list):
        for index, item in enumerate(value):
            path.append(f"[{index}]")
            problem = _find_json_problem(item, path)
            if problem is not None:
                return problem
            path.pop()
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            path.append(f"[{key!r}]")
            if not isinstance(key, str):
                return "has a non-string key; JSON object keys must be strings"
            problem = _find_json_problem(key, path) or _find_json_problem(item, path)
            if problem is not None:
                return problem
            path.pop()
        return None
    return (
        f"has a value of type {type(value).__name__} ({value!r:.60}), which is not JSON; "
        "use dict, list, str, int, float, bool or None"
    )


def _find_int_problem(value: int) -> str | None:
    # json.dumps() raises a bare ValueError for an int longer than the
    # interpreter's digit limit. Below 3 bits per allowed digit no int can
    # reach the limit, so str() is tried only for longer ones.
    limit = sys.get_int_max_str_digits()
    if not limit or value.bit_length() <= 3 * limit:
        return None
    try:
        str(value)
    except ValueError:
        return (
            f"is an integer of more than {limit:,} digits, which Python's json module cannot encode; "
            "store it as a string"
        )
    return None


def check_metadata(field: str, value: Any) -> dict[str, Any]:
    """Validate a metadata mapping and return it as a plain ``dict``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must be a mapping of string keys to JSON values, got {value!r:.60}")
    result = dict(value)
    for key, item in result.items():
        if not isinstance(key, str):
            raise ValueError(f"{field} has a non-string key {key!r}; metadata keys must be strings")
        if not key:
            raise ValueError(f"{field} has an empty key; metadata keys must be non-empty strings")
        check_text(f"{field} key", key)
        check_json(f"{field}[{key!r}]", item)
    return result
