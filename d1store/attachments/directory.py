"""An attachment store in a local directory."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from d1store.attachments.base import AttachmentStore, StoredObject
from d1store.attachments.errors import AttachmentError, AttachmentNotFoundError
from d1store.attachments.keys import check_key, is_valid_key

__all__ = ["DirectoryAttachmentStore"]

logger = logging.getLogger(__name__)

_TEMPORARY_PREFIX = ".tmp-"


class DirectoryAttachmentStore(AttachmentStore):
    """Objects stored as files under ``path``, created if missing.

    Key ``a/b/name`` is stored at ``path/a/b/na/name``: the first two
    characters of the last segment pick a subdirectory, so that no single
    directory grows to millions of entries. Writes go to a temporary file
    in the target directory that is then renamed into place, so a reader
    never sees a partly written object.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AttachmentError(f"cannot create attachment directory {str(self.root)!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"DirectoryAttachmentStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        *parents, name = check_key(key).split("/")
        return self.root.joinpath(*parents, name[:2], name)

    def put(self, key: str, data: bytes, media_type: str) -> None:
        """Write ``data`` to the key's file atomically; the media type is not kept."""
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, data)
        except OSError as exc:
            raise AttachmentError(f"writing attachment {key} to {str(target)!r} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        """Return the file's bytes."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise AttachmentNotFoundError(key) from None
        except OSError as exc:
            raise AttachmentError(f"reading attachment {key} from {str(path)!r} failed: {exc}") from exc

    def stat(self, key: str) -> StoredObject | None:
        """Return the file's size and modification time, or ``None`` if it is missing."""
        try:
            info = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AttachmentError(f"reading attachment {key} failed: {exc}") from exc
        return StoredObject(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def touch(self, key: str) -> bool:
        """Set the file's modification time to now; return ``False`` if it is missing."""
        try:
            os.utime(self._path(key))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise AttachmentError(f"touching attachment {key} failed: {exc}") from exc
        return True

    def delete(self, key: str) -> None:
        """Remove the key's file if it exists."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise AttachmentError(f"deleting attachment {key} failed: {exc}") from exc

    def iter_objects(self) -> Iterator[StoredObject]:
        """Yield every stored file; temporary files and files outside the layout are skipped."""
        for directory, _, names in os.walk(self.root):
            relative = Path(directory).relative_to(self.root).parts
            if not relative:
                continue
            *parents, fan_out = relative
            for name in names:
                if name.startswith(_TEMPORARY_PREFIX) or name[:2] != fan_out:
                    continue
                key = "/".join((*parents, name))
                if not is_valid_key(key):
                    continue
                found = self.stat(key)
                if found is not None:
                    yield found


def _write_atomically(target: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=_TEMPORARY_PREFIX)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_directory(target.parent)


def _sync_directory(path: Path) -> None:
    # Persists the rename itself; not every platform can open a directory.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as exc:
        logger.debug("fsync of directory %s failed: %s", path, exc)
    finally:
        os.close(descriptor)
