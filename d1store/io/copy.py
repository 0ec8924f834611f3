"""Copy every thread of one store into another, streamed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from d1store.io.exporter import ExportStats, export_pieces
from d1store.io.importer import BatchLimits, Importer, ImportStats
from d1store.store import D1Store

__all__ = ["copy_store", "join_lines"]


def join_lines(pieces: Iterator[str]) -> Iterator[tuple[int, str]]:
    """Join export pieces into numbered lines (numbered from 1)."""
    parts: list[str] = []
    number = 0
    for piece in pieces:
        parts.append(piece)
        if piece.endswith("\n"):
            number += 1
            yield number, "".join(parts)
            parts = []


def copy_store(
    source: D1Store,
    destination: D1Store,
    *,
    limits: BatchLimits | None = None,
    on_write: Callable[[ImportStats], None] | None = None,
) -> tuple[ExportStats, ImportStats]:
    """Copy every thread, message, metadata entry and resource record of ``source``.

    Records are written with their ids and timestamps, so copying again
    leaves the destination as it was. Records that exist only in the
    destination are kept. A resource record is copied only when the source
    has at least one thread of that resource.
    """
    exported = ExportStats()
    importer = Importer(destination, limits=limits, on_write=on_write)
    imported = importer.run(join_lines(export_pieces(source, exported)))
    return exported, imported
