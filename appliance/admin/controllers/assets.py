"""`/admin/assets`: locations and their assets; search; download."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import File, Template

from appliance.admin.site import page
from appliance.services import Services, Svc, in_thread
from appliance.usercontent import content_headers
from store import assets, ingest
from store.assets import Asset

_PER_LOCATION = 200
_SHOWN = 200


def _matches(asset: Asset, q: str) -> bool:
    hay = f"{asset.id} {asset.filename} {asset.kind} {asset.project or ''} {asset.mime_type}"
    return q.lower() in hay.lower()


def _catalog(svc: Services, location: str, q: str) -> dict[str, Any]:
    locations = svc.locations.list()
    found: list[Asset] = []
    for loc in locations:
        if location and loc.id != location:
            continue
        rows = assets.newest_per_sha(
            svc.locations.db(loc.id), loc.id, project=None, before=None, limit=_PER_LOCATION
        )
        found.extend(a for a in rows if not q or _matches(a, q))
    found.sort(key=lambda a: (a.created_at, a.id), reverse=True)
    return {"locations": locations, "assets": found[:_SHOWN], "more": len(found) > _SHOWN}


class AssetsController(Controller):
    """What the crews stored, by location."""

    path = "/assets"

    @get("/")
    async def catalog(
        self,
        request: Request[Any, Any, Any],
        svc: Svc,
        location: FromQuery[str] = "",
        q: FromQuery[str] = "",
    ) -> Template:
        """Every location; assets newest first, filtered by location and a search text."""
        facts = await in_thread(_catalog, svc, location, q.strip())
        return page(request, "assets.html", "assets", location=location, q=q, **facts)

    @get("/{asset_id:str}/download", sync_to_thread=True)
    def download(self, asset_id: FromPath[str], svc: Svc, inline: FromQuery[bool] = False) -> File:
        """The asset's bytes, as a download (inline only for types that cannot run script)."""
        asset, path = ingest.asset_file(svc.layout, svc.locations, asset_id)
        headers = content_headers(asset.filename, asset.mime_type, inline=inline)
        # The type as a header, so Litestar sends it as it is (it would add a second charset).
        return File(path, media_type=headers["content-type"], headers=headers)
