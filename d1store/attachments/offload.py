"""Finding inline binary payloads in message content and replacing them by references.

Two positions are recognised:

* a base64 data URL (``data:image/png;base64,...``) anywhere inside any
  string, which covers OpenAI ``image_url`` and ``file_data`` parts,
  AI SDK attachments and Markdown or HTML with inline images;
* a bare base64 string under the key ``data`` or ``image`` of an object,
  which covers Anthropic ``source`` objects, AI SDK and Mastra ``file`` and
  ``image`` parts, OpenAI ``input_audio`` and Gemini ``inline_data``. The
  media type is taken from a sibling ``media_type``, ``mediaType``,
  ``mimeType`` or ``mime_type`` field.

A payload is replaced only when it is at least ``threshold`` characters
long and is canonical base64 (standard alphabet, padded, no whitespace), so
that encoding the decoded bytes again gives back the exact original text.
Anything else stays inline untouched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from d1store.attachments.reference import MARKER, AttachmentRef, Form, find_references

__all__ = ["Extraction", "extract"]

# Media type and parameter names use RFC 6838 token characters; parameter
# values may also be percent-encoded. Other headers stay inline.
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]"
_VALUE = r"[A-Za-z0-9!#$&^_.+%-]"
_DATA_URL = re.compile(
    rf"data:((?:[A-Za-z0-9]{_TOKEN}*/[A-Za-z0-9]{_TOKEN}*)?(?:;{_TOKEN}+={_VALUE}*)*)"
    r";base64,([A-Za-z0-9+/]*={0,2})"
)
_DATA_KEYS = frozenset(("data", "image"))
_TYPE_KEYS = ("media_type", "mediaType", "mimeType", "mime_type")


@dataclass
class Extraction:
    """Payloads taken out of content, and the references that were already in it."""

    threshold: int
    #: Decoded payloads by SHA-256 hex digest, with the media type they were found with.
    payloads: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: References found in the input content, by object key.
    existing: dict[str, AttachmentRef] = field(default_factory=dict)

    def replace(self, text: str, form: Form, type_text: str) -> str | None:
        """Return the reference for a base64 payload, or ``None`` if it must stay inline."""
        data = _decode_canonical(text)
        if data is None:
            return None
        digest = hashlib.sha256(data).hexdigest()
        reference = AttachmentRef(form, type_text, len(data), digest)
        self.payloads.setdefault(digest, (data, reference.media_type))
        return str(reference)


def extract(content: Any, extraction: Extraction) -> Any:
    """Return ``content`` with large payloads replaced by references.

    Unchanged parts are returned as the same objects, so a message without
    payloads costs one walk and no copies.
    """
    if isinstance(content, str):
        return _extract_string(content, extraction)
    if isinstance(content, list):
        items = [extract(item, extraction) for item in content]
        return content if all(new is old for new, old in zip(items, content, strict=True)) else items
    if isinstance(content, dict):
        return _extract_object(content, extraction)
    return content


def _extract_object(content: dict[str, Any], extraction: Extraction) -> dict[str, Any]:
    result: dict[str, Any] = {}
    changed = False
    for key, value in content.items():
        new = None
        if key in _DATA_KEYS and isinstance(value, str) and len(value) >= extraction.threshold:
            new = extraction.replace(value, "base64", _media_type_of(content))
        if new is None:
            new = extract(value, extraction)
        changed = changed or new is not value
        result[key] = new
    return result if changed else content


def _extract_string(text: str, extraction: Extraction) -> str:
    if MARKER in text:
        for _, reference in find_references(text):
            extraction.existing.setdefault(reference.key, reference)
    if len(text) < extraction.threshold or "data:" not in text:
        return text

    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if len(match.group(2)) < extraction.threshold:
            return match.group(0)
        reference = extraction.replace(match.group(2), "data-url", match.group(1))
        if reference is None:
            return match.group(0)
        changed = True
        return reference

    new = _DATA_URL.sub(replace, text)
    return new if changed else text


def _media_type_of(content: dict[str, Any]) -> str:
    for key in _TYPE_KEYS:
        value = content.get(key)
        if isinstance(value, str):
            return value
    return ""


def _decode_canonical(text: str) -> bytes | None:
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    # strict_mode still accepts some non-canonical text (non-zero padding bits).
    if base64.b64encode(data).decode("ascii") != text:
        return None
    return data
