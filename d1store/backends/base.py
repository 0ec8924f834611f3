"""The interface between the data mapper and its backends.

A backend runs a list of SQL statements as one atomic unit: one transaction
on SQLite, one ``batch`` request on D1. The repositories build the same
statements for both, so behaviour differs only where a backend declares it
through :class:`Limits` or its attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Dialect

from d1store.errors import BackendError, RequestTooLargeError

__all__ = ["Backend", "Limits", "Result", "Statement"]


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with ``?`` placeholders and its positional values."""

    sql: str
    params: tuple[Any, ...] = ()


@dataclass(slots=True)
class Result:
    """Rows returned by one statement, their column names, and the number of rows it changed."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    changes: int = 0
    columns: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits applied identically on every backend.

    The defaults are Cloudflare D1's documented limits, so that a test on
    SQLite fails where D1 would reject the same call.
    """

    max_params: int = 100
    max_sql_bytes: int = 100_000
    max_row_bytes: int = 2_000_000
    # D1 rejects a compound SELECT with more than a handful of terms
    # ("too many terms in compound SELECT"); 5 was measured on the local engine.
    max_compound_terms: int = 5
    max_request_bytes: int = 50_000_000

    def check(self, statements: Sequence[Statement]) -> None:
        """Raise :class:`BackendError` for a statement that D1 would reject.

        D1 rejects more than 100 bound parameters ("too many SQL variables")
        and more than 100,000 bytes of SQL ("statement too long"). SQLite
        accepts both, so this check makes a test on SQLite fail where D1
        would. A list whose text and string values add up to more than
        ``max_request_bytes`` raises :class:`RequestTooLargeError`, as it
        would on D1, where it is one request body.
        """
        total = 0
        for index, statement in enumerate(statements):
            if len(statement.params) > self.max_params:
                raise BackendError(
                    f"too many SQL variables: statement {index} binds {len(statement.params)} "
                    f"parameters, over the limit of {self.max_params}"
                )
            sql_size = len(statement.sql)
            if sql_size * 4 > self.max_sql_bytes and len(statement.sql.encode()) > self.max_sql_bytes:
                raise BackendError(
                    f"statement too long: statement {index} has {len(statement.sql.encode()):,} bytes "
                    f"of SQL, over the limit of {self.max_sql_bytes:,}"
                )
            total += sql_size
            # filter() and map() keep this per-value loop in C: it runs for every bound value.
            strings = list(filter(str.__instancecheck__, statement.params))
            total += sum(map(len, strings)) + 8 * (len(statement.params) - len(strings))
        # Characters, not bytes: an estimate that the D1 backend refines on
        # the exact request body.
        if total > self.max_request_bytes:
            raise RequestTooLargeError(total, self.max_request_bytes, "request size in characters")


class Backend(Protocol):
    """A database that runs statement lists atomically."""

    #: ``"sqlite"`` or ``"cloudflare_d1"``.
    name: str
    #: The SQLAlchemy dialect the statements are compiled for.
    dialect: Dialect
    limits: Limits
    #: Requests sent to the database so far (HTTP requests on D1,
    #: transactions on SQLite), for tests and benchmarks.
    request_count: int

    def execute(self, statements: Sequence[Statement], *, write: bool) -> list[Result]:
        """Run ``statements`` atomically and return one result per statement.

        Either every statement takes effect or none does. Raises
        :class:`d1store.errors.BackendError` with the database's message.
        """
        ...

    def close(self) -> None:
        """Release connections and clients."""
        ...

    def describe(self) -> str:
        """Return a one-line description with any secret masked."""
        ...
