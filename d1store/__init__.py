"""Conversation memory for AI agents, stored in Cloudflare D1 or SQLite."""

from d1store.errors import (
    BackendError,
    D1StoreError,
    NotFoundError,
    RequestTooLargeError,
    RowTooLargeError,
    SchemaNotInitializedError,
    ValidationError,
)
from d1store.models import Include, Message, Page, Resource, Thread
from d1store.session import Session
from d1store.store import D1Store

__all__ = [
    "BackendError",
    "D1Store",
    "D1StoreError",
    "Include",
    "Message",
    "NotFoundError",
    "Page",
    "RequestTooLargeError",
    "Resource",
    "RowTooLargeError",
    "SchemaNotInitializedError",
    "Session",
    "Thread",
    "ValidationError",
]

__version__ = "0.1.0"
