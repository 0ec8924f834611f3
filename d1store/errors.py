"""Exceptions raised by d1store.

Every exception the library raises on purpose derives from
:class:`D1StoreError`::

    D1StoreError
    ├── ValidationError            bad input, rejected before anything is sent
    │   ├── RowTooLargeError       a row over the size limit (an update's whole row
    │   │                          is measured inside its atomic batch)
    │   └── RequestTooLargeError   one call or session too large for one request
    ├── NotFoundError              the thread, message or resource does not exist
    ├── SchemaNotInitializedError  a table is missing: run init() or Alembic
    ├── BackendError               the database failed, with its own message
    ├── attachments.AttachmentError            the attachment store failed
    │   └── attachments.AttachmentNotFoundError  a referenced object is missing
    └── local_d1.LocalD1Error      the local D1 server cannot be installed or run

``ValidationError`` is also a :class:`ValueError` and ``NotFoundError`` a
:class:`LookupError`, so code written against the built-in exceptions keeps
working.

Building a model directly (``Thread(...)``, ``Message(...)``) with invalid
fields raises pydantic's ``ValidationError``, which is also a ``ValueError``;
the repositories raise :class:`ValidationError` for the same fields given as
mappings.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "D1StoreError",
    "NotFoundError",
    "RequestTooLargeError",
    "RowTooLargeError",
    "SchemaNotInitializedError",
    "ValidationError",
]


class D1StoreError(Exception):
    """Base class of every error raised by d1store."""


class ValidationError(D1StoreError, ValueError):
    """Invalid input: names the field, the value and what to do."""


class RowTooLargeError(ValidationError):
    """A row larger than the configured maximum, counted in UTF-8 bytes."""

    def __init__(self, entity_id: str, field: str, size: int, limit: int) -> None:
        self.entity_id = entity_id
        self.field = field
        self.size = size
        self.limit = limit
        super().__init__(
            f"row {entity_id!r} is {size:,} bytes (largest field: {field!r}), over "
            f"the limit of {limit:,} bytes per row; store large payloads outside "
            "the database or raise max_row_bytes if your database allows it"
        )


class RequestTooLargeError(ValidationError):
    """A single call or session whose writes do not fit one D1 request."""

    def __init__(self, size: int, limit: int, measured: str = "request body") -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{measured} is {size:,}, over the limit of {limit:,} for one atomic request; "
            "split the work into several calls or sessions"
        )


class NotFoundError(D1StoreError, LookupError):
    """The named entity does not exist."""

    def __init__(self, entity_type: str, entity_id: str) -> None:
        self.entity_type = entity_type
        self.entity_id = entity_id
        super().__init__(f"{entity_type} {entity_id!r} not found")


class SchemaNotInitializedError(D1StoreError):
    """A table of the store is missing from the database."""

    def __init__(self, table: str) -> None:
        self.table = table
        super().__init__(
            f"table {table!r} does not exist: create the schema with store.init() "
            "or run `alembic upgrade head` (or `d1store db upgrade`)"
        )


class BackendError(D1StoreError):
    """A failure reported by the database or on the way to it.

    ``message`` is the database's own text (for D1, its ``D1_ERROR: ...``
    message), ``attempts`` how many times the request was sent, and
    ``transient`` whether the failure was of a kind that is retried.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 1,
        transient: bool = False,
        status: int | None = None,
    ) -> None:
        self.message = message
        self.attempts = attempts
        self.transient = transient
        self.status = status
        text = message
        if transient:
            text = f"{message} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})"
        super().__init__(text)
