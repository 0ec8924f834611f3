"""``d1store init``: create the schema."""

from __future__ import annotations

import click

from d1store.cli.app import AppState, open_store
from d1store.store import mask_url

__all__ = ["init"]


@click.command()
@click.pass_obj
def init(state: AppState) -> None:
    """Create every missing table and index (idempotent).

    Production deployments that track schema revisions use `d1store db
    upgrade` instead; both create the same schema.
    """
    with open_store(state) as store:
        store.init()
        tables = ", ".join(table.name for table in store.tables.metadata.sorted_tables)
        click.echo(f"schema ready on {mask_url(state.resolve_url())}: {tables}")
