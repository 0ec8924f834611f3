"""The ``d1store`` command group, its global options and its error handling.

Every failure a user can cause or fix (bad input, a missing file, missing
credentials, an unreachable database) ends with one line on stderr that
names the problem and the fix, and exit status 1. ``--debug`` shows the
traceback instead. API tokens are removed from every message printed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import click
import sqlalchemy

from d1store import __version__
from d1store.errors import BackendError, D1StoreError, NotFoundError, SchemaNotInitializedError
from d1store.io import LineError
from d1store.store import D1Store, url_from_env

__all__ = ["AppState", "main", "open_store"]


@dataclass
class AppState:
    """Global options of one invocation, and the secrets to keep out of output."""

    # Left out of repr(): the URL and the secrets contain the API token.
    url: str | None = field(default=None, repr=False)
    table_prefix: str = ""
    debug: bool = False
    secrets: set[str] = field(default_factory=set, repr=False)

    def resolve_url(self) -> str | sqlalchemy.URL:
        """Return ``--url``, else the URL configured by environment variables."""
        url = self.url if self.url else url_from_env(os.environ)
        self.remember(url)
        return url

    def remember(self, url: str | sqlalchemy.URL) -> None:
        """Record the password (API token) of ``url`` so that it is never printed."""
        try:
            password = sqlalchemy.make_url(url).password
        except sqlalchemy.exc.ArgumentError:
            return
        if password:
            self.secrets.add(str(password))

    def scrub(self, text: str) -> str:
        """Return ``text`` with every known secret replaced by ``***``."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


@contextmanager
def open_store(
    state: AppState, url: str | sqlalchemy.URL | None = None, prefix: str | None = None
) -> Iterator[D1Store]:
    """Open the configured store (or ``url`` with ``prefix``) and close it afterwards."""
    target = state.resolve_url() if url is None else url
    state.remember(target)
    store = D1Store(target, table_prefix=state.table_prefix if prefix is None else prefix)
    try:
        yield store
    finally:
        store.close()


def _hint(error: BaseException) -> str:
    """Return what to do about ``error``, as the end of a one-line message."""
    if isinstance(error, SchemaNotInitializedError):
        return f"table {error.table!r} does not exist: run `d1store init` (or `d1store db upgrade`)"
    if isinstance(error, NotFoundError):
        return f"{error}; list the stored ids with `d1store threads list`"
    if isinstance(error, BackendError):
        return (
            f"database request failed: {error}; check --url / D1STORE_URL and that the database "
            "is reachable (`d1store doctor` shows details)"
        )
    if isinstance(error, LineError):
        return f"invalid input, {error}; fix the line, or pass --on-error skip to skip invalid lines"
    if isinstance(error, OSError):
        name = f" {error.filename!r}" if error.filename else ""
        return f"cannot access{name}: {error.strerror or error}; check the path and its permissions"
    return str(error)


_HANDLED = (D1StoreError, LineError, OSError, ValueError)


class RootGroup(click.Group):
    """The main group: turns expected errors into one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _HANDLED as error:
            state = ctx.find_object(AppState) or AppState()
            if state.debug:
                raise
            raise click.ClickException(state.scrub(_hint(error))) from None


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="D1STORE_URL",
    metavar="URL",
    help=(
        "Database URL: sqlite:///PATH or cloudflare_d1://ACCOUNT_ID:API_TOKEN@DATABASE_ID "
        "[env D1STORE_URL; else the CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_D1_DATABASE_ID and "
        "CLOUDFLARE_API_TOKEN variables; default: sqlite:///d1store.db]"
    ),
)
@click.option(
    "--table-prefix",
    envvar="D1STORE_TABLE_PREFIX",
    default="",
    metavar="PREFIX",
    help="Prefix of every table name, e.g. dev_ [env D1STORE_TABLE_PREFIX; default: none]",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs on errors.")
@click.version_option(__version__, "--version", prog_name="d1store")
@click.pass_context
def main(ctx: click.Context, url: str | None, table_prefix: str, debug: bool) -> None:
    """Store AI-agent conversations in Cloudflare D1 or SQLite: inspect, import, export, copy."""
    state = AppState(url=url, table_prefix=table_prefix, debug=debug)
    if os.environ.get("CLOUDFLARE_API_TOKEN"):
        state.secrets.add(os.environ["CLOUDFLARE_API_TOKEN"])
    if url:
        state.remember(url)
    ctx.obj = state
    root = logging.getLogger("d1store")
    if not debug:
        # Retries and other library logs would otherwise reach stderr through
        # logging's last-resort handler; the final error line reports what failed.
        if not any(isinstance(handler, logging.NullHandler) for handler in root.handlers):
            root.addHandler(logging.NullHandler())
        return
    # Only d1store's own loggers: they never log tokens or row values.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
