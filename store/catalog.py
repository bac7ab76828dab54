"""Asset listing across every location: newest first, one entry per sha256, cursor-paged."""

from __future__ import annotations

import base64
import binascii

import msgspec

from store import assets
from store.assets import Asset
from store.errors import InvalidName
from store.locations import Locations


def encode_cursor(asset: Asset) -> str:
    """An opaque cursor that resumes listing after `asset`."""
    raw = msgspec.json.encode([asset.created_at, asset.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) position inside a cursor; InvalidName if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, asset_id = msgspec.json.decode(raw, type=tuple[float, str])
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidName("invalid cursor") from exc
    return created_at, asset_id


def list_assets(
    locs: Locations,
    *,
    project: str | None,
    location: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Asset], str | None]:
    """One page of assets and the cursor of the next page (None at the end)."""
    before = decode_cursor(cursor) if cursor else None
    loc_ids = [location] if location else [loc.id for loc in locs.list()]
    dbs = {loc_id: locs.db(loc_id) for loc_id in loc_ids}
    page: list[Asset] = []
    seen: set[str] = set()
    while True:
        candidates: list[Asset] = []
        # Below the oldest row of a database that had more to give, order is unknown yet.
        horizon: tuple[float, str] | None = None
        for loc_id, db in dbs.items():
            rows = assets.newest_per_sha(
                db, loc_id, project=project, before=before, limit=limit + 1
            )
            if len(rows) > limit:
                last = (rows[-1].created_at, rows[-1].id)
                horizon = last if horizon is None else max(horizon, last)
            candidates.extend(rows)
        candidates.sort(key=lambda a: (a.created_at, a.id), reverse=True)
        for asset in candidates:
            if horizon is not None and (asset.created_at, asset.id) < horizon:
                break
            if len(page) == limit:
                return page, encode_cursor(page[-1])
            before = (asset.created_at, asset.id)
            if asset.sha256 in seen or any(
                assets.has_newer_copy(db, asset.sha256, asset.created_at, asset.id, project)
                for other, db in dbs.items()
                if other != asset.location
            ):
                continue
            seen.add(asset.sha256)
            page.append(asset)
        if horizon is None:
            return page, None
