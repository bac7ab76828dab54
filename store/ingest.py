"""Turning a complete upload into a blob and an asset: idempotent, so a crash can resume it."""

from __future__ import annotations

import time

from store import assets, blobs
from store.assets import Asset
from store.errors import ChecksumMismatch, NotFound
from store.locations import Locations
from store.paths import Layout
from store.uploads import Upload, Uploads


def finalize(
    layout: Layout, locs: Locations, uploads: Uploads, up: Upload, digest: str | None = None
) -> Asset:
    """Verify, move into the blob store, create the asset, link it; safe to repeat after a crash.

    `digest` is the sha256 the caller computed while receiving, when it saw every byte.
    """
    loc = locs.get(up.location)
    db = locs.db(loc.id)
    if up.asset_id is not None:
        return assets.get(db, loc.id, up.asset_id)
    done = assets.by_upload(db, loc.id, up.id)
    if done is None:
        sha = up.actual_sha256
        part = layout.upload_part(up.id)
        if sha is None:
            sha = digest or blobs.sha256_file(part)
            if up.declared_sha256 and sha != up.declared_sha256:
                uploads.delete(up.id)
                raise ChecksumMismatch(
                    f"the file's sha256 is {sha}, not the declared {up.declared_sha256}; "
                    "the upload was discarded"
                )
            uploads.set_actual_sha256(up.id, sha)
        if part.exists():
            blobs.adopt(layout, loc, part, sha)
        elif not blobs.blob_path(layout, loc, sha).exists():
            raise NotFound(f"upload {up.id!r} lost its data before it was stored")
        done = assets.create(
            db,
            Asset(
                id=assets.new_asset_id(loc.id),
                location=loc.id,
                project=up.project,
                kind=up.kind,
                filename=up.filename,
                mime_type=up.mime_type,
                size=up.length,
                sha256=sha,
                created_at=time.time(),
                metadata=up.metadata,
                upload_id=up.id,
            ),
        )
    uploads.mark_done(up.id, done.id)
    return done


def resume_all(layout: Layout, locs: Locations, uploads: Uploads) -> int:
    """Finish every upload a crash interrupted between its last byte and its asset."""
    count = 0
    for up in uploads.pending_finalize():
        try:
            finalize(layout, locs, uploads, up)
            count += 1
        except (NotFound, ChecksumMismatch):
            continue
    return count
