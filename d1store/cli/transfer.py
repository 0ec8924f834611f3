"""``d1store export``, ``import`` and ``copy``: JSON Lines in and out, streamed."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click

from d1store.cli.app import AppState, open_store
from d1store.cli.progress import Bar, progress_bar
from d1store.io import BatchLimits, ExportStats, Importer, LineError, copy_store, export_pieces

__all__ = ["copy", "export", "import_"]


def _batch_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that cap one write request."""
    defaults = BatchLimits()
    options = [
        click.option(
            "--batch-threads",
            type=click.IntRange(min=1),
            default=defaults.threads,
            show_default=True,
            help="Maximum threads written per request (one atomic D1 batch).",
        ),
        click.option(
            "--batch-statements",
            type=click.IntRange(min=1),
            default=defaults.statements,
            show_default=True,
            help="Maximum SQL statements per request; a larger thread is written in chunks.",
        ),
        click.option(
            "--batch-bytes",
            type=click.IntRange(min=1),
            default=defaults.bytes,
            show_default=True,
            help="Maximum input JSON bytes per request; a larger thread is written in chunks.",
        ),
        click.option(
            "--init/--no-init",
            "create_schema",
            default=True,
            show_default=True,
            help="Create missing tables of the destination before writing.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _limits(batch_threads: int, batch_statements: int, batch_bytes: int) -> BatchLimits:
    return BatchLimits(threads=batch_threads, statements=batch_statements, bytes=batch_bytes)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _summary(verb: str, threads: int, messages: int, started: float, extra: str = "") -> None:
    seconds = time.perf_counter() - started
    counts = f"{_count(threads, 'thread')}, {_count(messages, 'message')}"
    click.echo(f"{verb} {counts} in {seconds:.1f} s{extra}", err=True)


# -- export -------------------------------------------------------------


@click.command()
@click.argument("destination", metavar="FILE|-")
@click.option("--resource", metavar="ID", help="Export only the threads of this resource id [default: all].")
@click.option(
    "--thread-page",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Threads read per request.",
)
@click.option(
    "--message-page",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Messages read per request; bounds memory together with --thread-page.",
)
@click.pass_obj
def export(
    state: AppState, destination: str, resource: str | None, thread_page: int, message_page: int
) -> None:
    """Write every thread with its messages and metadata to FILE as JSON Lines (- for stdout).

    One line per thread, oldest thread first, messages in chronological
    order. A FILE is written under FILE.partial and renamed when complete.
    """
    started = time.perf_counter()
    stats = ExportStats()
    with open_store(state) as store, progress_bar("exporting threads") as bar:

        def advance(current: ExportStats) -> None:
            bar.update(current.threads, total=current.total_threads)

        pieces = export_pieces(
            store,
            stats,
            resource_id=resource,
            thread_page=thread_page,
            message_page=message_page,
            on_thread=advance,
        )
        if destination == "-":
            _write_all(sys.stdout, pieces)
            sys.stdout.flush()
        else:
            _write_file(Path(destination), pieces)
    _summary("exported", stats.threads, stats.messages, started)


def _write_all(output: IO[str], pieces: Iterator[str]) -> None:
    for piece in pieces:
        output.write(piece)


def _write_file(path: Path, pieces: Iterator[str]) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="\n") as output:
            _write_all(output, pieces)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


# -- import -------------------------------------------------------------


def _read_lines(source: str, bar: Bar) -> Iterator[tuple[int, str | LineError]]:
    """Yield ``(line number, text)`` of ``source`` (a path or ``-``), advancing ``bar`` by bytes.

    A line that is not valid UTF-8 is yielded as its :class:`LineError`.
    """
    stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    try:
        done = 0
        for number, raw in enumerate(stream, start=1):
            done += len(raw)
            bar.update(done)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, LineError(number, f"invalid UTF-8 at byte {exc.start}; save the file as UTF-8")
                continue
            yield number, text.removeprefix("\ufeff") if number == 1 else text
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


@click.command("import")
@click.argument("source", metavar="FILE|-")
@click.option(
    "--on-error",
    type=click.Choice(["abort", "skip"]),
    default="abort",
    show_default=True,
    help="What an invalid line does: abort stops at it (the lines before it stay imported); "
    "skip reports it on stderr and goes on.",
)
@click.option(
    "--resource",
    "default_resource",
    metavar="ID",
    default="default",
    show_default=True,
    help="Resource (user) id of the lines that name no resource_id.",
)
@_batch_options
@click.pass_obj
def import_(
    state: AppState,
    source: str,
    on_error: str,
    default_resource: str,
    batch_threads: int,
    batch_statements: int,
    batch_bytes: int,
    create_schema: bool,
) -> None:
    """Import JSON Lines from FILE (- for stdin): one thread per line.

    Accepts the export format and the chat format
    {"messages": [{"role": ..., "content": ...}]} with optional id,
    resource_id, title and metadata. Lines without an id get one derived
    from their content and their occurrence among identical lines, so
    identical lines stay separate threads and importing the same file again
    changes nothing. An interrupted import is resumed by running it again.
    """
    started = time.perf_counter()
    total = None if source == "-" else os.path.getsize(source)
    with open_store(state) as store, progress_bar("importing", total) as bar:
        if create_schema:
            store.init()
        importer = Importer(
            store,
            default_resource=default_resource,
            on_error="skip" if on_error == "skip" else "abort",
            limits=_limits(batch_threads, batch_statements, batch_bytes),
            on_skip=lambda error: click.echo(f"skipped {error}", err=True),
        )
        try:
            for number, text in _read_lines(source, bar):
                if isinstance(text, LineError):
                    importer.reject(text)
                else:
                    importer.feed(number, text)
            importer.flush()
        except LineError as error:
            done = importer.stats.threads
            raise click.ClickException(
                f"invalid input, {error}; nothing of line {error.line} was written and the "
                f"{_count(done, 'thread')} before it are stored (importing again rewrites them unchanged); "
                "fix the line, or pass "
                "--on-error skip"
            ) from None
    stats = importer.stats
    skipped = f"; {_count(stats.skipped, 'invalid line')} skipped" if stats.skipped else ""
    _summary("imported", stats.threads, stats.messages, started, skipped)


# -- copy ---------------------------------------------------------------


@click.command()
@click.argument("source_url", metavar="SRC_URL")
@click.argument("destination_url", metavar="DST_URL")
@click.option("--src-prefix", metavar="PREFIX", help="Table prefix in SRC_URL [default: --table-prefix].")
@click.option("--dst-prefix", metavar="PREFIX", help="Table prefix in DST_URL [default: --table-prefix].")
@_batch_options
@click.pass_obj
def copy(
    state: AppState,
    source_url: str,
    destination_url: str,
    src_prefix: str | None,
    dst_prefix: str | None,
    batch_threads: int,
    batch_statements: int,
    batch_bytes: int,
    create_schema: bool,
) -> None:
    """Copy every thread, message, metadata entry and working memory from SRC_URL to DST_URL.

    For example, back up D1 into a local file:
    d1store copy cloudflare_d1://ACCOUNT:TOKEN@DB sqlite:///backup.db.
    Ids and timestamps are kept, so running it again leaves the destination
    as it was; records that exist only in the destination are kept.
    """
    started = time.perf_counter()
    state.remember(source_url)
    state.remember(destination_url)
    with (
        open_store(state, source_url, src_prefix) as source,
        open_store(state, destination_url, dst_prefix) as destination,
        progress_bar("copying threads") as bar,
    ):
        if create_schema:
            destination.init()
        exported, imported = copy_store(
            source,
            destination,
            limits=_limits(batch_threads, batch_statements, batch_bytes),
            on_write=lambda stats: bar.update(stats.threads),
        )
    _summary("copied", imported.threads, imported.messages, started)
    if exported.threads != imported.threads:
        raise click.ClickException(
            f"exported {exported.threads:,} threads but wrote {imported.threads:,}; run the copy again"
        )
