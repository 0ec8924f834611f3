"""Moving payloads between message content and the attachment store."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Generic, Literal, TypeVar

from d1store.attachments.base import AttachmentStore
from d1store.attachments.errors import AttachmentError, AttachmentNotFoundError
from d1store.attachments.offload import Extraction, extract
from d1store.attachments.reference import MARKER, AttachmentRef, find_references, parse_reference, substitute
from d1store.errors import ValidationError
from d1store.models import Message

__all__ = ["DEFAULT_THRESHOLD", "AttachmentCodec", "Mode", "OffloadPlan"]

logger = logging.getLogger(__name__)

#: Payloads of at least this many characters of base64 text are offloaded by default.
DEFAULT_THRESHOLD = 64 * 1024

Mode = Literal["inline", "reference"]
T = TypeVar("T")


@dataclass
class OffloadPlan(Generic[T]):
    """Content rewritten with references, and the uploads that must precede the database write.

    ``stored`` is what goes into the database and ``returned`` what the
    caller gets back: the original content in ``inline`` mode, the
    references in ``reference`` mode.
    """

    stored: list[T]
    returned: list[T]
    codec: AttachmentCodec
    extractions: list[tuple[str, Extraction]] = field(default_factory=list)

    def upload(self) -> None:
        """Upload every new payload and touch every reused object, before the database write.

        Raises :class:`AttachmentNotFoundError` for a reference in the input
        whose object is missing, and :class:`AttachmentError` when the store
        fails. Nothing has been written to the database at that point.
        """
        done: set[str] = set()
        for message_id, extraction in self.extractions:
            for digest, (data, media_type) in extraction.payloads.items():
                key = f"sha256/{digest}"
                if key not in done:
                    self.codec.save_object(key, data, media_type)
                    done.add(key)
            for key, reference in extraction.existing.items():
                if key not in done:
                    if not self.codec.store.touch(key):
                        raise AttachmentNotFoundError(str(reference), message_id)
                    done.add(key)


class AttachmentCodec:
    """Offloads large inline payloads on save and resolves references on read.

    ``mode="inline"`` (the default) gives back the original content on
    every read; ``mode="reference"`` leaves references in place for callers
    that stream the files themselves with :meth:`open`.
    """

    def __init__(self, store: AttachmentStore, *, threshold: int = DEFAULT_THRESHOLD, mode: str = "inline"):
        if not isinstance(store, AttachmentStore):
            raise ValidationError(
                f"invalid attachments {store!r:.80}: pass an AttachmentStore such as "
                "DirectoryAttachmentStore(path) or S3AttachmentStore(bucket)"
            )
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ValidationError(
                f"invalid attachment_threshold {threshold!r}: use a positive number of characters"
            )
        if mode not in ("inline", "reference"):
            raise ValidationError(f"invalid attachment_mode {mode!r}: use 'inline' or 'reference'")
        self.store = store
        self.threshold = threshold
        self.mode: Mode = "inline" if mode == "inline" else "reference"

    def __repr__(self) -> str:
        return f"AttachmentCodec({self.store!r}, threshold={self.threshold}, mode={self.mode!r})"

    # -- saving --------------------------------------------------------

    def offload_messages(self, records: Sequence[Message]) -> OffloadPlan[Message]:
        """Plan the content of ``records`` with large payloads replaced by references."""
        contents = self.offload_contents([(record.id, record.content) for record in records])
        stored = [
            record if new is record.content else record.model_copy(update={"content": new})
            for record, new in zip(records, contents.stored, strict=True)
        ]
        returned = list(records) if self.mode == "inline" else stored
        return OffloadPlan(stored, returned, self, contents.extractions)

    def offload_contents(self, items: Sequence[tuple[str, Any]]) -> OffloadPlan[Any]:
        """Plan each ``(message_id, content)`` with large payloads replaced by references."""
        stored = []
        extractions = []
        for message_id, content in items:
            extraction = Extraction(self.threshold)
            stored.append(extract(content, extraction))
            if extraction.payloads or extraction.existing:
                extractions.append((message_id, extraction))
        returned = [content for _, content in items] if self.mode == "inline" else stored
        return OffloadPlan(stored, returned, self, extractions)

    def save_object(self, key: str, data: bytes, media_type: str) -> None:
        """Store ``data`` under ``key`` unless it is there already, in which case touch it."""
        if self.store.touch(key):
            logger.debug("attachment %s already stored (%d bytes)", key, len(data))
            return
        self.store.put(key, data, media_type)
        logger.debug("attachment %s uploaded (%d bytes, %s)", key, len(data), media_type)

    # -- reading -------------------------------------------------------

    def restore(self, messages: list[Message]) -> list[Message]:
        """Return ``messages`` with references replaced by the original inline content.

        In ``reference`` mode the messages are returned unchanged. Each
        object is fetched once per call, however many messages share it.
        """
        if self.mode == "reference" or not messages:
            return messages
        owners: dict[str, tuple[str, AttachmentRef]] = {}
        for message in messages:
            _collect(message.content, message.id, owners)
        if not owners:
            return messages
        payloads = {
            key: base64.b64encode(self._fetch(reference, message_id)).decode("ascii")
            for key, (message_id, reference) in owners.items()
        }
        return [
            message.model_copy(update={"content": _expand(message.content, payloads)})
            if _has_marker(message.content)
            else message
            for message in messages
        ]

    def read(self, reference: str | AttachmentRef) -> bytes:
        """Return the bytes that a reference points to, checked against its hash."""
        parsed = reference if isinstance(reference, AttachmentRef) else parse_reference(reference)
        return self._fetch(parsed, None)

    def open(self, reference: str | AttachmentRef) -> BinaryIO:
        """Return a binary file object with the bytes that a reference points to."""
        return io.BytesIO(self.read(reference))

    def references(self, content: Any) -> list[AttachmentRef]:
        """Return the references inside ``content``, each once, in order of appearance."""
        found: dict[str, tuple[str, AttachmentRef]] = {}
        _collect(content, "", found)
        return [reference for _, reference in found.values()]

    def _fetch(self, reference: AttachmentRef, message_id: str | None) -> bytes:
        try:
            data = self.store.get(reference.key)
        except AttachmentNotFoundError:
            raise AttachmentNotFoundError(str(reference), message_id) from None
        if len(data) != reference.size or hashlib.sha256(data).hexdigest() != reference.sha256:
            raise AttachmentError(
                f"attachment {reference.key} is corrupt: expected {reference.size} bytes with that "
                f"SHA-256, got {len(data)} bytes with SHA-256 {hashlib.sha256(data).hexdigest()}; "
                "restore the object from a backup"
            )
        return data


def _has_marker(content: Any) -> bool:
    if isinstance(content, str):
        return MARKER in content
    if isinstance(content, list):
        return any(_has_marker(item) for item in content)
    if isinstance(content, dict):
        return any(_has_marker(item) for item in content.values())
    return False


def _collect(content: Any, message_id: str, owners: dict[str, tuple[str, AttachmentRef]]) -> None:
    if isinstance(content, str):
        for _, reference in find_references(content):
            owners.setdefault(reference.key, (message_id, reference))
    elif isinstance(content, list):
        for item in content:
            _collect(item, message_id, owners)
    elif isinstance(content, dict):
        for item in content.values():
            _collect(item, message_id, owners)


def _expand(content: Any, payloads: dict[str, str]) -> Any:
    if isinstance(content, str):
        texts = {
            match.group(0): reference.expand(payloads[reference.key])
            for match, reference in find_references(content)
        }
        return substitute(content, texts) if texts else content
    if isinstance(content, list):
        return [_expand(item, payloads) for item in content]
    if isinstance(content, dict):
        return {key: _expand(item, payloads) for key, item in content.items()}
    return content
