"""Content-addressed blobs: temp file, fsync, rename, fsync the directory; immutable after."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from store.db import fsync_dir, is_disk_full, makedirs_durable
from store.errors import DiskFull, NotFound
from store.locations import Location
from store.paths import Layout

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def blob_path(layout: Layout, loc: Location, sha256: str) -> Path:
    """Where the blob with this digest lives for this location."""
    return layout.blob_path(loc.account, loc.geo_prefix, loc.id, sha256)


def existing_blob(layout: Layout, loc: Location, sha256: str) -> tuple[Path, int]:
    """(path, size) of a blob that is on this box; NotFound when its bytes are not here."""
    path = blob_path(layout, loc, sha256)
    try:
        return path, path.stat().st_size
    except FileNotFoundError:
        # A box restored from S3 gets the asset rows back, not the bytes (they stay in S3).
        raise NotFound(
            f"the bytes of blob {sha256} are not on this box (after `fieldbox restore` they "
            "stay in S3 until copied back)"
        ) from None


def adopt(layout: Layout, loc: Location, src: Path, sha256: str) -> Path:
    """Move an fsynced file whose digest is `sha256` into the blob store; return its path.

    If the blob already exists (same content), `src` is removed instead: blobs are immutable.
    """
    dest = blob_path(layout, loc, sha256)
    try:
        if dest.exists():
            src.unlink(missing_ok=True)
            return dest
        makedirs_durable(dest.parent)
        os.chmod(src, 0o444)
        os.replace(src, dest)
        fsync_dir(dest.parent)
        fsync_dir(src.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull("no space left on the data disk; blob not stored") from exc
        raise
    return dest
