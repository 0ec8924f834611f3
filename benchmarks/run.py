"""Run the d1store benchmarks, print the tables and write them as JSON.

Usage: ``python -m benchmarks [--quick] [--sections ...] [--output FILE]``.
The peers of the SQLite comparison come from ``pip install -e '.[bench]'``.
The D1 sections start Cloudflare's local D1 engine on 127.0.0.1, which needs
Node.js 20 and npm, as the test suite does.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.compare import compare_sqlite
from benchmarks.memory import cli_available, export_peak_rss
from benchmarks.report import machine, render_table, write_json
from benchmarks.requests import bulk_save_against_trivial, requests_per_method
from benchmarks.scale import scale_rows
from d1store import D1Store

__all__ = ["SECTIONS", "Sizes", "main", "run"]

SECTIONS = ("compare", "requests", "scale", "memory")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Sizes:
    """How much work each section does."""

    messages: int = 1_000
    runs: int = 7
    scale_small: int = 1_000
    scale_large: int = 100_000
    d1_scale_large: int = 100_000
    scale_runs: int = 15
    export_small: int = 1_000
    export_large: int = 100_000


QUICK = Sizes(
    messages=50,
    runs=2,
    scale_small=100,
    scale_large=1_000,
    d1_scale_large=1_000,
    scale_runs=3,
    export_small=100,
    export_large=1_000,
)


StoreFactory = Callable[[], D1Store]


@contextmanager
def _sqlite_stores(folder: Path) -> Iterator[StoreFactory]:
    numbers = itertools.count()

    def open_store() -> D1Store:
        store = D1Store(f"sqlite:///{folder / f'store-{next(numbers)}.db'}")
        store.init()
        return store

    yield open_store


@contextmanager
def _d1_stores() -> Iterator[StoreFactory]:
    from d1store.testing import local_d1

    with local_d1() as server:

        def open_store() -> D1Store:
            # Stores on one server stay apart through their table prefix.
            store = D1Store(server.url, table_prefix=f"b{uuid.uuid4().hex[:8]}_")
            store.init()
            return store

        yield open_store


def _requests_section(open_store: StoreFactory, sizes: Sizes, backend: str) -> dict[str, Any]:
    store = open_store()
    try:
        calls = requests_per_method(store)
        bulk = bulk_save_against_trivial(store, sizes.messages, sizes.runs)
    finally:
        store.close()
    return {"backend": backend, "calls": calls, "bulk_save": bulk}


def run(sizes: Sizes, sections: Sequence[str], use_d1: bool) -> dict[str, Any]:
    """Run the chosen sections and return every figure as a JSON-ready dict."""
    results: dict[str, Any] = {"sizes": sizes.__dict__, "sections": list(sections)}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="d1store-bench-")))
        sqlite_stores = stack.enter_context(_sqlite_stores(folder))
        d1_stores = (
            stack.enter_context(_d1_stores()) if use_d1 and {"requests", "scale"} & set(sections) else None
        )

        if "compare" in sections:
            results["compare"] = compare_sqlite(sizes.messages, sizes.runs)
        if "requests" in sections:
            results["requests"] = [_requests_section(sqlite_stores, sizes, "sqlite")]
            if d1_stores is not None:
                results["requests"].append(_requests_section(d1_stores, sizes, "local D1"))
        if "scale" in sections:
            results["scale"] = scale_rows(
                sqlite_stores, "sqlite", sizes.scale_small, sizes.scale_large, sizes.scale_runs
            )
            if d1_stores is not None:
                results["scale"] += scale_rows(
                    d1_stores, "local D1", sizes.scale_small, sizes.d1_scale_large, sizes.scale_runs
                )
        if "memory" in sections:
            if cli_available():
                results["memory"] = export_peak_rss(sizes.export_small, sizes.export_large)
            else:
                results["memory"] = {"skipped": "d1store.cli is not installed"}
    results["machine"] = machine()
    return results


def render(results: dict[str, Any]) -> str:
    """Return the printed report of ``results``."""
    parts = []
    if "compare" in results:
        parts.append(
            render_table(
                "SQLite: save and read N messages of one thread (median ms; ratio to the sqlite3 floor)",
                results["compare"],
                ("name", "messages", "write_ms", "write_ratio", "read_ms", "read_ratio", "skipped"),
            )
        )
    for section in results.get("requests", []):
        parts.append(
            render_table(
                f"Requests per call ({section['backend']}; goal: 1)",
                section["calls"],
                ("call", "requests", "note"),
            )
        )
        parts.append(
            render_table(
                f"One bulk save against one SELECT 1 ({section['backend']}; median ms)",
                [section["bulk_save"]],
                ("messages", "bulk_save_ms", "trivial_request_ms", "ratio"),
            )
        )
    if "scale" in results:
        parts.append(
            render_table(
                "Scale: the same page at N = small and large (median ms; goal: ratio <= 1.5)",
                results["scale"],
                ("backend", "case", "small_n", "small_ms", "large_n", "large_ms", "ratio"),
            )
        )
    if "memory" in results:
        parts.append(
            render_table(
                "Memory: peak RSS of d1store export (MiB; goal: ratio <= 1.2)",
                [results["memory"]],
                ("small_messages", "small_peak_mib", "large_messages", "large_peak_mib", "ratio", "skipped"),
            )
        )
    info = results["machine"]
    parts.append(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; Python {info['python']}, "
        f"SQLite {info['sqlite']}; {info['os']}; {info['date']}; "
        f"load average {info['load_average_1m_at_end']}"
    )
    return "\n\n".join(parts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and 2 runs: a smoke run of seconds.")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="Sections to run [default: all].",
    )
    parser.add_argument("--no-d1", action="store_true", help="Skip the local D1 engine (SQLite only).")
    parser.add_argument(
        "--runs", type=int, help="Timed runs per figure; the median is reported [default: 7]."
    )
    parser.add_argument("--d1-scale-large", type=int, help="Large N of the D1 scale case [default: 100,000].")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks from the command line; return the exit status."""
    options = _parser().parse_args(argv)
    sizes = QUICK if options.quick else Sizes()
    if options.runs:
        sizes = Sizes(**{**sizes.__dict__, "runs": options.runs})
    if options.d1_scale_large:
        sizes = Sizes(**{**sizes.__dict__, "d1_scale_large": options.d1_scale_large})
    started = time.perf_counter()
    results = run(sizes, options.sections, use_d1=not options.no_d1)
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(render(results))
    write_json(options.output, results)
    print(f"\nwrote {options.output} in {results['seconds']} s")
    return 0
