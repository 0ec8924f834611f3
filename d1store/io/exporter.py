"""Export a store as JSON Lines, one thread per line, streamed.

Threads are read a page at a time in creation order, and the messages of a
page of threads with one listing request when they fit ``message_page``
rows. A thread with more messages is written piece by piece while its
messages are paged, so memory stays bounded by the page sizes and never
grows with the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from d1store.io.records import encode, message_record, thread_header
from d1store.models import Message, Resource, Thread
from d1store.store import D1Store

__all__ = ["ExportStats", "export_pieces"]

#: Threads per ``messages.list`` call: the thread ids are bound as
#: parameters, and a statement binds at most 100.
_THREADS_PER_LISTING = 90


@dataclass(slots=True)
class ExportStats:
    """Counts of an export, updated while it runs."""

    threads: int = 0
    messages: int = 0
    #: Matching threads when the export started (from the first page's total).
    total_threads: int | None = None
    #: Resource ids whose thread lines have been written.
    resources_seen: set[str] = field(default_factory=set)


def export_pieces(
    store: D1Store,
    stats: ExportStats,
    *,
    resource_id: str | None = None,
    thread_page: int = 100,
    message_page: int = 1000,
    on_thread: Callable[[ExportStats], None] | None = None,
) -> Iterator[str]:
    """Yield the export as text pieces; every thread's line ends with ``"\\n"``.

    A thread's line is one piece unless its messages exceed
    ``message_page``, in which case it is yielded in several pieces.
    ``resource`` (working memory) is written on the first thread line of
    each resource that has a stored resource record.
    """
    page = 0
    while True:
        listing = store.threads.list(
            resource_id=resource_id, page=page, per_page=thread_page, order_by="created_at", descending=False
        )
        if stats.total_threads is None:
            stats.total_threads = listing.total
        for start in range(0, len(listing.items), _THREADS_PER_LISTING):
            chunk = listing.items[start : start + _THREADS_PER_LISTING]
            yield from _export_chunk(store, stats, chunk, message_page, on_thread)
        if not listing.has_more:
            return
        page += 1


def _export_chunk(
    store: D1Store,
    stats: ExportStats,
    threads: Sequence[Thread],
    message_page: int,
    on_thread: Callable[[ExportStats], None] | None,
) -> Iterator[str]:
    first = store.messages.list([thread.id for thread in threads], per_page=message_page)
    grouped: dict[str, list[Message]] | None = None
    if first.total <= len(first.items):
        grouped = {thread.id: [] for thread in threads}
        for message in first.items:
            grouped[message.thread_id].append(message)
    for thread in threads:
        header = encode(thread_header(thread, _first_resource(store, stats, thread.resource_id)))
        yield header[:-1] + ',"messages":['
        messages = grouped[thread.id] if grouped is not None else None
        yield from _message_pieces(store, stats, thread.id, messages, message_page)
        yield "]}\n"
        stats.threads += 1
        if on_thread is not None:
            on_thread(stats)


def _message_pieces(
    store: D1Store, stats: ExportStats, thread_id: str, messages: list[Message] | None, message_page: int
) -> Iterator[str]:
    if messages is not None:
        stats.messages += len(messages)
        yield ",".join(encode(message_record(message)) for message in messages)
        return
    page, written = 0, 0
    while True:
        listing = store.messages.list(thread_id, page=page, per_page=message_page)
        if listing.items:
            prefix = "," if written else ""
            yield prefix + ",".join(encode(message_record(message)) for message in listing.items)
            written += len(listing.items)
        if not listing.has_more:
            stats.messages += written
            return
        page += 1


def _first_resource(store: D1Store, stats: ExportStats, resource_id: str) -> Resource | None:
    """Return the stored resource the first time ``resource_id`` is seen, else ``None``."""
    if resource_id in stats.resources_seen:
        return None
    # NOTE: the set of seen resource ids grows with the number of resources
    # (one short string each); threads and messages are never accumulated.
    stats.resources_seen.add(resource_id)
    return store.resources.get(resource_id)
