"""Does a page cost the same in a large store as in a small one?

A page of 40 messages from a thread of N messages, and ``threads.list`` of
one resource's 100 threads among N threads in the table, each timed as the
median of several calls. Both calls include the exact ``total``, which is a
``count(*)`` over the matching index range, so they grow with the size of
that range: for the message page, with the thread's length.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.populate import add_messages, add_threads
from d1store import D1Store, Thread

__all__ = ["scale_rows"]

#: Threads of the resource that ``threads.list`` lists.
THREADS_PER_RESOURCE = 100
PAGE = 40


def _median_ms(call: Callable[[], object], runs: int) -> float:
    call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _messages_page(store: D1Store, size: int, runs: int) -> float:
    thread = f"long-{size}"
    store.threads.save(Thread(id=thread, resource_id="reader"))
    add_messages(store, thread, size)
    page = store.messages.list(thread, per_page=PAGE)
    if page.total != size or len(page.items) != PAGE:
        raise RuntimeError(f"thread {thread}: expected {size} messages, listed {page.total}")
    return _median_ms(lambda: store.messages.list(thread, per_page=PAGE), runs)


def _threads_page(store: D1Store, size: int, runs: int) -> float:
    prefix = f"s{size}-"
    add_threads(store, prefix, size, resources=max(1, size // THREADS_PER_RESOURCE))
    resource = f"{prefix}r0"
    page = store.threads.list(resource_id=resource)
    if page.total != min(size, THREADS_PER_RESOURCE):
        raise RuntimeError(f"resource {resource}: expected {THREADS_PER_RESOURCE} threads, got {page.total}")
    return _median_ms(lambda: store.threads.list(resource_id=resource), runs)


def scale_rows(
    open_store: Callable[[], D1Store], backend: str, small: int, large: int, runs: int
) -> list[dict[str, Any]]:
    """Return the page timings at ``small`` and ``large`` and their ratio, for messages and threads.

    ``open_store`` returns a fresh, initialised store for each measurement.
    """
    rows = []
    cases = (
        (f"messages.list page of {PAGE}, one thread of N", _messages_page),
        (f"threads.list of one resource ({THREADS_PER_RESOURCE} threads) among N", _threads_page),
    )
    for label, measure in cases:
        timings = []
        for size in (small, large):
            store = open_store()
            try:
                timings.append(measure(store, size, runs))
            finally:
                store.close()
        rows.append(
            {
                "backend": backend,
                "case": label,
                "small_n": small,
                "large_n": large,
                "small_ms": round(timings[0], 3),
                "large_ms": round(timings[1], 3),
                "ratio": round(timings[1] / timings[0], 2),
            }
        )
    return rows
