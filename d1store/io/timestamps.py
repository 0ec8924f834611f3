"""Timestamps for imported records that do not carry their own.

A timestamp missing from a line is taken from the stored record when one
exists, so that importing the same file again writes the same values. A
new record gets the import time instead, and messages get increasing times
in line order. A thread's missing ``created_at`` and ``updated_at`` are
those of its first and last message.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime

from d1store.encoding import clock
from d1store.io.records import ParsedLine
from d1store.models import Message
from d1store.store import D1Store

__all__ = ["fill_timestamps"]


def _missing(record: Message, name: str = "created_at") -> bool:
    return name not in record.model_fields_set


def fill_timestamps(store: D1Store, lines: Sequence[ParsedLine]) -> None:
    """Give every thread, message and resource of ``lines`` its timestamps, in place.

    Costs one read request for the messages of all ``lines`` that lack a
    ``created_at``, plus one per message-less thread or resource that lacks
    its timestamps.
    """
    requested = [message.id for line in lines for message in line.messages if _missing(message)]
    stored = (
        {message.id: message.created_at for message in store.messages.get_many(requested)}
        if requested
        else {}
    )
    for line in lines:
        _fill_messages(line, stored)
        _fill_thread(store, line)
        _fill_resource(store, line)


def _fill_messages(line: ParsedLine, stored: Mapping[str, datetime]) -> None:
    new = sum(1 for message in line.messages if _missing(message) and message.id not in stored)
    fresh: Iterator[datetime] = iter(clock.next(new))
    for index, message in enumerate(line.messages):
        if _missing(message):
            stamp = stored[message.id] if message.id in stored else next(fresh)
            line.messages[index] = message.model_copy(update={"created_at": stamp})


def _fill_thread(store: D1Store, line: ParsedLine) -> None:
    thread = line.thread
    explicit = thread.model_fields_set
    if "created_at" in explicit and "updated_at" in explicit:
        return
    stamps = [message.created_at for message in line.messages]
    if not stamps:
        existing = store.threads.get(thread.id)
        stamps = [existing.created_at, existing.updated_at] if existing is not None else clock.next(1)
    update: dict[str, datetime] = {}
    created = thread.created_at if "created_at" in explicit else min(stamps)
    if "created_at" not in explicit:
        update["created_at"] = created
    if "updated_at" not in explicit:
        update["updated_at"] = max([created, *stamps])
    line.thread = thread.model_copy(update=update)


def _fill_resource(store: D1Store, line: ParsedLine) -> None:
    resource = line.resource
    if resource is None:
        return
    missing = {"created_at", "updated_at"} - resource.model_fields_set
    if not missing:
        return
    existing = store.resources.get(resource.id)
    source = existing if existing is not None else resource
    line.resource = resource.model_copy(update={name: getattr(source, name) for name in missing})
