"""`POST /v1/locations/{id}/ask`: a grounded answer from the location's own records."""

from __future__ import annotations

from litestar import Controller, Response, post
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from appliance.ask import Answer, AskRequest
from appliance.auth import FIELD_ACCESS
from appliance.errors import ApiError
from appliance.services import Svc, in_thread
from store.paths import check_label

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class AskController(Controller):
    """Questions about a location, answered only from what it holds, with citations."""

    path = "/v1/locations/{location_id:str}/ask"
    opt = FIELD_ACCESS
    tags = ["ask"]

    @post("/", status_code=200)
    async def ask(
        self, location_id: FromPath[str], data: JSONBody[AskRequest], svc: Svc
    ) -> Response[Answer] | Stream:
        """Answer `question` (SSE with `stream: true`); `not in records` when nothing fits."""
        question = data.question.strip()
        if not question:
            raise ApiError(400, "question is empty")
        if len(question) > svc.cfg.ask.max_question_chars:
            raise ApiError(
                400,
                f"question is {len(question)} characters; the limit is "
                f"{svc.cfg.ask.max_question_chars}",
            )
        if data.project is not None:
            check_label("project", data.project)
        await in_thread(svc.locations.get, location_id)  # 404 before any model call
        db = svc.locations.db(location_id)
        asked = AskRequest(
            question=question, project=data.project, alias=data.alias, stream=data.stream
        )
        if data.stream:
            return Stream(
                svc.asker.events(db, asked), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        return Response(await svc.asker.ask(db, asked))
