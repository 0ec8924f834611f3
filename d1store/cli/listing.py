"""``d1store threads list`` and ``d1store messages list``: readable tables or JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from d1store.cli.app import AppState, open_store
from d1store.encoding import format_timestamp
from d1store.errors import NotFoundError
from d1store.io.records import encode, message_record, thread_header
from d1store.models import Message, Thread
from d1store.store import D1Store

__all__ = ["messages", "threads"]

_PAGE = 1000
_CELL = 80


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else encode(value)
    text = text.replace("\n", " ")
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def _parse_filters(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` pairs; VALUE is read as JSON when it is valid JSON, else as text."""
    filters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE (e.g. language=english)", param_hint="--metadata"
            )
        try:
            filters[key] = json.loads(raw)
        except ValueError:
            filters[key] = raw
    return filters


@click.group()
def threads() -> None:
    """List threads."""


@threads.command("list")
@click.option("--resource", metavar="ID", help="Only threads of this resource (user) id [default: all].")
@click.option(
    "--metadata",
    "metadata_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only threads whose metadata KEY equals VALUE; repeat to require several. VALUE is read as "
    "JSON when valid (n=1 matches the number 1, n='\"1\"' the string), else as text.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Maximum number of threads to list, newest first; 0 lists all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one thread object per line.")
@click.pass_obj
def list_threads(
    state: AppState, resource: str | None, metadata_pairs: tuple[str, ...], limit: int, as_json: bool
) -> None:
    """List threads, newest first, as a table or JSON Lines (--json)."""
    filters = _parse_filters(metadata_pairs)
    with open_store(state) as store:
        page = store.threads.list(resource_id=resource, metadata=filters, per_page=limit or None)
        if as_json:
            for thread in page.items:
                click.echo(encode(thread_header(thread, None)))
            return
        _print_threads(page.items, page.total)


def _print_threads(items: list[Thread], total: int) -> None:
    table = Table(caption=f"{len(items)} of {total} threads")
    for column in ("id", "resource", "title", "created (UTC)", "updated (UTC)", "metadata"):
        table.add_column(column, overflow="fold")
    for thread in items:
        # Text cells are shown literally: rich would read "[...]" in data as markup.
        table.add_row(
            Text(thread.id),
            Text(thread.resource_id),
            Text(_short(thread.title)),
            format_timestamp(thread.created_at)[:19],
            format_timestamp(thread.updated_at)[:19],
            Text(_short(thread.metadata) if thread.metadata else ""),
        )
    Console().print(table)


@click.group()
def messages() -> None:
    """List messages."""


@messages.command("list")
@click.argument("thread_id")
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Only the newest N messages (still oldest first) [default: every message].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines, one message object per line.")
@click.pass_obj
def list_messages(state: AppState, thread_id: str, last: int | None, as_json: bool) -> None:
    """List the messages of THREAD_ID in chronological order."""
    with open_store(state) as store:
        thread = store.threads.get(thread_id)
        if thread is None:
            raise NotFoundError("thread", thread_id)
        items = store.messages.last(thread_id, last) if last is not None else _all_messages(store, thread_id)
        if as_json:
            for message in items:
                click.echo(encode({"thread_id": thread_id, **message_record(message)}))
            return
        _print_messages(thread, items)


def _all_messages(store: D1Store, thread_id: str) -> Iterator[Message]:
    page = 0
    while True:
        listing = store.messages.list(thread_id, page=page, per_page=_PAGE)
        yield from listing.items
        if not listing.has_more:
            return
        page += 1


def _print_messages(thread: Thread, items: Iterable[Message]) -> None:
    table = Table(title=Text(f"{thread.title or thread.id} ({thread.id})"), show_lines=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("role")
    table.add_column("content", overflow="fold")
    for message in items:
        content = message.content if isinstance(message.content, str) else encode(message.content)
        table.add_row(format_timestamp(message.created_at)[:23], message.role, Text(content))
    Console().print(table)
