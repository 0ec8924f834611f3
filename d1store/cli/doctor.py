"""``d1store doctor``: a health check of the configured database."""

from __future__ import annotations

import time
from pathlib import Path

import click
import sqlalchemy

from d1store.backends.base import Statement
from d1store.cli.app import AppState, open_store
from d1store.errors import BackendError
from d1store.migrations.version_table import version_table_name
from d1store.store import D1Store, mask_url

__all__ = ["doctor"]

_PINGS = 3


def _latency_ms(store: D1Store) -> float:
    """Return the fastest of a few ``SELECT 1`` round trips, in milliseconds."""
    timings = []
    for _ in range(_PINGS):
        started = time.perf_counter()
        store.backend.execute([Statement("SELECT 1")], write=False)
        timings.append((time.perf_counter() - started) * 1000)
    return min(timings)


def _existing_tables(store: D1Store, names: list[str]) -> set[str]:
    placeholders = ", ".join("?" for _ in names)
    sql = f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({placeholders})"
    rows = store.backend.execute([Statement(sql, tuple(names))], write=False)[0].rows
    return {row[0] for row in rows}


def _revision(store: D1Store, present: set[str]) -> str:
    table = version_table_name(store.table_prefix)
    if table not in present:
        return "no revision table (schema created by `d1store init`, or not at all)"
    rows = store.backend.execute([Statement(f'SELECT version_num FROM "{table}"')], write=False)[0].rows
    return ", ".join(str(row[0]) for row in rows) or f"{table} is empty"


def _row_counts(store: D1Store, tables: list[str]) -> str:
    statements = [Statement(f'SELECT COUNT(*) FROM "{name}"') for name in tables]
    results = store.backend.execute(statements, write=False)
    return ", ".join(f"{name} {result.rows[0][0]:,}" for name, result in zip(tables, results, strict=True))


def _check_sqlite_file(url: str | sqlalchemy.URL) -> None:
    """Exit with a one-line reason when a SQLite URL names a file that does not exist.

    Connecting would create an empty file, so a mistyped path would look
    like a reachable, empty database.
    """
    try:
        parsed = sqlalchemy.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return
    if not Path(database).exists():
        raise click.ClickException(
            f"database file {database!r} does not exist; check --url / D1STORE_URL, "
            "or create it with `d1store init`"
        )


@click.command()
@click.pass_obj
def doctor(state: AppState) -> None:
    """Check the configured database: reachability, latency, schema, row counts, limits.

    Exits with status 1 and a one-line reason when the database is
    unreachable or tables are missing.
    """
    url = state.resolve_url()
    _check_sqlite_file(url)
    with open_store(state) as store:
        limits = store.backend.limits
        click.echo(f"backend:      {store.backend.name}")
        click.echo(f"url:          {mask_url(url)}")
        click.echo(f"table prefix: {store.table_prefix or '(none)'}")
        try:
            latency = _latency_ms(store)
        except BackendError as error:
            click.echo("reachable:    no")
            raise click.ClickException(
                state.scrub(f"database unreachable: {error}; check --url / D1STORE_URL and the network")
            ) from None
        click.echo(f"reachable:    yes, round trip {latency:.1f} ms (fastest of {_PINGS})")
        # Table names come from the validated prefix, never from user values.
        names = [table.name for table in store.tables.metadata.sorted_tables]
        present = _existing_tables(store, [*names, version_table_name(store.table_prefix)])
        click.echo(f"revision:     {_revision(store, present)}")
        missing = [name for name in names if name not in present]
        if not missing:
            click.echo(f"rows:         {_row_counts(store, names)}")
        click.echo(
            f"limits:       {limits.max_params} parameters and {limits.max_sql_bytes:,} bytes of SQL per "
            f"statement, {limits.max_row_bytes:,} bytes per row, "
            f"{limits.max_request_bytes:,} bytes per request"
        )
        if missing:
            raise click.ClickException(
                f"missing tables: {', '.join(missing)}; "
                "create them with `d1store init` or `d1store db upgrade`"
            )
        click.echo("status:       ok")
