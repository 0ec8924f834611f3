"""Helpers for testing applications that use d1store.

``local_d1()`` runs a local Cloudflare D1 server (workerd through Miniflare)
for the duration of a ``with`` block. The pytest fixture ``d1store_local_d1``
lives in ``d1store.testing.pytest_plugin``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from d1store.local_d1 import LocalD1Error, LocalD1Server

__all__ = ["LocalD1Error", "LocalD1Server", "local_d1"]


@contextmanager
def local_d1(*, port: int = 0, persist: str | Path | None = None) -> Iterator[LocalD1Server]:
    """Start a local D1 server, yield it, and stop it on exit.

    ``port=0`` picks a free port. ``persist`` is a directory that keeps the
    database across runs, and ``None`` keeps it in memory. Connect with
    ``server.url`` or with ``server.base_url`` and ``server.api_token``.
    """
    server = LocalD1Server()
    server.start(port=port, persist=persist)
    try:
        yield server
    finally:
        server.stop()
