"""An attachment store in an S3-compatible object store (AWS S3, Cloudflare R2, MinIO).

Needs the optional ``boto3`` dependency: ``pip install 'd1store[s3]'``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from d1store.attachments.base import AttachmentStore, StoredObject
from d1store.attachments.errors import AttachmentError, AttachmentNotFoundError
from d1store.attachments.keys import check_key, is_valid_key
from d1store.errors import ValidationError

__all__ = ["S3AttachmentStore"]

logger = logging.getLogger(__name__)

_MISSING_CODES = frozenset(("404", "NoSuchKey", "NotFound"))


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise AttachmentError(
            f"S3AttachmentStore needs the {name.split('.')[0]} package: pip install 'd1store[s3]'"
        ) from None


class S3AttachmentStore(AttachmentStore):
    """Objects stored in ``bucket`` under ``prefix`` through boto3.

    Pass a ready boto3 S3 ``client``, or let the store create one from
    ``endpoint_url``, ``region_name`` and the credentials. Credentials left
    out are found by boto3's usual chain (environment, config files,
    instance roles). For Cloudflare R2 use
    ``endpoint_url="https://<ACCOUNT_ID>.r2.cloudflarestorage.com"`` and
    ``region_name="auto"``. The credentials are handed to boto3 only and
    never kept, logged or shown by ``repr``.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "attachments/",
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
    ) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ValidationError(f"invalid bucket {bucket!r}: use the name of an existing bucket")
        self.bucket = bucket
        self.prefix = _normalise_prefix(prefix)
        self._errors = _import("botocore.exceptions")
        if client is None:
            client = (
                _import("boto3")
                .session.Session()
                .client(
                    "s3",
                    endpoint_url=endpoint_url,
                    region_name=region_name,
                    aws_access_key_id=aws_access_key_id,
                    aws_secret_access_key=aws_secret_access_key,
                    aws_session_token=aws_session_token,
                )
            )
        self.client = client

    def __repr__(self) -> str:
        return f"S3AttachmentStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _failure(self, action: str, key: str, exc: Exception) -> AttachmentError:
        return AttachmentError(f"{action} attachment {key} in s3://{self.bucket}/{self.prefix} failed: {exc}")

    def _is_missing(self, exc: Exception) -> bool:
        if not isinstance(exc, self._errors.ClientError):
            return False
        return str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES

    def put(self, key: str, data: bytes, media_type: str) -> None:
        """Upload ``data`` with ``media_type`` as its Content-Type."""
        name = self._name(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=media_type)
        except (self._errors.BotoCoreError, self._errors.ClientError) as exc:
            raise self._failure("uploading", key, exc) from exc

    def get(self, key: str) -> bytes:
        """Download the object's bytes."""
        name = self._name(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=name)
            with response["Body"] as body:
                data: bytes = body.read()
        except (self._errors.BotoCoreError, self._errors.ClientError) as exc:
            if self._is_missing(exc):
                raise AttachmentNotFoundError(key) from None
            raise self._failure("downloading", key, exc) from exc
        return data

    def stat(self, key: str) -> StoredObject | None:
        """Return the object's size, modification time and Content-Type, or ``None``."""
        name = self._name(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=name)
        except (self._errors.BotoCoreError, self._errors.ClientError) as exc:
            if self._is_missing(exc):
                return None
            raise self._failure("reading", key, exc) from exc
        return StoredObject(key, int(head["ContentLength"]), head["LastModified"], head.get("ContentType"))

    def touch(self, key: str) -> bool:
        """Copy the object onto itself, which sets its modification time to now.

        S3 accepts a copy onto the same key only when the metadata is
        replaced, so the Content-Type is read first and set again.
        """
        # NOTE: tested against moto's S3 server only, not against R2 or MinIO.
        found = self.stat(key)
        if found is None:
            return False
        name = self._name(key)
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=name,
                CopySource={"Bucket": self.bucket, "Key": name},
                MetadataDirective="REPLACE",
                ContentType=found.media_type or "application/octet-stream",
            )
        except (self._errors.BotoCoreError, self._errors.ClientError) as exc:
            if self._is_missing(exc):
                return False
            raise self._failure("touching", key, exc) from exc
        return True

    def delete(self, key: str) -> None:
        """Delete the object; S3 reports success for a missing key too."""
        name = self._name(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=name)
        except (self._errors.BotoCoreError, self._errors.ClientError) as exc:
            raise self._failure("deleting", key, exc) from exc

    def iter_objects(self) -> Iterator[StoredObject]:
        """Yield every object under the prefix, one listing page (1,000 keys) at a time."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if is_valid_key(key):
                        yield StoredObject(key, int(item["Size"]), item["LastModified"])
        except (self._errors.BotoCoreError, self._errors.ClientError) as exc:
            raise AttachmentError(f"listing s3://{self.bucket}/{self.prefix} failed: {exc}") from exc


def _normalise_prefix(prefix: object) -> str:
    if prefix == "":
        return ""
    if not isinstance(prefix, str) or not is_valid_key(prefix.rstrip("/")):
        raise ValidationError(
            f"invalid prefix {prefix!r}: use '/'-separated segments of letters, digits, '.', '_' and '-' "
            "(for example 'attachments/'), or '' for the bucket root"
        )
    return prefix.rstrip("/") + "/"
