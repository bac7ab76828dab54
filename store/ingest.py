"""Turning a complete upload into a blob and an asset: idempotent, so a crash can resume it."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from store import assets, blobs, search_index
from store.assets import Asset
from store.db import Database
from store.errors import ChecksumMismatch, NotFound
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from store.uploads import Upload, Uploads


def finalize(
    layout: Layout,
    locs: Locations,
    uploads: Uploads,
    outbox: Outbox,
    up: Upload,
    digest: str | None = None,
    on_created: Callable[[Asset], None] | None = None,
) -> Asset:
    """Verify, move into the blob store, create the asset, link it; safe to repeat after a crash.

    `digest` is the sha256 the caller computed while receiving, when it saw every byte.
    `on_created` runs after the asset exists and before the upload is marked done, so a
    crash in between runs it again on resume: it must be idempotent.
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
        done = _create(
            db,
            outbox,
            loc,
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
    if on_created is not None:
        on_created(done)
    uploads.mark_done(up.id, done.id)
    return done


def _create(
    db: Database,
    outbox: Outbox,
    loc: Location,
    asset: Asset,
    on_step: Callable[[str], None] | None = None,
    facts: dict[str, Any] | None = None,
) -> Asset:
    # The outbox row commits first: an asset that exists (and so may have been
    # acknowledged) always has one. The reverse crash leaves a row for an asset that never
    # came to be, which the bridge closes after uploading its blob.
    outbox.add(
        asset_id=asset.id,
        account=loc.account,
        geo_prefix=loc.geo_prefix,
        location=loc.id,
        sha256=asset.sha256,
        size=asset.size,
        kind=asset.kind,
        filename=asset.filename,
        mime_type=asset.mime_type,
    )
    if on_step is not None:
        on_step("outbox")
    made = assets.create(db, asset, facts)
    if on_step is not None:
        on_step("asset")
    return made


def resume_all(
    layout: Layout,
    locs: Locations,
    uploads: Uploads,
    outbox: Outbox,
    on_created: Callable[[Asset], None] | None = None,
) -> int:
    """Finish every upload a crash interrupted between its last byte and its asset."""
    count = 0
    for up in uploads.pending_finalize():
        try:
            finalize(layout, locs, uploads, outbox, up, on_created=on_created)
            count += 1
        except (NotFound, ChecksumMismatch):
            continue
    return count


def asset_file(layout: Layout, locs: Locations, asset_id: str) -> tuple[Asset, Path]:
    """An asset and the path of its blob (NotFound / InvalidName for a bad id)."""
    loc_id = assets.location_of(asset_id)
    loc = locs.get(loc_id)
    asset = assets.get(locs.db(loc_id), loc_id, asset_id)
    return asset, blobs.blob_path(layout, loc, asset.sha256)


def add_file(
    layout: Layout,
    locs: Locations,
    outbox: Outbox,
    location: str,
    src: Path,
    *,
    kind: str,
    filename: str,
    mime_type: str,
    project: str | None = None,
    metadata: dict[str, Any] | None = None,
    asset_id: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Asset:
    """Store a copy of a file the box produced (a job's result) as a new asset of `location`.

    The copy is fsynced before it is adopted, so the asset row never names a blob that a
    crash could leave half-written; `src` itself is left in place. With `asset_id` (a job
    output's fixed id) a repeat returns the asset already stored and writes nothing, and a
    repeat after a crash between the outbox row and the asset row reuses that outbox row.
    `on_step("outbox")` / `on_step("asset")` run after each commit (the worker's test hooks).
    """
    loc = locs.get(location)
    db = locs.db(loc.id)
    if asset_id is not None:
        # The outbox row commits before the asset row, so an asset that exists already has
        # its outbox row (which may since be uploaded and pruned: never add it again).
        stored = assets.find(db, loc.id, asset_id)
        if stored is not None:
            return stored
    layout.tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = layout.tmp_dir / f"result-{secrets.token_hex(8)}"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    sha = blobs.sha256_file(tmp)
    size = tmp.stat().st_size
    blobs.adopt(layout, loc, tmp, sha)
    return _create(
        db,
        outbox,
        loc,
        Asset(
            id=asset_id or assets.new_asset_id(loc.id),
            location=loc.id,
            project=project,
            kind=kind,
            filename=filename,
            mime_type=mime_type,
            size=size,
            sha256=sha,
            created_at=time.time(),
            metadata=metadata or {},
        ),
        on_step,
        search_index.read_facts(src) if kind == search_index.SCENE_FACTS_KIND else None,
    )
