"""Large attachments: inline payloads kept outside the database.

D1 rejects rows over 2,000,000 bytes, and agent messages often carry images
or files inline as base64. With an attachment store configured,
``D1Store(..., attachments=store)`` uploads each large payload under its
SHA-256 hash before the database write and stores a short reference in the
message instead. Reads put the original content back::

    from d1store import D1Store
    from d1store.attachments import DirectoryAttachmentStore

    store = D1Store("sqlite:///memory.db", attachments=DirectoryAttachmentStore("attachments"))

Deleting messages never deletes attachments; :func:`collect_garbage` (or
``d1store attachments gc``) removes the ones no message references.
"""

from __future__ import annotations

import os
from typing import Any

from d1store.attachments.base import AttachmentStore, StoredObject
from d1store.attachments.codec import DEFAULT_THRESHOLD, AttachmentCodec, OffloadPlan
from d1store.attachments.directory import DirectoryAttachmentStore
from d1store.attachments.errors import AttachmentError, AttachmentNotFoundError
from d1store.attachments.gc import DEFAULT_GRACE, GarbageReport, collect_garbage, referenced_keys
from d1store.attachments.reference import MARKER, AttachmentRef, parse_reference
from d1store.attachments.s3 import S3AttachmentStore

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_THRESHOLD",
    "MARKER",
    "AttachmentCodec",
    "AttachmentError",
    "AttachmentNotFoundError",
    "AttachmentRef",
    "AttachmentStore",
    "DirectoryAttachmentStore",
    "GarbageReport",
    "OffloadPlan",
    "S3AttachmentStore",
    "StoredObject",
    "collect_garbage",
    "make_codec",
    "parse_reference",
    "referenced_keys",
]


def make_codec(
    attachments: AttachmentStore | str | os.PathLike[str] | None, threshold: int, mode: str
) -> AttachmentCodec | None:
    """Return the codec for a store's ``attachments`` option, or ``None`` when it is not set.

    A path is taken as a :class:`DirectoryAttachmentStore`.
    """
    if attachments is None:
        return None
    store: Any = attachments
    if isinstance(attachments, (str, os.PathLike)):
        store = DirectoryAttachmentStore(attachments)
    return AttachmentCodec(store, threshold=threshold, mode=mode)
