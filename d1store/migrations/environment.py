"""The Alembic environment of d1store: which database, which prefix, which connection.

Both ``env.py`` scripts (the package's and the repository's ``alembic/``)
call :func:`run_environment`. The database and table prefix come from, in
order:

1. the Python API or the ``d1store db`` command (``config.attributes``);
2. ``alembic -x url=... -x table_prefix=...``;
3. ``D1STORE_URL``, else ``CLOUDFLARE_ACCOUNT_ID``,
   ``CLOUDFLARE_D1_DATABASE_ID`` and ``CLOUDFLARE_API_TOKEN``, else
   ``sqlite:///d1store.db``; ``D1STORE_TABLE_PREFIX`` for the prefix.

The version table is ``{prefix}alembic_version``, so each prefix of a
database migrates on its own. Revision code reads the prefix with
:func:`table_prefix`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy
from alembic import context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import MetaData, text

from d1store.migrations import d1impl  # noqa: F401  (registers the cloudflare_d1 implementation)
from d1store.migrations.connect import open_connection
from d1store.migrations.version_table import version_table_name
from d1store.schema import build_metadata, validate_prefix
from d1store.store import D1Store, url_from_env

__all__ = [
    "APPLIED_KEY",
    "PREFIX_KEY",
    "TARGET_KEY",
    "Settings",
    "resolve_settings",
    "run_environment",
    "table_prefix",
]

logger = logging.getLogger(__name__)

#: ``config.attributes`` key of the database: a D1Store, a ``sqlalchemy.URL`` or URL text.
TARGET_KEY = "d1store.target"
#: ``config.attributes`` key of the table prefix.
PREFIX_KEY = "d1store.table_prefix"
#: ``config.attributes`` key of a list that collects the revision ids applied or undone.
APPLIED_KEY = "d1store.applied"


@dataclass(frozen=True)
class Settings:
    """The database and table prefix that a migration run uses."""

    target: D1Store | str | sqlalchemy.URL
    prefix: str


def resolve_settings(
    attributes: Mapping[str, Any], x_arguments: Mapping[str, str], environ: Mapping[str, str]
) -> Settings:
    """Return the database and prefix from API attributes, then ``-x`` arguments, then ``environ``."""
    target = attributes.get(TARGET_KEY)
    if target is None:
        target = x_arguments.get("url") or url_from_env(environ)
    prefix = attributes.get(PREFIX_KEY)
    if prefix is None:
        if "table_prefix" in x_arguments:
            prefix = x_arguments["table_prefix"]
        elif isinstance(target, D1Store):
            prefix = target.table_prefix
        else:
            prefix = environ.get("D1STORE_TABLE_PREFIX", "")
    return Settings(target, validate_prefix(prefix))


def table_prefix() -> str:
    """Return the table prefix of the running migration, for revision code."""
    prefix = context.config.attributes.get(PREFIX_KEY)
    if prefix is None:
        raise RuntimeError("no table prefix set: run revisions through d1store's Alembic environment")
    return str(prefix)


def run_environment() -> None:
    """Run the migrations that the current Alembic command requests."""
    config = context.config
    settings = resolve_settings(config.attributes, context.get_x_argument(as_dictionary=True), os.environ)
    config.attributes[PREFIX_KEY] = settings.prefix
    options = _context_options(config, build_metadata(settings.prefix), settings.prefix)

    if context.is_offline_mode():
        context.configure(url=_url_of(settings.target), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return

    with open_connection(settings.target) as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()


def _context_options(config: Config, metadata: MetaData, prefix: str) -> dict[str, Any]:
    version_table = version_table_name(prefix)
    own_tables = set(metadata.tables) | {version_table}

    def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        # Other prefixes share the database: autogenerate must neither
        # compare nor drop their tables.
        return type_ != "table" or name in own_tables

    def on_version_apply(
        *, ctx: MigrationContext, step: MigrationInfo, heads: set[str], run_args: Mapping[str, Any]
    ) -> None:
        applied = config.attributes.get(APPLIED_KEY)
        if isinstance(applied, list) and step.up_revision_id is not None:
            applied.append(step.up_revision_id)
        if not heads:
            _drop_version_table(ctx, version_table)

    return {
        "target_metadata": metadata,
        "version_table": version_table,
        "transaction_per_migration": True,
        "render_as_batch": True,
        "include_name": include_name,
        "on_version_apply": [on_version_apply],
    }


def _drop_version_table(ctx: MigrationContext, name: str) -> None:
    # Alembic online keeps an empty version table at base. Dropping it in
    # the same transaction as the last downgrade leaves no object of the
    # prefix behind.
    quoted = ctx.dialect.identifier_preparer.quote(name)
    ctx.execute(text(f"DROP TABLE IF EXISTS {quoted}"))
    logger.info("dropped version table %s: the database is at base", name)


def _url_of(target: D1Store | str | sqlalchemy.URL) -> str | sqlalchemy.URL:
    if isinstance(target, D1Store):
        # Offline mode needs only the dialect, so no token is involved.
        return "cloudflare_d1://" if target.backend.name == "cloudflare_d1" else "sqlite://"
    return target
