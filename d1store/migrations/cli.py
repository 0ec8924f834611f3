"""The ``d1store db`` command group: Alembic migrations of the packaged schema.

Run it standalone with ``python -m d1store.migrations.cli``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from d1store.errors import D1StoreError
from d1store.migrations import api

__all__ = ["db"]

F = TypeVar("F", bound=Callable[..., Any])

_URL_HELP = (
    "Database URL: sqlite:///PATH or cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID "
    "(a base_url query option points it at another D1 API server). Default: D1STORE_URL, "
    "else CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_D1_DATABASE_ID and CLOUDFLARE_API_TOKEN, "
    "else sqlite:///d1store.db."
)
_PREFIX_HELP = (
    "Table prefix whose tables and version table ({prefix}alembic_version) are migrated. "
    "Default: D1STORE_TABLE_PREFIX, else no prefix."
)


def _database_options(function: F) -> F:
    @functools.wraps(function)
    def with_inherited(*args: Any, url: str | None, table_prefix: str | None, **kwargs: Any) -> Any:
        return function(
            *args, url=_inherited("url", url), table_prefix=_inherited("table_prefix", table_prefix), **kwargs
        )

    prefix_option = click.option("--table-prefix", default=None, metavar="PREFIX", help=_PREFIX_HELP)
    url_option = click.option("--url", default=None, metavar="URL", help=_URL_HELP)
    return cast(F, url_option(prefix_option(with_inherited)))


def _inherited(name: str, value: str | None) -> str | None:
    """Return ``value``, else the ``d1store`` group's global option of the same name.

    Without this, ``d1store --url X db upgrade`` would migrate the default
    database instead of X. Run standalone, the root group has no such option.
    """
    if value is not None:
        return value
    context = click.get_current_context(silent=True)
    if context is None:
        return None
    inherited = context.find_root().params.get(name)
    return inherited if isinstance(inherited, str) else None


def _run(action: Callable[[], Any]) -> Any:
    """Run ``action`` and turn d1store, Alembic and database errors into a one-line message."""
    try:
        return action()
    except DBAPIError as exc:
        # str() of a DBAPIError adds the SQL, its parameters and a link on
        # further lines; the driver's own message is the useful part.
        raise click.ClickException(
            f"migration failed: {exc.orig}; check --url / D1STORE_URL and that the database is reachable"
        ) from exc
    except (D1StoreError, CommandError, SQLAlchemyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _revisions(ids: tuple[str, ...]) -> str:
    return ", ".join(ids) if ids else "base (no revision)"


@click.group(name="db")
def db() -> None:
    """Create, upgrade and inspect the schema with d1store's Alembic revisions.

    On D1 each revision is sent as one batch request, so a failing revision
    changes nothing; on SQLite each revision is one transaction.
    """


def _report(verb: str, nothing: str, revisions: list[str], url: str | None, table_prefix: str | None) -> None:
    """Print the revisions a command applied or undid, and where the database is now."""
    heads = _revisions(_run(lambda: api.current(url, table_prefix=table_prefix)))
    done = f"{verb} {', '.join(revisions)}" if revisions else nothing
    click.echo(f"{done}; database at {heads}")


@db.command()
@click.argument("revision", default="head")
@_database_options
def upgrade(revision: str, url: str | None, table_prefix: str | None) -> None:
    """Apply the revisions up to REVISION (default: head)."""
    applied = _run(lambda: api.upgrade(url, revision, table_prefix=table_prefix))
    _report("applied", "nothing to apply", applied, url, table_prefix)


@db.command()
@click.argument("revision")
@_database_options
def downgrade(revision: str, url: str | None, table_prefix: str | None) -> None:
    """Undo the revisions above REVISION; 'base' removes every table of the prefix."""
    undone = _run(lambda: api.downgrade(url, revision, table_prefix=table_prefix))
    _report("undid", "nothing to undo", undone, url, table_prefix)


@db.command()
@_database_options
def current(url: str | None, table_prefix: str | None) -> None:
    """Print the revision the database is at."""
    click.echo(_revisions(_run(lambda: api.current(url, table_prefix=table_prefix))))


@db.command()
def history() -> None:
    """List the packaged revisions, newest first."""
    for item in _run(api.history):
        click.echo(f"{item.down_revision or 'base'} -> {item.revision}: {item.message}")


@db.command()
@click.argument("revision")
@_database_options
def stamp(revision: str, url: str | None, table_prefix: str | None) -> None:
    """Record REVISION as applied without running any revision."""
    _run(lambda: api.stamp(url, revision, table_prefix=table_prefix))
    click.echo(f"database stamped at {_revisions(_run(lambda: api.current(url, table_prefix=table_prefix)))}")


if __name__ == "__main__":
    db()
