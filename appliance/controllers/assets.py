"""`/v1/assets`: list (deduplicated, newest first), read, and download with Range."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, Response, get, head
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from appliance.auth import FIELD_ACCESS
from appliance.errors import ApiError
from appliance.schemas import AssetOut, AssetPage
from appliance.services import Services, Svc
from appliance.usercontent import content_headers
from store import assets, blobs, catalog
from store.paths import check_label

Limit = Annotated[int | None, QueryParameter(ge=1, le=1000, required=False)]
# ASCII digits only (`\d` takes any Unicode digit); the unit is case-insensitive.
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
_CHUNK = 256 * 1024


def _asset(svc: Svc, asset_id: FromPath[str]) -> assets.Asset:
    loc_id = assets.location_of(asset_id)
    return assets.get(svc.locations.db(loc_id), loc_id, asset_id)


def _position(digits: str) -> int:
    """A byte position; past 19 digits it is beyond any file, and int() of thousands of
    digits would raise (Python caps int/str conversion at 4300 digits)."""
    return int(digits) if len(digits) <= 19 else 2**63


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, inclusive end) of a single `bytes=` range; None means the whole file.

    As RFC 9110 (14.2) allows, a Range that is not one valid byte-range-spec (another
    unit, several ranges, last-pos before first-pos, bad syntax) is ignored: 200 with the
    whole file. 416 only for a valid range that is unsatisfiable: first-pos at or past the
    end, a suffix of length 0, or any range of an empty file.
    """
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.groups()
    if first:
        start = _position(first)
        end = min(_position(last), size - 1) if last else size - 1
        if last and _position(last) < start:
            return None  # an invalid byte-range-spec (14.1.2), not an unsatisfiable one
    else:
        start, end = max(size - _position(last), 0), size - 1
    if start >= size or start > end:
        raise ApiError(
            416,
            f"range {header[:100]!r} is outside the {size}-byte file",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


async def _read(path: str, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as fh:
        await fh.seek(start)
        left = length
        while left > 0:
            chunk = await fh.read(min(_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


class AssetController(Controller):
    """Files the crews uploaded (and, later, job results)."""

    path = "/v1/assets"
    opt = FIELD_ACCESS
    tags = ["assets"]

    @get("/", sync_to_thread=True)
    def list_assets(
        self,
        svc: Svc,
        project_id: Annotated[str, QueryParameter(name="projectId")] = "all",
        location: FromQuery[str | None] = None,
        limit: Limit = None,
        cursor: FromQuery[str | None] = None,
    ) -> AssetPage:
        """Newest first, one entry per sha256; follow `next_cursor` for the next page."""
        project = None if project_id == "all" else check_label("project", project_id)
        if location is not None:
            svc.locations.get(location)
        items, next_cursor = catalog.list_assets(
            svc.locations,
            project=project,
            location=location,
            cursor=cursor,
            limit=limit or svc.cfg.api.page_size,
        )
        return AssetPage(items=[AssetOut.of(a) for a in items], next_cursor=next_cursor)

    @get("/{asset_id:str}", sync_to_thread=False)
    def read(self, asset_id: FromPath[str], svc: Svc) -> AssetOut:
        """One asset's record."""
        return AssetOut.of(_asset(svc, asset_id))

    @get("/{asset_id:str}/content", sync_to_thread=True)
    def content(
        self,
        request: Request[Any, Any, Any],
        asset_id: FromPath[str],
        svc: Svc,
    ) -> Response[Any]:
        """The bytes; honours a single `Range` (206) for chunked or resumed downloads."""
        part = _content(svc, asset_id, request.headers.get("range"))
        return Stream(
            _read(part.path, part.start, part.length),
            status_code=part.status,
            media_type=part.mime_type,
            headers=part.headers,
        )

    @head("/{asset_id:str}/content", sync_to_thread=True)
    def content_head(
        self,
        request: Request[Any, Any, Any],
        asset_id: FromPath[str],
        svc: Svc,
    ) -> Response[None]:
        """Size, type and range support of the bytes, without them (for download managers)."""
        part = _content(svc, asset_id, request.headers.get("range"))
        # The type travels as a header (it is in `part.headers`): Litestar would try to
        # encode `None` as that type.
        return Response(None, status_code=part.status, headers=part.headers)


@dataclass(frozen=True)
class _Part:
    path: str
    start: int
    length: int
    status: int
    mime_type: str
    headers: dict[str, str]


def _content(svc: Services, asset_id: str, range_header: str | None) -> _Part:
    asset = _asset(svc, asset_id)
    path, size = blobs.existing_blob(svc.layout, svc.locations.get(asset.location), asset.sha256)
    span = parse_range(range_header, size)
    start, end = span if span else (0, size - 1)
    length = end - start + 1 if size else 0
    # Always an attachment, with the sandboxing headers: this is the admin page's origin.
    headers = content_headers(asset.filename, asset.mime_type, inline=False)
    # As a header, so that Litestar sends it as it is (it would add a second charset).
    mime_type = headers["content-type"]
    headers.update(
        {"Accept-Ranges": "bytes", "ETag": f'"{asset.sha256}"', "Content-Length": str(length)}
    )
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return _Part(str(path), start, length, 206 if span else 200, mime_type, headers)
