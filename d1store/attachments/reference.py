"""The text that replaces an offloaded payload in a message's content.

A reference has the form::

    d1store-attachment://<form>/<type>/<size>/sha256/<64 lowercase hex digits>

``form`` is ``data-url`` when the reference replaces a whole
``data:<type>;base64,<payload>`` URL, or ``base64`` when it replaces bare
base64 text (the ``data`` field of an image or file part). ``type`` is the
percent-encoded data URL header without its ``;base64`` ending (media
type and parameters, possibly empty), or for ``base64`` the media type
named next to the payload (possibly empty). ``size`` is the decoded size in
bytes and the hash is the SHA-256 of the decoded bytes, which is also the
object's key. The hash comes last and has a fixed length, so a reference
inside longer text ends at a known place whatever text follows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from d1store.errors import ValidationError

__all__ = ["MARKER", "AttachmentRef", "find_references", "parse_reference", "substitute"]

#: The text every reference starts with; garbage collection searches stored content for it.
MARKER = "d1store-attachment://"

Form = Literal["base64", "data-url"]

_PATTERN = re.compile(
    re.escape(MARKER) + r"(base64|data-url)/([A-Za-z0-9%._~-]*)/(0|[1-9][0-9]{0,14})/sha256/([0-9a-f]{64})"
)

#: RFC 2397: a data URL without a media type is text/plain.
_DATA_URL_DEFAULT_TYPE = "text/plain"
_BASE64_DEFAULT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """A parsed reference: what it replaced and which object holds the bytes."""

    form: Form
    type: str
    size: int
    sha256: str

    @property
    def key(self) -> str:
        """Key of the object in the attachment store."""
        return f"sha256/{self.sha256}"

    @property
    def media_type(self) -> str:
        """Media type of the payload, with the usual default when none was given."""
        if self.form == "data-url":
            return self.type.split(";", 1)[0] or _DATA_URL_DEFAULT_TYPE
        return self.type or _BASE64_DEFAULT_TYPE

    def expand(self, payload: str) -> str:
        """Return the inline text this reference replaced, given the object's bytes as base64 text."""
        if self.form == "data-url":
            return f"data:{self.type};base64,{payload}"
        return payload

    def __str__(self) -> str:
        return f"{MARKER}{self.form}/{quote(self.type, safe='')}/{self.size}/sha256/{self.sha256}"


def _from_match(match: re.Match[str]) -> AttachmentRef:
    form: Form = "data-url" if match.group(1) == "data-url" else "base64"
    return AttachmentRef(form, unquote(match.group(2)), int(match.group(3)), match.group(4))


def parse_reference(text: str) -> AttachmentRef:
    """Parse a whole reference string, or raise :class:`~d1store.errors.ValidationError`."""
    match = _PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(
            f"invalid attachment reference {text!r:.120}: expected "
            f"{MARKER}<form>/<type>/<size>/sha256/<64 hex digits>"
        )
    return _from_match(match)


def find_references(text: str) -> Iterator[tuple[re.Match[str], AttachmentRef]]:
    """Yield every reference inside ``text`` with its match, left to right."""
    if MARKER not in text:
        return
    for match in _PATTERN.finditer(text):
        yield match, _from_match(match)


def substitute(text: str, replace: dict[str, str]) -> str:
    """Return ``text`` with each reference replaced by ``replace[reference text]``."""
    return _PATTERN.sub(lambda match: replace[match.group(0)], text)
