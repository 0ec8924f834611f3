"""Validation of object keys."""

from __future__ import annotations

import re
from typing import TypeGuard

from d1store.errors import ValidationError

__all__ = ["check_key", "is_valid_key"]

# Segments start with a letter or digit, so "." and ".." never appear and a
# key cannot leave the directory or prefix it is stored under.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")


def is_valid_key(key: object) -> TypeGuard[str]:
    """Return whether ``key`` is a valid object key."""
    return isinstance(key, str) and len(key) <= 512 and _KEY.fullmatch(key) is not None


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`ValidationError`."""
    if not is_valid_key(key):
        raise ValidationError(
            f"invalid attachment key {key!r:.80}: use up to 512 characters of '/'-separated "
            "segments of letters, digits, '.', '_' and '-', each starting with a letter or digit"
        )
    return key
