"""Fixtures that run every storage test on each backend.

``store`` is parametrised over SQLite (a fresh file per test), the local D1
server (Cloudflare's engine via Miniflare, one server per test run, a fresh
table prefix per test) and real Cloudflare D1, which runs only when
``CLOUDFLARE_ACCOUNT_ID``, ``CLOUDFLARE_D1_DATABASE_ID`` and
``CLOUDFLARE_API_TOKEN`` are set. ``D1STORE_TEST_BACKENDS=sqlite`` limits a
local run to the listed backends.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from d1store import D1Store

BACKENDS = ("sqlite", "d1", "live")
LIVE_VARIABLES = ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_D1_DATABASE_ID", "CLOUDFLARE_API_TOKEN")
_prefixes = itertools.count()

StoreFactory = Callable[..., D1Store]


def _selected() -> set[str]:
    chosen = os.environ.get("D1STORE_TEST_BACKENDS")
    return set(BACKENDS) if not chosen else {name.strip() for name in chosen.split(",")}


def _unique_prefix() -> str:
    # Tests on one D1 database stay apart through their table prefix.
    return f"t{next(_prefixes)}_{uuid.uuid4().hex[:6]}_"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Name of the backend the current test runs on."""
    name: str = request.param
    if name not in _selected():
        pytest.skip(f"backend {name} not selected by D1STORE_TEST_BACKENDS")
    if name == "live" and not all(os.environ.get(variable) for variable in LIVE_VARIABLES):
        pytest.skip("live D1 tier: set " + ", ".join(LIVE_VARIABLES) + " to run it")
    return name


@pytest.fixture
def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Return a factory of stores on the current backend's database.

    Stores made by one factory share a database; each gets its own table
    prefix unless one is given.
    """
    opened: list[D1Store] = []
    database = tmp_path / "store.db"

    def factory(*, table_prefix: str | None = None, init: bool = True, **options: object) -> D1Store:
        prefix = _unique_prefix() if table_prefix is None else table_prefix
        if backend == "sqlite":
            store = D1Store(f"sqlite:///{database}", table_prefix=prefix, **options)  # type: ignore[arg-type]
        elif backend == "d1":
            server = request.getfixturevalue("d1store_local_d1")
            store = D1Store(server.url, table_prefix=prefix, **options)  # type: ignore[arg-type]
        else:
            store = D1Store.from_env(table_prefix=prefix, **options)
        opened.append(store)
        if init:
            store.init()
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: StoreFactory) -> D1Store:
    """An initialised store on the current backend."""
    return make_store()


@pytest.fixture
def d1_store(make_store: StoreFactory, backend: str) -> D1Store:
    """An initialised store, for tests that only make sense on D1."""
    if backend == "sqlite":
        pytest.skip("D1 only")
    return make_store()
