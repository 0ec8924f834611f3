"""Alembic migrations of the d1store schema, shipped inside the package.

The revision files are in ``d1store/migrations/versions``. Use the Python
API (:func:`upgrade`, :func:`downgrade`, :func:`current`, :func:`history`,
:func:`stamp`), the ``d1store db`` command group
(:mod:`d1store.migrations.cli`), or ``alembic`` with this repository's
``alembic.ini``.

The API is imported on first use, because Alembic takes about 0.3 s to
import and ``store.init()`` needs only :mod:`d1store.migrations.version_table`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from d1store.migrations.api import (
        RevisionInfo,
        current,
        downgrade,
        history,
        make_config,
        stamp,
        upgrade,
    )

__all__ = ["RevisionInfo", "current", "downgrade", "history", "make_config", "stamp", "upgrade"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("d1store.migrations.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
