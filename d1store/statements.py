"""SQL statements of the repositories, built with SQLAlchemy Core.

Each statement is built once per process, prefix and shape, compiled for the
backend's dialect (SQLite's or ``cloudflare_d1``, which compile the same
SQLite SQL with ``?`` placeholders) and cached as text. A call then only
binds values, which keeps the hot paths free of SQL compilation.

Statements never bind more than ``Limits.max_params`` values: callers split
long id lists and many-row inserts with :meth:`Queries.chunk_size`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Select

from d1store.backends.base import Statement
from d1store.schema import Tables

__all__ = ["GUARD_MARKER", "Compiled", "Queries"]

THREAD_COLUMNS = ("id", "resource_id", "title", "created_at", "updated_at", "archived_at")
MESSAGE_COLUMNS = ("id", "thread_id", "resource_id", "role", "type", "content", "created_at")
RESOURCE_COLUMNS = ("id", "working_memory", "created_at", "updated_at")
ENTRY_COLUMNS = ("entity_type", "entity_id", "key", "value")

#: Text that a failed existence check puts into the database's error
#: message, followed by the index of the check within its batch.
GUARD_MARKER = "d1store-guard:"


@dataclass(frozen=True, slots=True)
class Compiled:
    """SQL text with the names of its positional parameters, in order.

    A statement that returns threads, messages or resources carries in
    ``metadata`` a second statement, bound with the same values, that
    returns ``(entity_id, key, value)`` for every metadata entry of those
    rows.
    """

    sql: str
    names: tuple[str, ...]
    metadata: Compiled | None = None

    def bind_with_metadata(self, values: Mapping[str, Any]) -> tuple[Statement, Statement]:
        """Bind this statement and its metadata statement with the same values."""
        assert self.metadata is not None, "this statement returns no entities"
        return self.bind(values), self.metadata.bind(values)

    def bind(self, values: Mapping[str, Any]) -> Statement:
        """Return a statement with ``values`` placed in parameter order."""
        return Statement(self.sql, tuple(values[name] for name in self.names))

    def bind_flat(self, params: Iterable[Any]) -> Statement:
        """Return a statement whose values are already in parameter order."""
        return Statement(self.sql, tuple(params))


def _row_binds(columns: Sequence[str], count: int) -> list[dict[str, Any]]:
    return [{name: bindparam(f"{name}_{row}") for name in columns} for row in range(count)]


def _ids(count: int, name: str = "id") -> list[Any]:
    return [bindparam(f"{name}_{index}") for index in range(count)]


_SHARED_CACHES: dict[tuple[Any, ...], dict[tuple[Any, ...], Compiled]] = {}


class Queries:
    """Compiled statements of one store: one prefix and one dialect."""

    def __init__(self, tables: Tables, dialect: Dialect, max_params: int) -> None:
        self.tables = tables
        self.dialect = dialect
        self.max_params = max_params
        # Statement text depends only on the tables and the dialect, so stores
        # of one prefix and dialect in a process share it: a new store does
        # not compile again.
        key = (tables, type(dialect), dialect.paramstyle)
        self._cache: dict[tuple[Any, ...], Compiled] = _SHARED_CACHES.setdefault(key, {})

    def chunk_size(self, params_per_item: int) -> int:
        """Return how many items of ``params_per_item`` values fit one statement."""
        return max(1, self.max_params // params_per_item)

    def _compile(self, statement: ClauseElement) -> Compiled:
        result = statement.compile(dialect=self.dialect)
        assert isinstance(result, SQLCompiler)
        return Compiled(result.string, tuple(result.positiontup or ()))

    def _get(self, key: tuple[Any, ...], build: Callable[[], ClauseElement]) -> Compiled:
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self._compile(build())
            self._cache[key] = compiled
        return compiled

    def _get_entities(
        self, key: tuple[Any, ...], entity_type: str, build: Callable[[], Select[Any]]
    ) -> Compiled:
        """Compile a query of entities together with the query of their metadata.

        The metadata is read by a second statement rather than aggregated
        into each row, because D1 rejects any single value over about 2 MB
        ("string or blob too big"), and the metadata of one entity may add
        up to more than that.
        """
        compiled = self._cache.get(key)
        if compiled is None:
            query = build()
            table = self.tables.for_entity(entity_type)
            entries = self.tables.entries
            owners = query.with_only_columns(table.c.id)
            metadata = select(entries.c.entity_id, entries.c.key, entries.c.value).where(
                entries.c.entity_type == literal_column(f"'{entity_type}'"),
                entries.c.entity_id.in_(owners),
            )
            rows = self._compile(query)
            compiled = Compiled(rows.sql, rows.names, self._compile(metadata))
            self._cache[key] = compiled
        return compiled

    # -- shared pieces -------------------------------------------------

    @staticmethod
    def _columns(table: Table, names: Sequence[str]) -> list[Any]:
        return [table.c[name] for name in names]

    def guard(self, table: Table, count: int) -> Compiled:
        """Check that ``count`` ids exist in ``table``, failing the batch if not.

        SQLite has no RAISE outside triggers, so a missing id makes the
        statement evaluate ``json_extract`` with an invalid path that embeds
        the check's index. That fails the statement with a message such as
        ``JSON path error near 'd1store-guard:3'``, and the batch rolls back.
        Binding ``(id, index)`` pairs keeps every user value a parameter.
        """

        def build() -> ClauseElement:
            name = self.dialect.identifier_preparer.format_table(table)
            rows = ", ".join("(?, ?)" for _ in range(count))
            return text(
                f"SELECT json_extract('{{}}', '{GUARD_MARKER}' || column2) "
                f"FROM (VALUES {rows}) WHERE NOT EXISTS "
                f"(SELECT 1 FROM {name} WHERE {name}.id = column1)"
            )

        return self._get(("guard", table.name, count), build)

    def size_guard(self, table: Table) -> Compiled:
        """Check that one row of ``table`` is within a size, failing the batch if not.

        Binds the check's index, the id and the limit. The failure message
        carries the measured size after the index, such as
        ``'d1store-guard:3:2000466'``. ``length(CAST(... AS BLOB))`` counts
        UTF-8 bytes, as D1's row limit does.
        """

        def build() -> ClauseElement:
            preparer = self.dialect.identifier_preparer
            name = preparer.format_table(table)
            size = " + ".join(
                f"coalesce(length(CAST({name}.{preparer.quote(column.name)} AS BLOB)), 0)"
                for column in table.columns
            )
            return text(
                f"SELECT json_extract('{{}}', '{GUARD_MARKER}' || ? || ':' || ({size})) "
                f"FROM {name} WHERE {name}.id = ? AND ({size}) > ?"
            )

        return self._get(("size_guard", table.name), build)

    # -- threads -------------------------------------------------------

    def thread_upsert(self) -> Compiled:
        threads = self.tables.threads

        def build() -> ClauseElement:
            stmt = insert(threads).values({name: bindparam(name) for name in THREAD_COLUMNS})
            return stmt.on_conflict_do_update(
                index_elements=[threads.c.id],
                set_={name: stmt.excluded[name] for name in THREAD_COLUMNS[1:]},
            )

        return self._get(("thread_upsert",), build)

    def thread_get(self, *, by_resource: bool) -> Compiled:
        threads = self.tables.threads

        def build() -> Select[Any]:
            query = select(*self._columns(threads, THREAD_COLUMNS)).where(threads.c.id == bindparam("id"))
            if by_resource:
                query = query.where(threads.c.resource_id == bindparam("resource_id"))
            return query

        return self._get_entities(("thread_get", by_resource), "thread", build)

    def _thread_filters(
        self, by_resource: bool, metadata_keys: int, archived: bool | None
    ) -> list[ColumnElement[bool]]:
        threads, entries = self.tables.threads, self.tables.entries
        filters: list[ColumnElement[bool]] = []
        if by_resource:
            filters.append(threads.c.resource_id == bindparam("resource_id"))
        if archived is not None:
            archived_at = threads.c.archived_at
            filters.append(archived_at.is_not(None) if archived else archived_at.is_(None))
        for index in range(metadata_keys):
            filters.append(
                exists().where(
                    entries.c.entity_type == literal_column("'thread'"),
                    entries.c.entity_id == threads.c.id,
                    entries.c.key == bindparam(f"key_{index}"),
                    entries.c.value == bindparam(f"value_{index}"),
                )
            )
        return filters

    def thread_list(
        self,
        *,
        by_resource: bool,
        metadata_keys: int,
        order_by: str,
        descending: bool,
        paged: bool,
        archived: bool | None = None,
    ) -> Compiled:
        threads = self.tables.threads

        def build() -> Select[Any]:
            order_column, tie = threads.c[order_by], threads.c.id
            query = (
                select(*self._columns(threads, THREAD_COLUMNS))
                .where(*self._thread_filters(by_resource, metadata_keys, archived))
                .order_by(*((order_column.desc(), tie.desc()) if descending else (order_column, tie)))
            )
            if paged:
                query = query.limit(bindparam("limit")).offset(bindparam("offset"))
            return query

        key = ("thread_list", by_resource, metadata_keys, order_by, descending, paged, archived)
        return self._get_entities(key, "thread", build)

    def thread_count(
        self, *, by_resource: bool, metadata_keys: int, archived: bool | None = None
    ) -> Compiled:
        threads = self.tables.threads

        def build() -> ClauseElement:
            return (
                select(func.count())
                .select_from(threads)
                .where(*self._thread_filters(by_resource, metadata_keys, archived))
            )

        return self._get(("thread_count", by_resource, metadata_keys, archived), build)

    def thread_update(self, *, title: bool, archived: bool | None = None) -> Compiled:
        """Update ``updated_at``, the title if ``title``, and set (True) or clear (False) ``archived_at``.

        Archiving an archived thread keeps its first ``archived_at``.
        """
        threads = self.tables.threads

        def build() -> ClauseElement:
            # max() because a concurrent message save may have committed a later
            # time after this call took its timestamp; updated_at never goes back.
            values: dict[str, Any] = {"updated_at": func.max(threads.c.updated_at, bindparam("updated_at"))}
            if title:
                values["title"] = bindparam("title")
            if archived is not None:
                values["archived_at"] = (
                    func.coalesce(threads.c.archived_at, bindparam("archived_at")) if archived else null()
                )
            return update(threads).where(threads.c.id == bindparam("id")).values(values)

        return self._get(("thread_update", title, archived), build)

    def thread_delete(self) -> list[Compiled]:
        """Delete a thread, its messages and all their metadata, in this order."""
        threads, messages, entries = self.tables.threads, self.tables.messages, self.tables.entries

        def message_entries() -> ClauseElement:
            return delete(entries).where(
                entries.c.entity_type == literal_column("'message'"),
                entries.c.entity_id.in_(select(messages.c.id).where(messages.c.thread_id == bindparam("id"))),
            )

        def thread_messages() -> ClauseElement:
            return delete(messages).where(messages.c.thread_id == bindparam("id"))

        def thread_entries() -> ClauseElement:
            return delete(entries).where(
                entries.c.entity_type == literal_column("'thread'"),
                entries.c.entity_id == bindparam("id"),
            )

        def thread() -> ClauseElement:
            return delete(threads).where(threads.c.id == bindparam("id"))

        return [
            self._get(("thread_delete", "message_entries"), message_entries),
            self._get(("thread_delete", "messages"), thread_messages),
            self._get(("thread_delete", "entries"), thread_entries),
            self._get(("thread_delete", "thread"), thread),
        ]

    def touch_threads(self, count: int) -> Compiled:
        """Raise ``updated_at`` of ``count`` threads to at least a given time."""
        threads = self.tables.threads

        def build() -> ClauseElement:
            return (
                update(threads)
                .where(threads.c.id.in_(_ids(count)))
                .values(updated_at=func.max(threads.c.updated_at, bindparam("updated_at")))
            )

        return self._get(("touch_threads", count), build)

    def touch_threads_of_messages(self, count: int) -> Compiled:
        """Raise ``updated_at`` of the threads that contain ``count`` messages."""
        threads, messages = self.tables.threads, self.tables.messages

        def build() -> ClauseElement:
            owners = select(messages.c.thread_id).where(messages.c.id.in_(_ids(count)))
            return (
                update(threads)
                .where(threads.c.id.in_(owners))
                .values(updated_at=func.max(threads.c.updated_at, bindparam("updated_at")))
            )

        return self._get(("touch_threads_of_messages", count), build)

    def touch_thread_to_message(self) -> Compiled:
        """Raise ``updated_at`` of a message's thread to at least the message's ``created_at``.

        A message moved into a thread may have been created after the time
        the move was stamped with, for example with a ``created_at`` in the
        future.
        """
        threads, messages = self.tables.threads, self.tables.messages

        def build() -> ClauseElement:
            moved = messages.alias("moved")
            created = select(moved.c.created_at).where(moved.c.id == bindparam("id")).scalar_subquery()
            owner = select(moved.c.thread_id).where(moved.c.id == bindparam("id")).scalar_subquery()
            return (
                update(threads)
                .where(threads.c.id == owner)
                .values(updated_at=func.max(threads.c.updated_at, created))
            )

        return self._get(("touch_thread_to_message",), build)

    # -- messages ------------------------------------------------------

    def message_upsert(self, count: int) -> Compiled:
        """Insert or replace ``count`` messages in one multi-row statement."""
        messages = self.tables.messages

        def build() -> ClauseElement:
            stmt = insert(messages).values(_row_binds(MESSAGE_COLUMNS, count))
            return stmt.on_conflict_do_update(
                index_elements=[messages.c.id],
                set_={name: stmt.excluded[name] for name in MESSAGE_COLUMNS[1:]},
            )

        key = ("message_upsert", count)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        compiled = self._get(key, build)
        # Checked once per shape: the callers bind flattened rows.
        expected = tuple(f"{name}_{row}" for row in range(count) for name in MESSAGE_COLUMNS)
        assert compiled.names == expected, "message rows must bind in row, then column order"
        return compiled

    def message_get_many(self, count: int) -> Compiled:
        messages = self.tables.messages

        def build() -> Select[Any]:
            return select(*self._columns(messages, MESSAGE_COLUMNS)).where(messages.c.id.in_(_ids(count)))

        return self._get_entities(("message_get_many", count), "message", build)

    def _message_filters(
        self, threads: int, by_resource: bool, start: bool, end: bool
    ) -> list[ColumnElement[bool]]:
        messages = self.tables.messages
        filters: list[ColumnElement[bool]] = [messages.c.thread_id.in_(_ids(threads, "thread"))]
        if by_resource:
            filters.append(messages.c.resource_id == bindparam("resource_id"))
        if start:
            filters.append(messages.c.created_at >= bindparam("start"))
        if end:
            filters.append(messages.c.created_at <= bindparam("end"))
        return filters

    def _message_order(self, descending: bool) -> tuple[Any, Any]:
        messages = self.tables.messages
        if descending:
            return messages.c.created_at.desc(), messages.c.id.desc()
        return messages.c.created_at, messages.c.id

    def message_list(
        self, *, threads: int, by_resource: bool, start: bool, end: bool, descending: bool, paged: bool
    ) -> Compiled:
        messages = self.tables.messages

        def build() -> Select[Any]:
            query = (
                select(*self._columns(messages, MESSAGE_COLUMNS))
                .where(*self._message_filters(threads, by_resource, start, end))
                .order_by(*self._message_order(descending))
            )
            if paged:
                query = query.limit(bindparam("limit")).offset(bindparam("offset"))
            return query

        key = ("message_list", threads, by_resource, start, end, descending, paged)
        return self._get_entities(key, "message", build)

    def message_count(self, *, threads: int, by_resource: bool, start: bool, end: bool) -> Compiled:
        messages = self.tables.messages

        def build() -> ClauseElement:
            return (
                select(func.count())
                .select_from(messages)
                .where(*self._message_filters(threads, by_resource, start, end))
            )

        return self._get(("message_count", threads, by_resource, start, end), build)

    def message_window(self, *, before: bool, by_resource: bool) -> Compiled:
        """Select the messages next to a target message, in the target's own thread.

        ``before`` selects the target and the messages before it, newest
        first; otherwise the messages after it, oldest first. Both are
        limited by ``limit``.
        """
        messages = self.tables.messages

        def build() -> Select[Any]:
            target = messages.alias("target")

            def of_target(column: str) -> Any:
                return select(target.c[column]).where(target.c.id == bindparam("target")).scalar_subquery()

            created = of_target("created_at")
            if before:
                position = or_(
                    messages.c.created_at < created,
                    and_(messages.c.created_at == created, messages.c.id <= bindparam("target")),
                )
            else:
                position = or_(
                    messages.c.created_at > created,
                    and_(messages.c.created_at == created, messages.c.id > bindparam("target")),
                )
            query = (
                select(*self._columns(messages, MESSAGE_COLUMNS))
                .where(messages.c.thread_id == of_target("thread_id"), position)
                .order_by(*self._message_order(before))
                .limit(bindparam("limit"))
                .offset(bindparam("offset"))
            )
            if by_resource:
                query = query.where(messages.c.resource_id == bindparam("resource_id"))
            return query

        return self._get_entities(("message_window", before, by_resource), "message", build)

    def message_last(self, *, by_resource: bool) -> Compiled:
        messages = self.tables.messages

        def build() -> Select[Any]:
            query = (
                select(*self._columns(messages, MESSAGE_COLUMNS))
                .where(messages.c.thread_id == bindparam("thread"))
                .order_by(*self._message_order(True))
                .limit(bindparam("limit"))
                .offset(bindparam("offset"))
            )
            if by_resource:
                query = query.where(messages.c.resource_id == bindparam("resource_id"))
            return query

        return self._get_entities(("message_last", by_resource), "message", build)

    def message_update(self, fields: tuple[str, ...]) -> Compiled:
        messages = self.tables.messages

        def build() -> ClauseElement:
            return (
                update(messages)
                .where(messages.c.id == bindparam("id"))
                .values({name: bindparam(name) for name in fields})
            )

        return self._get(("message_update", fields), build)

    def message_delete(self, count: int) -> Compiled:
        messages = self.tables.messages

        def build() -> ClauseElement:
            return delete(messages).where(messages.c.id.in_(_ids(count)))

        return self._get(("message_delete", count), build)

    # -- metadata entries ----------------------------------------------

    def entries_upsert(self, count: int) -> Compiled:
        entries = self.tables.entries

        def build() -> ClauseElement:
            stmt = insert(entries).values(_row_binds(ENTRY_COLUMNS, count))
            return stmt.on_conflict_do_update(
                index_elements=[entries.c.entity_type, entries.c.entity_id, entries.c.key],
                set_={"value": stmt.excluded.value},
            )

        key = ("entries_upsert", count)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        compiled = self._get(key, build)
        # Checked once per shape: the callers bind flattened rows.
        expected = tuple(f"{name}_{row}" for row in range(count) for name in ENTRY_COLUMNS)
        assert compiled.names == expected, "metadata rows must bind in row, then column order"
        return compiled

    def entries_get(self) -> Compiled:
        entries = self.tables.entries

        def build() -> ClauseElement:
            return select(entries.c.key, entries.c.value).where(
                entries.c.entity_type == bindparam("entity_type"),
                entries.c.entity_id == bindparam("entity_id"),
            )

        return self._get(("entries_get",), build)

    def entries_delete_keys(self, count: int) -> Compiled:
        entries = self.tables.entries

        def build() -> ClauseElement:
            return delete(entries).where(
                entries.c.entity_type == bindparam("entity_type"),
                entries.c.entity_id == bindparam("entity_id"),
                entries.c.key.in_(_ids(count, "key")),
            )

        return self._get(("entries_delete_keys", count), build)

    def entries_delete_entities(self, count: int) -> Compiled:
        entries = self.tables.entries

        def build() -> ClauseElement:
            return delete(entries).where(
                entries.c.entity_type == bindparam("entity_type"),
                entries.c.entity_id.in_(_ids(count)),
            )

        return self._get(("entries_delete_entities", count), build)

    def touch_entity(self, entity_type: str) -> Compiled:
        """Raise ``updated_at`` of one thread or resource to at least a given time."""
        table = self.tables.for_entity(entity_type)

        def build() -> ClauseElement:
            return (
                update(table)
                .where(table.c.id == bindparam("id"))
                .values(updated_at=func.max(table.c.updated_at, bindparam("updated_at")))
            )

        return self._get(("touch_entity", entity_type), build)

    # -- resources -----------------------------------------------------

    def resource_upsert(self, *, working_memory: bool, replace: bool) -> Compiled:
        """Insert a resource, or update it when it exists.

        ``replace`` overwrites every column (``save``); otherwise the
        existing ``created_at`` is kept and ``working_memory`` changes only
        when ``working_memory`` is true (``update``).
        """
        resources = self.tables.resources

        def build() -> ClauseElement:
            stmt = insert(resources).values({name: bindparam(name) for name in RESOURCE_COLUMNS})
            changed = ["updated_at"]
            if replace:
                changed = list(RESOURCE_COLUMNS[1:])
            elif working_memory:
                changed.append("working_memory")
            return stmt.on_conflict_do_update(
                index_elements=[resources.c.id],
                set_={name: stmt.excluded[name] for name in changed},
            )

        return self._get(("resource_upsert", working_memory, replace), build)

    def resource_get(self) -> Compiled:
        resources = self.tables.resources

        def build() -> Select[Any]:
            return select(*self._columns(resources, RESOURCE_COLUMNS)).where(
                resources.c.id == bindparam("id")
            )

        return self._get_entities(("resource_get",), "resource", build)

    def resource_delete(self) -> Compiled:
        resources = self.tables.resources

        def build() -> ClauseElement:
            return delete(resources).where(resources.c.id == bindparam("id"))

        return self._get(("resource_delete",), build)
