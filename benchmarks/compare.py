"""SQLite side by side: the median write and read time of each contender."""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.contenders import CONTENDERS, ContenderSpec, short_texts

__all__ = ["compare_sqlite"]


def _missing(spec: ContenderSpec) -> list[str]:
    return [name for name in spec.requires if importlib.util.find_spec(name) is None]


def _one_run(spec: ContenderSpec, folder: Path, texts: list[str]) -> tuple[float, float]:
    """Time one write and one read on a fresh file; return seconds."""
    contender = spec.open(folder / "store.db", texts)
    try:
        started = time.perf_counter()
        contender.write()
        written = time.perf_counter() - started

        started = time.perf_counter()
        count = contender.read()
        read = time.perf_counter() - started
    finally:
        contender.close()
    if count != len(texts):
        raise RuntimeError(f"{spec.name} read {count} messages back, expected {len(texts)}")
    return written, read


def _median_run(spec: ContenderSpec, texts: list[str], runs: int) -> tuple[float, float]:
    # The first run is a warm-up (imports, statement caches) and is not counted.
    writes, reads = [], []
    for index in range(runs + 1):
        with tempfile.TemporaryDirectory(prefix="d1store-bench-") as folder:
            written, read = _one_run(spec, Path(folder), texts)
        if index:
            writes.append(written)
            reads.append(read)
    return statistics.median(writes), statistics.median(reads)


def compare_sqlite(messages: int, runs: int, only: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Return one row per contender: median write and read in ms, and ratios to the floor.

    ``only`` limits the run to contenders with these names (the floor always runs).
    """
    texts = short_texts(messages)
    rows: list[dict[str, Any]] = []
    floor: tuple[float, float] | None = None
    for spec in CONTENDERS:
        row: dict[str, Any] = {"name": spec.name, "messages": messages, "runs": runs}
        row["description"] = spec.description
        missing = _missing(spec)
        if only and spec.name not in only and floor is not None:
            continue
        if missing:
            row["skipped"] = f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
            rows.append(row)
            continue
        write, read = _median_run(spec, texts, runs)
        floor = floor or (write, read)
        row.update(
            write_ms=round(write * 1000, 3),
            read_ms=round(read * 1000, 3),
            write_ratio=round(write / floor[0], 2),
            read_ratio=round(read / floor[1], 2),
        )
        rows.append(row)
    return rows
