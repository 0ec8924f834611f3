"""pytest plugin with a session-scoped local D1 server fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from d1store.local_d1 import LocalD1Server
from d1store.testing import local_d1


@pytest.fixture(scope="session")
def d1store_local_d1() -> Iterator[LocalD1Server]:
    """Yield a started in-memory local D1 server shared by the whole test session.

    Tests share its database, so give tables unique names or drop them when done.
    """
    with local_d1() as server:
        yield server
