"""Soak test of the D1 backend through the fault-injecting proxy.

Four threads share one store whose requests pass through
:class:`~d1store.testing.fault_proxy.FaultProxy` to the local D1 server.
The proxy injects HTTP 503, HTTP 429 with ``Retry-After: 1``, connection
resets before and after D1 applied the batch, and delays just under and
just over the store's 2 s timeout. The calls save messages in batches (alone
or in a session together with a new thread), delete earlier batches and read
them back. Afterwards the database must equal a model built from what each
call returned:

* a call that returned is applied exactly once;
* a call that raised is applied completely or not at all;
* a read never returns fewer rows than exist: it returns them all or raises.

``D1STORE_SOAK_WRITES`` sets the number of messages saved. The default of
10,000 took 34 to 38 s on a 2-core machine. ``D1STORE_SOAK_SEED`` sets the
fault sequence.
For a longer run::

    D1STORE_SOAK_WRITES=50000 .venv/bin/python -m pytest tests/test_soak.py -m soak -s
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from d1store import BackendError, D1Store, Message, Thread
from d1store.backends.d1 import D1Backend, RetryPolicy
from d1store.local_d1 import LocalD1Server
from d1store.testing.fault_proxy import PASS, RESET_AFTER, RESET_BEFORE, Fault, FaultProxy, delay, status

WRITES = int(os.environ.get("D1STORE_SOAK_WRITES", "10000"))
SEED = int(os.environ.get("D1STORE_SOAK_SEED", "20240611"))
BATCH = 25
WORKERS = 4
THREADS = 8
TIMEOUT = 2.0
UNDER_TIMEOUT = 1.6
OVER_TIMEOUT = 2.4
# A delete may target a batch only after every attempt of its save has
# reached D1: an attempt delayed past the client timeout is still forwarded
# up to OVER_TIMEOUT seconds after it was sent, and would bring rows back.
SETTLE = OVER_TIMEOUT + 1.0

# Label, fault and probability per request. The rest passes unchanged.
FAULTS: list[tuple[str, Fault, float]] = [
    ("503", status(503), 0.10),
    ("429 Retry-After 1", status(429, retry_after=1), 0.03),
    ("reset before D1", RESET_BEFORE, 0.08),
    ("reset after D1", RESET_AFTER, 0.08),
    (f"delay {UNDER_TIMEOUT} s", delay(UNDER_TIMEOUT), 0.03),
    (f"delay {OVER_TIMEOUT} s", delay(OVER_TIMEOUT), 0.03),
]

pytestmark = pytest.mark.soak


@dataclass
class Group:
    """The messages of one save call, and what became of the calls on them."""

    number: int
    thread_id: str
    #: Message id -> content.
    messages: dict[str, str]
    #: Whether the thread itself was saved in the same session.
    with_thread: bool
    saved: bool | None = None
    finished_at: float = 0.0
    deleted: bool | None = None


@dataclass
class Tally:
    """Figures of the run, for the assertions and the printed summary."""

    calls: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    errors: list[str] = field(default_factory=list)
    short_reads: list[str] = field(default_factory=list)


class Soak:
    """Runs the calls of the soak and keeps the model of the expected state."""

    def __init__(self, store: D1Store, seed: int) -> None:
        self.store = store
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.groups: list[Group] = []
        self.next_group = 0
        self.written = 0
        self.tally = Tally()

    def _claim(self) -> Group | None:
        with self.lock:
            if self.written >= WRITES:
                return None
            number = self.next_group
            self.next_group += 1
            count = min(BATCH, WRITES - self.written)
            self.written += count
            with_thread = self.random.random() < 0.2
            thread_id = f"s{number}" if with_thread else f"t{self.random.randrange(THREADS)}"
            texts = {f"g{number}-{index}": f"group {number} message {index} ✓" for index in range(count)}
            group = Group(number, thread_id, texts, with_thread)
            self.groups.append(group)
            return group

    def _settled_group(self) -> Group | None:
        with self.lock:
            cutoff = time.monotonic() - SETTLE
            ready = [
                group
                for group in self.groups
                if group.saved and group.deleted is None and 0 < group.finished_at < cutoff
            ]
            if not ready:
                return None
            chosen = self.random.choice(ready)
            chosen.deleted = False  # claimed, and set to True once the delete returns
            return chosen

    def _timed(self, kind: str, call: object) -> bool:
        started = time.monotonic()
        try:
            assert callable(call)
            call()
            ok = True
        except BackendError as exc:
            # Only transient failures may be left after the retries.
            if not exc.transient:
                self.tally.errors.append(f"{kind}: {exc}")
            ok = False
        except Exception as exc:  # anything else is a defect, reported by the test
            self.tally.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            ok = False
        elapsed = time.monotonic() - started
        with self.lock:
            self.tally.calls[kind] += 1
            self.tally.failures[kind] += not ok
            self.tally.latencies.append(elapsed)
            if elapsed > self.tally.slowest[0]:
                self.tally.slowest = (elapsed, kind)
        return ok

    def save(self, group: Group) -> None:
        messages = [
            Message(
                id=message_id, thread_id=group.thread_id, role="user", content=text, metadata={"n": index}
            )
            for index, (message_id, text) in enumerate(group.messages.items())
        ]

        def call() -> None:
            if group.with_thread:
                with self.store.session() as session:
                    session.threads.save(Thread(id=group.thread_id, resource_id="soak"))
                    session.messages.save(messages)
            else:
                self.store.messages.save(messages)

        group.saved = self._timed("save in session" if group.with_thread else "save", call)
        group.finished_at = time.monotonic()

    def delete(self, group: Group) -> None:
        group.deleted = self._timed("delete", lambda: self.store.messages.delete(list(group.messages)))

    def read(self, group: Group) -> None:
        def call() -> None:
            found = self.store.messages.get_many(list(group.messages))
            if len(found) != len(group.messages):
                self.tally.short_reads.append(f"group {group.number}: {len(found)} of {len(group.messages)}")

        self._timed("read", call)

    def work(self) -> None:
        while True:
            group = self._claim()
            if group is None:
                return
            self.save(group)
            if group.saved and not group.deleted and self.random.random() < 0.3:
                self.read(group)
            if self.random.random() < 0.1:
                target = self._settled_group()
                if target is not None:
                    self.delete(target)


def fault_sequence(seed: int, length: int) -> list[tuple[str, Fault]]:
    """Draw the faults of ``length`` requests, labelled for the report."""
    draw = random.Random(seed)
    sequence = []
    for _ in range(length):
        point = draw.random()
        chosen: tuple[str, Fault] = ("pass", PASS)
        for label, fault, probability in FAULTS:
            if point < probability:
                chosen = (label, fault)
                break
            point -= probability
        sequence.append(chosen)
    return sequence


@pytest.fixture
def direct(request: pytest.FixtureRequest) -> Iterator[D1Store]:
    """A store on the local D1 server without the proxy, for setup and checks."""
    selected = os.environ.get("D1STORE_TEST_BACKENDS")
    if selected and "d1" not in {name.strip() for name in selected.split(",")}:
        pytest.skip("the soak runs on the local D1 server, not selected by D1STORE_TEST_BACKENDS")
    prefix = f"soak{os.getpid()}_{random.randrange(10**6)}_"
    server: LocalD1Server = request.getfixturevalue("d1store_local_d1")
    with D1Store(server.url, table_prefix=prefix) as store:
        store.init()
        for index in range(THREADS):
            store.threads.save(Thread(id=f"t{index}", resource_id="soak"))
        yield store


def baseline_latency(store: D1Store, calls: int = 20) -> float:
    """Return the mean seconds of one call (a save or a delete of BATCH messages) without faults."""
    started = time.monotonic()
    for index in range(calls):
        messages = [
            Message(id=f"base{index}-{n}", thread_id="t0", role="user", content="x") for n in range(BATCH)
        ]
        store.messages.save(messages)
        store.messages.delete([message.id for message in messages])
    return (time.monotonic() - started) / (2 * calls)


def check_model(store: D1Store, soak: Soak) -> dict[str, int]:
    """Compare the database with the model and return the count of each outcome."""
    every_id = [message_id for group in soak.groups for message_id in group.messages]
    stored = {message.id: message for message in store.messages.get_many(every_id)}
    threads = {thread.id: thread for thread in store.threads.list(resource_id="soak", per_page=None).items}
    outcomes: Counter[str] = Counter()
    expected_present = 0
    for group in soak.groups:
        ids = list(group.messages)
        found = [stored[message_id] for message_id in ids if message_id in stored]
        for index, message in enumerate(found):
            assert message.content == group.messages[message.id], f"content of {message.id} differs"
            assert message.thread_id == group.thread_id
            assert message.metadata == {"n": ids.index(message.id)}, f"metadata of {message.id}, row {index}"
        present = len(found)
        assert present in (0, len(ids)), f"group {group.number} half applied: {present} of {len(ids)}"
        if group.with_thread and group.deleted is None:
            # Before any delete, the session's thread exists exactly when its messages do.
            assert (group.thread_id in threads) == (present > 0), f"session {group.number} half applied"
        if group.saved and group.deleted is None:
            assert present == len(ids), f"group {group.number} saved but missing"
            outcome = "saved"
        elif group.saved and group.deleted:
            assert present == 0, f"group {group.number} deleted but present"
            outcome = "deleted"
        elif group.saved:
            outcome = "delete failed, " + ("present" if present else "absent")
        else:
            outcome = "save failed, " + ("applied" if present else "not applied")
        outcomes[outcome] += 1
        expected_present += present

    total = 0
    thread_ids = sorted(threads)
    for start in range(0, len(thread_ids), 90):
        chunk = thread_ids[start : start + 90]
        page = store.messages.list(chunk, per_page=None)
        total += page.total
        assert len({message.id for message in page.items}) == len(page.items), "duplicate rows"
        for thread_id in chunk:
            newest = [item.created_at for item in page.items if item.thread_id == thread_id]
            if newest:
                assert threads[thread_id].updated_at >= max(newest), f"thread {thread_id} updated_at"
    assert total == expected_present, "rows present that no call accounts for"
    return dict(outcomes)


def test_soak_faults_keep_state_exact(direct: D1Store, request: pytest.FixtureRequest) -> None:
    d1store_local_d1: LocalD1Server = request.getfixturevalue("d1store_local_d1")
    base = baseline_latency(direct)
    calls_estimate = 2 * WRITES // BATCH + 100
    sequence = fault_sequence(SEED, 20 * calls_estimate)
    retry = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.5, max_elapsed=30)

    with FaultProxy(d1store_local_d1.base_url, faults=[fault for _, fault in sequence], timeout=10) as proxy:
        store = D1Store(
            d1store_local_d1.url,
            base_url=proxy.base_url,
            table_prefix=direct.table_prefix,
            timeout=TIMEOUT,
            retry=retry,
        )
        soak = Soak(store, SEED)
        started = time.monotonic()
        workers = [threading.Thread(target=soak.work, name=f"soak-{index}") for index in range(WORKERS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - started
        store.close()
        requests = proxy.request_count
    # Delayed attempts of failed calls may still be on their way to D1.
    time.sleep(OVER_TIMEOUT + 0.5)

    assert isinstance(store.backend, D1Backend)
    injected = Counter(label for label, _ in sequence[: min(requests, len(sequence))] if label != "pass")
    retries = store.backend.attempt_count - store.backend.request_count
    tally = soak.tally
    mean = sum(tally.latencies) / len(tally.latencies)
    summary = (
        f"soak: {soak.written} messages in {elapsed:.1f} s, {sum(tally.calls.values())} calls "
        f"{dict(tally.calls)}, failed {dict(tally.failures)}; {requests} requests, "
        f"{retries} retries, faults {dict(injected)}; mean call {mean * 1000:.0f} ms vs "
        f"{base * 1000:.0f} ms without faults (+{(mean - base) * 1000:.0f} ms), slowest "
        f"{tally.slowest[0]:.2f} s ({tally.slowest[1]})"
    )
    print(summary)

    assert requests < len(sequence), "the fault sequence ran out; raise its length"
    assert soak.written >= WRITES
    assert tally.errors == []
    assert tally.short_reads == []
    # Every attempt passes the proxy. Each injected fault other than the
    # delay under the timeout fails its attempt, which is retried unless it
    # was the last attempt of a call that failed.
    failing = sum(count for label, count in injected.items() if label != f"delay {UNDER_TIMEOUT} s")
    assert store.backend.attempt_count == requests
    assert retries == failing - sum(tally.failures.values()), summary
    outcomes = check_model(direct, soak)
    print(f"soak outcomes: {outcomes}")
    assert set(injected) == {label for label, _, _ in FAULTS}
