"""The :class:`D1Store` entry point."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex, CreateTable

from d1store.attachments import DEFAULT_THRESHOLD, AttachmentStore, make_codec
from d1store.backends.base import Backend, Limits, Statement
from d1store.backends.d1 import D1Backend, RetryPolicy
from d1store.backends.sqlite import SQLiteBackend
from d1store.errors import BackendError, D1StoreError, ValidationError
from d1store.migrations.version_table import (
    HEAD_REVISION,
    check_statements,
    outdated_revision,
    stamp_statement,
)
from d1store.repositories import MessageRepository, MetadataRepository, ResourceRepository, ThreadRepository
from d1store.schema import Tables, build_tables, validate_prefix
from d1store.session import Session, Unit
from d1store.statements import Queries

__all__ = ["DEFAULT_URL", "D1Store"]

logger = logging.getLogger(__name__)

#: The embedded database used when nothing else is configured.
DEFAULT_URL = "sqlite:///d1store.db"

_CLOUDFLARE_VARIABLES = ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_D1_DATABASE_ID", "CLOUDFLARE_API_TOKEN")


class D1Store:
    """Conversation memory stored in Cloudflare D1 or SQLite.

    ``target`` is a database URL (``sqlite:///file.db`` or
    ``cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID``) or an existing
    SQLAlchemy engine. ``table_prefix`` is prepended to every table and
    index name. ``max_row_bytes`` lowers or raises the row size limit
    (default: D1's 2,000,000 bytes); ``retry``, ``timeout`` and
    ``base_url`` configure the D1 client.

    ``attachments`` (an :class:`~d1store.attachments.AttachmentStore`, or a
    directory path) moves inline base64 payloads of at least
    ``attachment_threshold`` characters out of message content into that
    store. ``attachment_mode="inline"`` puts them back on every read;
    ``"reference"`` leaves the references for :attr:`attachments` to open.

    The repositories ``threads``, ``messages``, ``metadata`` and
    ``resources`` run each call as one atomic request; :meth:`session`
    groups several writes into one.
    """

    def __init__(
        self,
        target: str | sqlalchemy.URL | Engine,
        *,
        table_prefix: str = "",
        max_row_bytes: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        base_url: str | None = None,
        attachments: AttachmentStore | str | os.PathLike[str] | None = None,
        attachment_threshold: int = DEFAULT_THRESHOLD,
        attachment_mode: str = "inline",
    ) -> None:
        self.table_prefix = validate_prefix(table_prefix)
        self.attachments = make_codec(attachments, attachment_threshold, attachment_mode)
        limits = (
            Limits()
            if max_row_bytes is None
            else Limits(max_row_bytes=_positive("max_row_bytes", max_row_bytes))
        )
        self._bind(_make_backend(target, limits, retry=retry, timeout=timeout, base_url=base_url))
        logger.info("d1store opened %s (table prefix %r)", self.backend.describe(), self.table_prefix)

    @classmethod
    def from_cloudflare(
        cls,
        *,
        account_id: str,
        database_id: str,
        api_token: str,
        base_url: str | None = None,
        table_prefix: str = "",
        **options: Any,
    ) -> D1Store:
        """Open a D1 database by its account id, database id and API token.

        ``options`` are the other keyword arguments of :class:`D1Store`.
        """
        for name, value in (
            ("account_id", account_id),
            ("database_id", database_id),
            ("api_token", api_token),
        ):
            if not isinstance(value, str) or not value:
                # The value is not shown: it may be the token.
                raise ValidationError(f"missing {name}: pass a non-empty string")
        url = sqlalchemy.URL.create(
            "cloudflare_d1", username=account_id, password=api_token, host=database_id
        )
        return cls(url, table_prefix=table_prefix, base_url=base_url, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> D1Store:
        """Open the store configured by environment variables.

        In order: ``D1STORE_URL``; else ``CLOUDFLARE_ACCOUNT_ID``,
        ``CLOUDFLARE_D1_DATABASE_ID`` and ``CLOUDFLARE_API_TOKEN`` together;
        else ``sqlite:///d1store.db`` in the working directory.
        ``D1STORE_TABLE_PREFIX`` sets the prefix unless ``table_prefix`` is
        passed.
        """
        env = os.environ if environ is None else environ
        options.setdefault("table_prefix", env.get("D1STORE_TABLE_PREFIX", ""))
        return cls(url_from_env(env), **options)

    def _bind(self, backend: Backend) -> None:
        # Reads table_prefix and attachments, so callers set those first.
        self.backend: Backend = backend
        self.tables: Tables = build_tables(self.table_prefix)
        self.queries = Queries(self.tables, backend.dialect, backend.limits.max_params)
        unit = Unit(backend, self.queries, attachments=self.attachments)
        self.threads = ThreadRepository(unit)
        self.messages = MessageRepository(unit)
        self.metadata = MetadataRepository(unit)
        self.resources = ResourceRepository(unit)

    @property
    def request_count(self) -> int:
        """Requests sent to the database so far (HTTP requests on D1)."""
        return self.backend.request_count

    def session(self) -> Session:
        """Start a unit of work whose writes are applied atomically at the end."""
        return Session(self.backend, self.queries, attachments=self.attachments)

    def init(self) -> None:
        """Create every missing table and index, atomically.

        Idempotent and safe to run from several processes at once: every
        statement is ``CREATE ... IF NOT EXISTS`` and all of them run in
        one transaction (one batch request on D1). A new schema is stamped
        with the newest Alembic revision in ``{prefix}alembic_version``, so
        that later upgrades start from it. Raises :class:`D1StoreError` when
        Alembic left the schema at an older revision: run ``d1store db
        upgrade`` then.
        """
        dialect = self.backend.dialect
        statements = check_statements(self.table_prefix, dialect)
        for table in self.tables.metadata.sorted_tables:
            statements.append(Statement(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect))))
            for index in sorted(table.indexes, key=lambda item: str(item.name)):
                statements.append(
                    Statement(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)))
                )
        statements.append(stamp_statement(self.table_prefix, dialect))
        try:
            self.backend.execute(statements, write=True)
        except BackendError as exc:
            revision = outdated_revision(exc)
            if revision is None:
                raise
            raise D1StoreError(
                f"the schema of table prefix {self.table_prefix!r} is at migration revision {revision}, "
                f"older than {HEAD_REVISION}; run `d1store db upgrade` (or `alembic upgrade head`) "
                "instead of init()"
            ) from None
        logger.info("d1store schema ready on %s", self.backend.describe())

    def close(self) -> None:
        """Release the database connections or HTTP client."""
        self.backend.close()

    def __enter__(self) -> D1Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"D1Store({self.backend.describe()!r}, table_prefix={self.table_prefix!r})"


def url_from_env(env: Mapping[str, str]) -> str | sqlalchemy.URL:
    """Return the database URL configured by ``env`` (see :meth:`D1Store.from_env`)."""
    if env.get("D1STORE_URL"):
        return env["D1STORE_URL"]
    present = [name for name in _CLOUDFLARE_VARIABLES if env.get(name)]
    if present:
        missing = [name for name in _CLOUDFLARE_VARIABLES if not env.get(name)]
        if missing:
            raise ValidationError(
                f"incomplete Cloudflare configuration: {', '.join(missing)} not set; "
                f"set all of {', '.join(_CLOUDFLARE_VARIABLES)}, or D1STORE_URL"
            )
        return sqlalchemy.URL.create(
            "cloudflare_d1",
            username=env["CLOUDFLARE_ACCOUNT_ID"],
            password=env["CLOUDFLARE_API_TOKEN"],
            host=env["CLOUDFLARE_D1_DATABASE_ID"],
        )
    return DEFAULT_URL


def mask_url(url: str | sqlalchemy.URL) -> str:
    """Return ``url`` with its password (the D1 API token) replaced by ``***``."""
    try:
        return sqlalchemy.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<unparseable URL>"


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or value <= 0:
        raise ValidationError(f"invalid {name} {value!r}: use a positive number of bytes")
    return value


def _make_backend(
    target: str | sqlalchemy.URL | Engine,
    limits: Limits,
    *,
    retry: RetryPolicy | None,
    timeout: float | None,
    base_url: str | None,
) -> Backend:
    url = target.url if isinstance(target, Engine) else _parse_url(target)
    backend = url.get_backend_name()
    if backend == "sqlite":
        try:
            engine = target if isinstance(target, Engine) else _sqlite_engine(url)
        except sqlalchemy.exc.ArgumentError:
            # Such as a host or password in the URL, which SQLite has no use for.
            raise ValidationError(
                f"invalid SQLite URL {mask_url(url)!r}: use sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH"
            ) from None
        return SQLiteBackend(engine, limits=limits, owns_engine=not isinstance(target, Engine))
    if backend == "cloudflare_d1":
        if isinstance(target, Engine):
            # The engine's own connections are not used: its dialect sends
            # one HTTP request per statement and cannot roll back, so
            # d1store sends its batches through its own client.
            target.dispose()
        options: dict[str, Any] = {"limits": limits}
        if retry is not None:
            options["retry"] = retry
        if timeout is not None:
            options["timeout"] = timeout
        if base_url is not None:
            options["base_url"] = base_url
        return D1Backend.from_url(url, **options)
    raise ValidationError(
        f"unsupported database URL {mask_url(url)!r}: use sqlite:///PATH or "
        "cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID"
    )


def _sqlite_engine(url: sqlalchemy.URL) -> Engine:
    if url.database in (None, "", ":memory:"):
        # An in-memory database lives in one connection. SQLAlchemy's default
        # pool gives each thread its own connection, and so its own empty
        # database, so every thread shares this one (the backend serialises it).
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    return create_engine(url)


def _parse_url(target: str | sqlalchemy.URL) -> sqlalchemy.URL:
    try:
        return sqlalchemy.make_url(target)
    except (sqlalchemy.exc.ArgumentError, TypeError, ValueError):
        # ValueError: a port that is not a number. The text may contain a
        # token, so only its scheme is shown, and only when it has one: a
        # token pasted in place of the URL has no "://".
        if not isinstance(target, str):
            url_hint = f"type {type(target).__name__}"
        elif "://" in target:
            url_hint = f"scheme {target.split('://', 1)[0]!r}"
        else:
            url_hint = "no scheme://"
        raise ValidationError(
            f"invalid database URL ({url_hint}): use sqlite:///PATH or "
            "cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID"
        ) from None
