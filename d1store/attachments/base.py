"""The interface every attachment store implements."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

__all__ = ["AttachmentStore", "StoredObject"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object in an attachment store: its key, size in bytes and last modification time (UTC).

    ``media_type`` is ``None`` when the store does not keep it (the
    directory store) or does not report it (an S3 listing).
    """

    key: str
    size: int
    modified_at: datetime
    media_type: str | None = None


class AttachmentStore(abc.ABC):
    """Binary objects addressed by key, kept outside the database.

    Keys are ``/``-separated paths such as ``sha256/<hex>``. Writing a key
    that exists replaces its object. Implementations raise
    :class:`~d1store.attachments.AttachmentNotFoundError` for a missing
    object in :meth:`get` and wrap every other storage failure in
    :class:`~d1store.attachments.AttachmentError`.
    """

    @abc.abstractmethod
    def put(self, key: str, data: bytes, media_type: str) -> None:
        """Store ``data`` under ``key``, replacing any object there."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes stored under ``key``."""

    @abc.abstractmethod
    def stat(self, key: str) -> StoredObject | None:
        """Return the object's size and modification time, or ``None`` if it is missing."""

    @abc.abstractmethod
    def touch(self, key: str) -> bool:
        """Set the object's modification time to now; return ``False`` if it is missing.

        Garbage collection spares objects modified within its grace period,
        so a save that reuses an existing object touches it first.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object under ``key``; a missing object is not an error."""

    @abc.abstractmethod
    def iter_objects(self) -> Iterator[StoredObject]:
        """Yield every object in the store, in no particular order."""

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``."""
        return self.stat(key) is not None

    def iter_keys(self) -> Iterator[str]:
        """Yield the key of every object in the store."""
        for item in self.iter_objects():
            yield item.key
