"""Python API of d1store's Alembic migrations, usable without this repository.

Each function takes the database as a :class:`~d1store.D1Store` (its
backend is reused: D1 base URL, retries), a database URL, or ``None`` for
the configuration in the environment (``D1STORE_URL``, the
``CLOUDFLARE_*`` variables, else ``sqlite:///d1store.db``).
``table_prefix`` defaults to the store's prefix, else
``D1STORE_TABLE_PREFIX``, else no prefix.

On D1, each revision is one batch request; on SQLite, one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory

from d1store.migrations.environment import APPLIED_KEY, PREFIX_KEY, TARGET_KEY
from d1store.schema import validate_prefix
from d1store.store import D1Store

__all__ = ["RevisionInfo", "Target", "current", "downgrade", "history", "make_config", "stamp", "upgrade"]

#: A database to migrate: a store, a URL, or ``None`` for the environment's configuration.
Target = D1Store | str | sqlalchemy.URL | None

#: Where the revision files and ``env.py`` of the installed package live.
SCRIPT_LOCATION = "d1store:migrations"


@dataclass(frozen=True)
class RevisionInfo:
    """One revision: its id, the revision it follows, and the first line of its docstring."""

    revision: str
    down_revision: str | None
    message: str


def make_config(target: Target = None, *, table_prefix: str | None = None) -> Config:
    """Build an Alembic ``Config`` for the packaged revisions, ``target`` and ``table_prefix``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    # Without it, Alembic 1.16+ warns when version_locations is set.
    config.set_main_option("path_separator", "os")
    if target is not None:
        config.attributes[TARGET_KEY] = target
    if table_prefix is not None:
        config.attributes[PREFIX_KEY] = validate_prefix(table_prefix)
    return config


def upgrade(target: Target = None, revision: str = "head", *, table_prefix: str | None = None) -> list[str]:
    """Apply the revisions up to ``revision`` and return the ids applied, in order."""
    config = make_config(target, table_prefix=table_prefix)
    applied: list[str] = []
    config.attributes[APPLIED_KEY] = applied
    command.upgrade(config, revision)
    return applied


def downgrade(target: Target, revision: str, *, table_prefix: str | None = None) -> list[str]:
    """Undo the revisions above ``revision`` and return the ids undone, in order.

    ``"base"`` undoes every revision and also drops the version table, so
    that no table or index of the prefix is left.
    """
    config = make_config(target, table_prefix=table_prefix)
    undone: list[str] = []
    config.attributes[APPLIED_KEY] = undone
    command.downgrade(config, revision)
    return undone


def stamp(target: Target, revision: str, *, table_prefix: str | None = None) -> None:
    """Record ``revision`` in the version table without running any revision."""
    command.stamp(make_config(target, table_prefix=table_prefix), revision)


def current(target: Target = None, *, table_prefix: str | None = None) -> tuple[str, ...]:
    """Return the revisions the database is at: empty for an unmigrated database."""
    config = make_config(target, table_prefix=table_prefix)
    script = ScriptDirectory.from_config(config)
    heads: list[str] = []

    def read_heads(revisions: Sequence[str], context: Any) -> list[Any]:
        heads.extend(revisions)
        return []

    with EnvironmentContext(config, script, fn=read_heads, dont_mutate=True):
        script.run_env()
    return tuple(heads)


def history() -> list[RevisionInfo]:
    """Return every packaged revision, newest first."""
    script = ScriptDirectory.from_config(make_config())
    revisions = []
    for item in script.walk_revisions():
        down = item.down_revision
        revisions.append(
            RevisionInfo(
                revision=item.revision,
                down_revision=down if isinstance(down, str) or down is None else ",".join(down),
                message=(item.doc or "").strip().splitlines()[0] if item.doc else "",
            )
        )
    return revisions
