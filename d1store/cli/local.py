"""``d1store local-d1``: run a local Cloudflare D1 server in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from d1store.local_d1 import serve

__all__ = ["local_d1"]


@click.command("local-d1")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port on 127.0.0.1 to listen on; 0 picks a free port.",
)
@click.option(
    "--persist",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory that keeps the database across runs [default: in memory, lost on exit].",
)
def local_d1(port: int, persist: Path | None) -> None:
    """Run Cloudflare's D1 engine (Miniflare/workerd) on 127.0.0.1 until Ctrl-C.

    Prints one JSON line with the connection details, including a `url` to
    pass as --url or D1STORE_URL. Needs Node.js 20 and npm on the first run.
    """
    sys.exit(serve(port=port, persist=str(persist) if persist is not None else None))
