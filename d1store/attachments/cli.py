"""``d1store attachments``: maintenance of the attachment store from the command line."""

from __future__ import annotations

import os
from contextlib import ExitStack
from datetime import timedelta

import click
import sqlalchemy

from d1store.attachments.base import AttachmentStore
from d1store.attachments.directory import DirectoryAttachmentStore
from d1store.attachments.gc import DEFAULT_GRACE, collect_garbage
from d1store.attachments.s3 import S3AttachmentStore
from d1store.store import D1Store, url_from_env

__all__ = ["attachments"]


@click.group("attachments")
def attachments() -> None:
    """Manage attachments that large messages keep outside the database."""


@attachments.command("gc")
@click.option(
    "--url",
    metavar="URL",
    help="Database URL [default: the global --url, else D1STORE_URL or the CLOUDFLARE_* variables].",
)
@click.option(
    "--table-prefix",
    "table_prefixes",
    multiple=True,
    metavar="PREFIX",
    help=(
        "Table prefix whose messages reference the attachments; repeat it for every prefix "
        "that writes to the same attachment store [default: the global --table-prefix]."
    ),
)
@click.option(
    "--dir",
    "directory",
    envvar="D1STORE_ATTACHMENTS_DIR",
    type=click.Path(file_okay=False, exists=True),
    help="Directory of a DirectoryAttachmentStore [env D1STORE_ATTACHMENTS_DIR].",
)
@click.option(
    "--s3-bucket",
    envvar="D1STORE_ATTACHMENTS_BUCKET",
    metavar="NAME",
    help=(
        "Bucket of an S3AttachmentStore [env D1STORE_ATTACHMENTS_BUCKET]; credentials come "
        "from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the usual boto3 configuration."
    ),
)
@click.option(
    "--s3-prefix",
    default="attachments/",
    show_default=True,
    metavar="PREFIX",
    help="Key prefix of the attachments in the bucket.",
)
@click.option(
    "--s3-endpoint-url",
    envvar="D1STORE_ATTACHMENTS_ENDPOINT_URL",
    metavar="URL",
    help="S3 API endpoint, e.g. https://ACCOUNT_ID.r2.cloudflarestorage.com for R2 [default: AWS].",
)
@click.option("--s3-region", metavar="REGION", help="S3 region, 'auto' for R2 [default: boto3's].")
@click.option(
    "--grace-minutes",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE.total_seconds() / 60,
    show_default=True,
    help="Keep unreferenced objects modified less than this many minutes ago; a save may still be running.",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
@click.pass_context
def gc(
    ctx: click.Context,
    url: str | None,
    table_prefixes: tuple[str, ...],
    directory: str | None,
    s3_bucket: str | None,
    s3_prefix: str,
    s3_endpoint_url: str | None,
    s3_region: str | None,
    grace_minutes: float,
    dry_run: bool,
) -> None:
    """Delete attachments that no stored message references."""
    target = _database_url(ctx, url)
    prefixes = table_prefixes or (str(getattr(ctx.find_root().obj, "table_prefix", "") or ""),)
    store = _attachment_store(directory, s3_bucket, s3_prefix, s3_endpoint_url, s3_region)
    with ExitStack() as stack:
        databases = [stack.enter_context(D1Store(target, table_prefix=prefix)) for prefix in prefixes]
        report = collect_garbage(store, databases, grace=timedelta(minutes=grace_minutes), dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for key in report.deleted:
        click.echo(f"{verb} {key}")
    click.echo(
        f"{report.objects} objects, {report.referenced} referenced, {report.recent} unreferenced "
        f"but recent, {len(report.deleted)} {verb} ({report.deleted_bytes:,} bytes)"
    )


def _database_url(ctx: click.Context, url: str | None) -> str | sqlalchemy.URL:
    state = ctx.find_root().obj
    if url is None:
        url = getattr(state, "url", None)
    target = url if url else url_from_env(os.environ)
    remember = getattr(state, "remember", None)
    if remember is not None:
        # The global error handler then removes the API token from any message.
        remember(target)
    return target


def _attachment_store(
    directory: str | None,
    bucket: str | None,
    prefix: str,
    endpoint_url: str | None,
    region: str | None,
) -> AttachmentStore:
    if (directory is None) == (bucket is None):
        raise click.UsageError("pass exactly one of --dir and --s3-bucket to choose the attachment store")
    if directory is not None:
        return DirectoryAttachmentStore(directory)
    assert bucket is not None
    return S3AttachmentStore(bucket, prefix=prefix, endpoint_url=endpoint_url, region_name=region)
