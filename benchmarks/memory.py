"""Peak memory of ``d1store export`` against the number of messages exported.

The export runs in a child process; a small Python parent waits for it and
reports ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the child's peak resident
set size (KiB on Linux). The data is threads of 1,000 messages each.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.populate import add_messages
from d1store import D1Store, Thread

__all__ = ["MESSAGES_PER_THREAD", "cli_available", "export_peak_rss"]

MESSAGES_PER_THREAD = 1_000

_MEASURE = (
    "import resource, subprocess, sys\n"
    "completed = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "if completed.returncode:\n"
    "    sys.exit(completed.stderr.decode(errors='replace'))\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def cli_available() -> bool:
    """Return whether the ``d1store`` command line package is present."""
    return importlib.util.find_spec("d1store.cli") is not None


def _fill(path: Path, messages: int) -> None:
    with D1Store(f"sqlite:///{path}") as store:
        store.init()
        for index in range(0, messages, MESSAGES_PER_THREAD):
            thread = f"t{index // MESSAGES_PER_THREAD}"
            store.threads.save(Thread(id=thread, resource_id="exporter"))
            add_messages(store, thread, min(MESSAGES_PER_THREAD, messages - index))


def _peak_kib(path: Path, output: Path) -> int:
    command = [sys.executable, "-m", "d1store.cli", "--url", f"sqlite:///{path}", "export", str(output)]
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=False
    )
    if completed.returncode:
        raise RuntimeError(f"d1store export failed: {completed.stderr.strip()[-500:]}")
    return int(completed.stdout.strip())


def export_peak_rss(small: int, large: int) -> dict[str, Any]:
    """Return the export's peak RSS in MiB for ``small`` and ``large`` messages, and their ratio."""
    peaks = []
    with tempfile.TemporaryDirectory(prefix="d1store-bench-") as folder:
        for size in (small, large):
            database = Path(folder) / f"export-{size}.db"
            _fill(database, size)
            peaks.append(_peak_kib(database, Path(folder) / f"export-{size}.jsonl") / 1024)
    return {
        "small_messages": small,
        "large_messages": large,
        "messages_per_thread": MESSAGES_PER_THREAD,
        "small_peak_mib": round(peaks[0], 1),
        "large_peak_mib": round(peaks[1], 1),
        "ratio": round(peaks[1] / peaks[0], 2),
    }
