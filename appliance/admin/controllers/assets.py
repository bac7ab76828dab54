"""`/admin/assets`: locations and their assets; search; download; ask a location (its
answer with citations, each linked to its record); one document, read-only."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import File, Template

from appliance.admin.sessions import CSRF_FIELD
from appliance.admin.site import page
from appliance.ask import Answer, AskRequest, Citation
from appliance.gateway_calls import GatewayFailed
from appliance.services import Services, Svc, in_thread
from appliance.usercontent import content_headers
from store import assets, documents, ingest
from store.assets import Asset
from store.errors import InvalidName, NotFound

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
    return {
        "locations": locations,
        "assets": found[:_SHOWN],
        "more": len(found) > _SHOWN,
        "max_question": svc.cfg.ask.max_question_chars,
        "asked": "",
        "answer": None,
        "ask_error": "",
        "citations": [],
    }


class AskForm(msgspec.Struct, kw_only=True):
    """The location view's ask box."""

    location: str = ""
    question: str = ""
    csrf: str = msgspec.field(default="", name=CSRF_FIELD)


AskBody = Annotated[AskForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def _track_href(svc: Services, location: str, c: Citation) -> str:
    """The job page of the scene-facts asset's job, that track's frame chosen; the
    scene-facts JSON itself when no job made the asset (one loaded by hand)."""
    found = None
    if c.asset_id:
        try:
            found = assets.find(svc.locations.db(location), location, c.asset_id)
        except (NotFound, InvalidName):
            found = None
    job_id = found.metadata.get("job_id") if found is not None else None
    if not isinstance(job_id, str) or not job_id:
        return f"/admin/assets/{c.asset_id}/download"
    query = {k: v for k, v in (("track", c.track_id), ("frame", c.frame)) if v is not None}
    return f"/admin/jobs/{job_id}" + (f"?{urlencode(query)}" if query else "")


def cited(svc: Services, location: str, answer: Answer) -> list[dict[str, Any]]:
    """The answer's citations as the page lists them: what, where its link goes, the quote."""
    out = []
    for c in answer.citations:
        if c.source == "doc" and c.collection is not None and c.key is not None:
            query = urlencode({"location": location, "collection": c.collection, "key": c.key})
            href = f"/admin/assets/document?{query}"
        elif c.source == "track":
            href = _track_href(svc, location, c)
        else:
            href = f"/admin/assets/{c.asset_id or c.id}/download"
        label = {"doc": "document", "asset": "asset", "track": "track"}.get(c.source, c.source)
        out.append(
            {
                "source": c.source,
                "label": label,
                "id": c.id,
                "href": href,
                "quote": c.quote,
                "t": c.t,
                "frame": c.frame,
                "track_id": c.track_id,
            }
        )
    return out


def _document(svc: Services, location: str, collection: str, key: str) -> dict[str, Any]:
    """One document's facts and its JSON pretty-printed; `missing` when there is none."""
    try:
        svc.locations.get(location)
        doc = documents.get(svc.locations.db(location), collection, key)
    except (NotFound, InvalidName) as exc:
        return {"missing": str(exc), "doc": None, "pretty": ""}
    try:
        pretty = json.dumps(json.loads(doc.body), indent=2, ensure_ascii=False)
    except ValueError:
        pretty = doc.body.decode(errors="replace")
    return {"missing": "", "doc": doc, "pretty": pretty}


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

    @post("/ask", status_code=200)
    async def ask(self, request: Request[Any, Any, Any], data: AskBody, svc: Svc) -> Template:
        """Ask the chosen location; its view again, with the answer and its citations."""
        location = data.location
        await in_thread(svc.locations.get, location)  # 404 for a location that is not there
        facts = await in_thread(_catalog, svc, location, "")
        question = data.question.strip()
        limit = svc.cfg.ask.max_question_chars
        answer: Answer | None = None
        error = ""
        if not question:
            error = "the question is empty"
        elif len(question) > limit:
            error = f"the question is {len(question)} characters; the limit is {limit}"
        else:
            try:
                answer = await svc.asker.ask(
                    svc.locations.db(location), AskRequest(question=question)
                )
            except GatewayFailed as exc:
                error = f"the model could not answer ({exc.status}): {exc.message}"
        facts.update(
            asked=data.question,
            ask_error=error,
            answer=answer,
            citations=await in_thread(cited, svc, location, answer) if answer else [],
        )
        return page(request, "assets.html", "assets", location=location, q="", **facts)

    @get("/document", sync_to_thread=True)
    def document(
        self,
        request: Request[Any, Any, Any],
        svc: Svc,
        location: FromQuery[str] = "",
        collection: FromQuery[str] = "",
        key: FromQuery[str] = "",
    ) -> Template:
        """One document of a location, its JSON shown as text (read-only); 404 when missing."""
        facts = _document(svc, location, collection, key)
        shown = page(
            request,
            "document.html",
            "assets",
            location=location,
            collection=collection,
            key=key,
            **facts,
        )
        if facts["missing"]:
            shown.status_code = 404
        return shown

    @get("/{asset_id:str}/download", sync_to_thread=True)
    def download(self, asset_id: FromPath[str], svc: Svc, inline: FromQuery[bool] = False) -> File:
        """The asset's bytes, as a download (inline only for types that cannot run script)."""
        asset, path = ingest.asset_file(svc.layout, svc.locations, asset_id)
        headers = content_headers(asset.filename, asset.mime_type, inline=inline)
        # The type as a header, so Litestar sends it as it is (it would add a second charset).
        return File(path, media_type=headers["content-type"], headers=headers)
