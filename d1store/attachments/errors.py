"""Errors raised while storing or reading attachments."""

from __future__ import annotations

from d1store.errors import D1StoreError

__all__ = ["AttachmentError", "AttachmentNotFoundError"]


class AttachmentError(D1StoreError):
    """The attachment store failed, or returned an object that does not match its reference."""


class AttachmentNotFoundError(AttachmentError, LookupError):
    """A referenced attachment is missing from the attachment store.

    ``reference`` is the reference text (or the object key when no message
    is involved) and ``message_id`` the message whose content contains it.
    """

    def __init__(self, reference: str, message_id: str | None = None) -> None:
        self.reference = reference
        self.message_id = message_id
        owner = f"message {message_id!r} references " if message_id is not None else ""
        super().__init__(
            f"{owner}attachment {reference!r}, which is not in the attachment store; "
            "check that the store is configured with the same directory or bucket and prefix "
            "it was written with"
        )
