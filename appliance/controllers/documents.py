"""`/v1/locations/{id}/docs/...`: JSON documents with compare-and-swap writes."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, put
from litestar.params import FromPath, FromQuery, QueryParameter

from appliance.auth import FIELD_ACCESS
from appliance.errors import ApiError
from appliance.schemas import DocumentMeta, DocumentPage
from appliance.services import Svc
from store import documents
from store.errors import PreconditionFailed

Limit = Annotated[int | None, QueryParameter(ge=1, le=1000, required=False)]


def _precondition(if_match: str | None, if_none_match: str | None) -> tuple[str | None, bool]:
    if if_none_match is not None and if_none_match.strip() != "*":
        raise ApiError(400, "If-None-Match must be '*' (create only if absent)")
    if if_match is not None and if_none_match is not None:
        raise ApiError(400, "send either If-Match or If-None-Match, not both")
    if if_match is None and if_none_match is None:
        raise ApiError(
            428,
            "send If-None-Match: * to create or If-Match: <etag> to update",
        )
    return if_match, if_none_match is not None


def _cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII cursor
        raise ApiError(400, "invalid cursor") from exc


class DocumentController(Controller):
    """Documents addressed (location, collection, key), each with an ETag."""

    path = "/v1/locations/{location_id:str}/docs"
    opt = FIELD_ACCESS
    tags = ["documents"]

    @get("/{collection:str}/{key:str}", sync_to_thread=False)
    def read(
        self,
        location_id: FromPath[str],
        collection: FromPath[str],
        key: FromPath[str],
        svc: Svc,
    ) -> Response[bytes]:
        """Exactly the stored JSON, with its ETag."""
        doc = documents.get(svc.locations.db(location_id), collection, key)
        return Response(doc.body, media_type="application/json", headers={"ETag": doc.etag})

    @put("/{collection:str}/{key:str}", status_code=200)
    async def write(
        self,
        request: Request[Any, Any, Any],
        location_id: FromPath[str],
        collection: FromPath[str],
        key: FromPath[str],
        svc: Svc,
    ) -> Response[Any]:
        """Create (If-None-Match: *) → 201 or update (If-Match) → 200; stale → 412."""
        if_match, create = _precondition(
            request.headers.get("if-match"), request.headers.get("if-none-match")
        )
        body = await request.body()
        if len(body) > svc.cfg.api.max_document_bytes:
            raise ApiError(413, f"document is over the {svc.cfg.api.max_document_bytes}-byte limit")
        op = documents.put_op(
            collection,
            key,
            body,
            if_match=if_match,
            if_none_match=create,
            max_bytes=svc.cfg.api.max_document_bytes,
        )
        try:
            doc, created = await svc.committed(svc.locations.db(location_id), op)
        except PreconditionFailed:
            svc.metrics.cas_conflicts.inc()
            raise
        svc.index_wake.set()  # the write queued the document for the ask index
        return Response(
            msgspec.json.encode({"collection": collection, "key": key, "etag": doc.etag}),
            status_code=201 if created else 200,
            media_type="application/json",
            headers={"ETag": doc.etag},
        )

    @delete("/{collection:str}/{key:str}", status_code=204)
    async def remove(
        self,
        request: Request[Any, Any, Any],
        location_id: FromPath[str],
        collection: FromPath[str],
        key: FromPath[str],
        svc: Svc,
    ) -> None:
        """Delete a document; needs If-Match (a stale ETag → 412)."""
        if_match = request.headers.get("if-match")
        if if_match is None:
            raise ApiError(428, "send If-Match: <etag> (or *) to delete")
        op = documents.delete_op(collection, key, if_match=if_match)
        try:
            await svc.committed(svc.locations.db(location_id), op)
        except PreconditionFailed:
            svc.metrics.cas_conflicts.inc()
            raise
        svc.index_wake.set()

    @get("/{collection:str}", sync_to_thread=True)
    def list_page(
        self,
        location_id: FromPath[str],
        collection: FromPath[str],
        svc: Svc,
        request: Request[Any, Any, Any],
        limit: Limit = None,
        cursor: FromQuery[str | None] = None,
    ) -> DocumentPage:
        """A page of the collection in key order; follow `next_cursor` for the next."""
        if limit is None and "limit" in request.query_params:
            # Litestar reads `limit=null` (or `limit=`) as None for an optional int: a page
            # size the client did send but that is no number is its bug to hear about.
            raise ApiError(400, "limit must be an integer from 1 to 1000")
        size = limit or svc.cfg.api.page_size
        docs = documents.list_page(
            svc.locations.db(location_id), collection, after=_cursor(cursor), limit=size + 1
        )
        more = len(docs) > size
        docs = docs[:size]
        next_cursor = (
            base64.urlsafe_b64encode(docs[-1].key.encode()).decode().rstrip("=") if more else None
        )
        items = [
            DocumentMeta(key=d.key, etag=d.etag, updated_at=d.updated_at, body=msgspec.Raw(d.body))
            for d in docs
        ]
        return DocumentPage(items=items, next_cursor=next_cursor)
