"""Import, export and copy of conversations as JSON Lines, one thread per line."""

from d1store.io.copy import copy_store
from d1store.io.exporter import ExportStats, export_pieces
from d1store.io.importer import BatchLimits, Importer, ImportStats, OnError
from d1store.io.records import LineError

__all__ = [
    "BatchLimits",
    "ExportStats",
    "ImportStats",
    "Importer",
    "LineError",
    "OnError",
    "copy_store",
    "export_pieces",
]
