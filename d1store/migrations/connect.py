"""SQLAlchemy connections for Alembic that make each revision atomic.

On SQLite, Python's ``sqlite3`` module (legacy transaction control, as used
by SQLAlchemy 2) opens a transaction only before INSERT, UPDATE and DELETE,
so DDL would commit statement by statement. The connection here is put in
driver autocommit mode and every SQLAlchemy transaction starts with
``BEGIN IMMEDIATE``, which makes a revision one transaction and makes two
migrating processes wait for each other.

On D1 the engine's DBAPI connection is a
:class:`~d1store.migrations.batching.BatchConnection`: each transaction is
one batch request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import sqlalchemy
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from d1store.backends.d1 import D1Backend
from d1store.backends.sqlite import BUSY_TIMEOUT_MS, SQLiteBackend
from d1store.errors import ValidationError
from d1store.migrations.batching import BatchConnection
from d1store.store import D1Store, _parse_url, mask_url

__all__ = ["d1_engine", "open_connection"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def open_connection(target: D1Store | str | sqlalchemy.URL) -> Iterator[Connection]:
    """Yield a connection to ``target`` on which each transaction is atomic.

    ``target`` is a store, whose backend is reused, or a database URL. A D1
    URL honours its ``base_url`` query option and ``CF_D1_BASE_URL``.
    """
    if isinstance(target, D1Store):
        backend = target.backend
        if isinstance(backend, D1Backend):
            with _d1_connection(backend) as connection:
                yield connection
        elif isinstance(backend, SQLiteBackend):
            with _sqlite_connection(backend.engine) as connection:
                yield connection
        else:
            raise ValidationError(
                f"cannot migrate a store on backend {backend.describe()!r}: pass a store opened "
                "on SQLite or D1, or a database URL"
            )
        return

    # The store's parser, so that the same inputs fail with the same message
    # and a token passed in place of a URL is never repeated in it.
    url = _parse_url(target)
    if url.get_backend_name() == "cloudflare_d1":
        with contextlib.closing(D1Backend.from_url(url)) as backend, _d1_connection(backend) as connection:
            yield connection
    elif url.get_backend_name() == "sqlite":
        engine = create_engine(url, poolclass=NullPool)
        try:
            with _sqlite_connection(engine) as connection:
                yield connection
        finally:
            engine.dispose()
    else:
        raise ValidationError(
            f"unsupported database URL {mask_url(url)!r}: use sqlite:///PATH or "
            "cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID"
        )


def d1_engine(backend: D1Backend) -> Engine:
    """Return an engine of the ``cloudflare_d1`` dialect whose connections batch through ``backend``."""
    # The URL carries no credentials: connections come from the creator.
    engine = create_engine("cloudflare_d1://", creator=lambda: BatchConnection(backend), poolclass=NullPool)
    # Held-back writes have no row count; the D1 Alembic implementation
    # checks the version row inside the batch instead.
    engine.dialect.supports_sane_rowcount = False
    return engine


@contextlib.contextmanager
def _d1_connection(backend: D1Backend) -> Iterator[Connection]:
    engine = d1_engine(backend)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@contextlib.contextmanager
def _sqlite_connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        driver: Any = connection.connection.driver_connection
        previous = driver.isolation_level
        # Set before any transaction: assigning None commits an open one.
        driver.isolation_level = None
        driver.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        event.listen(connection, "begin", _begin_immediate)
        try:
            yield connection
        finally:
            event.remove(connection, "begin", _begin_immediate)
            if connection.in_transaction():
                connection.rollback()
            driver.isolation_level = previous


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
