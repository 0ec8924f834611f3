"""The JSON Lines record of one thread: how export writes it and import reads it.

One line is one thread with its messages::

    {"id": "t1", "resource_id": "alice", "title": "", "metadata": {},
     "created_at": "2026-01-31T09:08:07.123456Z", "updated_at": "...",
     "archived_at": "..." (archived threads only), "resource": {...},
     "messages": [{"id": "m1", "role": "user", "content": "Hi", ...}]}

Import also accepts the common chat format, where only ``messages`` (each
with ``role`` and ``content``) is required. Missing ids are derived from the
line's content and its occurrence among identical lines, so that two
identical lines stay two threads and importing a file again writes the same
ids.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pydantic

from d1store.encoding import MAX_ID_LENGTH, dump_json, format_timestamp
from d1store.models import Message, Resource, Thread

__all__ = ["LineError", "ParsedLine", "RecordParser", "message_record", "thread_header"]

THREAD_FIELDS = frozenset(
    (
        "id",
        "resource_id",
        "title",
        "metadata",
        "created_at",
        "updated_at",
        "archived_at",
        "resource",
        "messages",
    )
)
MESSAGE_FIELDS = frozenset(
    ("id", "thread_id", "resource_id", "role", "content", "type", "metadata", "created_at")
)
RESOURCE_FIELDS = frozenset(("id", "working_memory", "metadata", "created_at", "updated_at"))


class LineError(ValueError):
    """An input line that cannot be imported, with its 1-based line number."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


@dataclass(slots=True)
class ParsedLine:
    """One validated input line: a thread, its messages and optionally its resource.

    Timestamps that the line did not give are absent from the models'
    ``model_fields_set``; the importer fills them before writing.
    """

    number: int
    size: int
    thread: Thread
    messages: list[Message]
    resource: Resource | None = None
    explicit_id: bool = True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; use a finite number or null")


def _describe(error: pydantic.ValidationError, prefix: str) -> str:
    """Return the first problem of a pydantic error as ``field: message``."""
    first = error.errors()[0]
    location = prefix + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{location.lstrip('.')}: {message}" if location else message


def _check_fields(kind: str, value: Any, allowed: frozenset[str], hint: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{kind} must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"{kind} has unknown field(s) {', '.join(map(repr, unknown))}; {hint}")
    return value


def _derived_id(base: str, suffix: str) -> str:
    text = f"{base}{suffix}"
    if len(text) <= MAX_ID_LENGTH:
        return text
    return "m_" + hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass
class RecordParser:
    """Parses and validates input lines, deriving the ids that are missing.

    ``default_resource`` is the resource id of lines that name none. One
    parser must read a whole file, because derived ids count identical lines
    and explicit thread ids must be unique within the file.
    """

    default_resource: str = "default"
    _seen: Counter[str] = field(default_factory=Counter)
    _explicit: dict[str, int] = field(default_factory=dict)

    def parse(self, number: int, text: str) -> ParsedLine:
        """Parse line ``number``; raise :class:`LineError` explaining what is wrong."""
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise LineError(number, f"invalid JSON: {exc.msg} at column {exc.colno}") from None
        except (ValueError, RecursionError) as exc:
            raise LineError(number, f"invalid JSON: {exc}") from None
        try:
            return self._build(number, len(text.encode("utf-8", "surrogatepass")), data)
        except pydantic.ValidationError as exc:
            raise LineError(number, _describe(exc, "")) from None
        except ValueError as exc:
            raise LineError(number, str(exc)) from None

    def _build(self, number: int, size: int, data: Any) -> ParsedLine:
        record = _check_fields(
            "the line",
            data,
            THREAD_FIELDS,
            'move extra fields into "metadata"',
        )
        if "messages" not in record:
            raise ValueError('missing field "messages": each line is one thread with a "messages" list')
        if not isinstance(record["messages"], list):
            raise ValueError(f'"messages" must be a list, got {type(record["messages"]).__name__}')

        thread_id, explicit = self._thread_id(number, record)
        fields = {key: value for key, value in record.items() if key not in ("messages", "resource")}
        fields["id"] = thread_id
        fields.setdefault("resource_id", self.default_resource)
        thread = Thread.model_validate(fields)
        messages = [self._message(thread, index, item) for index, item in enumerate(record["messages"])]
        resource = self._resource(thread, record["resource"]) if "resource" in record else None
        return ParsedLine(number, size, thread, messages, resource, explicit)

    def _thread_id(self, number: int, record: dict[str, Any]) -> tuple[str, bool]:
        if "id" in record:
            thread_id = record["id"]
            if isinstance(thread_id, str) and thread_id in self._explicit:
                raise ValueError(
                    f"thread id {thread_id!r} is already used on line {self._explicit[thread_id]}; "
                    "give each line its own id, or none"
                )
            if isinstance(thread_id, str):
                self._explicit[thread_id] = number
            return thread_id, True
        digest = hashlib.sha256(dump_json(record).encode("utf-8", "surrogatepass")).hexdigest()[:24]
        self._seen[digest] += 1
        return f"t_{digest}_{self._seen[digest]}", False

    def _message(self, thread: Thread, index: int, item: Any) -> Message:
        where = f"messages[{index}]"
        fields = dict(_check_fields(where, item, MESSAGE_FIELDS, 'move extra fields into its "metadata"'))
        if fields.setdefault("thread_id", thread.id) != thread.id:
            raise ValueError(
                f"{where}.thread_id: {fields['thread_id']!r} differs from the line's thread id "
                f"{thread.id!r}; remove it or make them equal"
            )
        fields.setdefault("id", _derived_id(f"{thread.id}-m", str(index)))
        try:
            return Message.model_validate(fields)
        except pydantic.ValidationError as exc:
            raise ValueError(_describe(exc, where)) from None

    def _resource(self, thread: Thread, item: Any) -> Resource:
        fields = dict(_check_fields("resource", item, RESOURCE_FIELDS, "remove them"))
        if fields.setdefault("id", thread.resource_id) != thread.resource_id:
            raise ValueError(
                f"resource.id {fields['id']!r} differs from the thread's resource_id "
                f"{thread.resource_id!r}; remove it or make them equal"
            )
        try:
            return Resource.model_validate(fields)
        except pydantic.ValidationError as exc:
            raise ValueError(_describe(exc, "resource")) from None


def thread_header(thread: Thread, resource: Resource | None) -> dict[str, Any]:
    """Return the fields of a thread record that precede its messages."""
    record: dict[str, Any] = {
        "id": thread.id,
        "resource_id": thread.resource_id,
        "title": thread.title,
        "metadata": thread.metadata,
        "created_at": format_timestamp(thread.created_at),
        "updated_at": format_timestamp(thread.updated_at),
    }
    # Written only for archived threads, so lines of active threads stay as
    # they were before archiving existed.
    if thread.archived_at is not None:
        record["archived_at"] = format_timestamp(thread.archived_at)
    if resource is not None:
        record["resource"] = {
            "working_memory": resource.working_memory,
            "metadata": resource.metadata,
            "created_at": format_timestamp(resource.created_at),
            "updated_at": format_timestamp(resource.updated_at),
        }
    return record


def message_record(message: Message) -> dict[str, Any]:
    """Return the exported fields of one message (its thread id is implied by the line)."""
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "type": message.type,
        "resource_id": message.resource_id,
        "metadata": message.metadata,
        "created_at": format_timestamp(message.created_at),
    }


def encode(value: Any) -> str:
    """Encode ``value`` as compact JSON text with non-ASCII characters kept."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
