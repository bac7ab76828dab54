"""`/admin/models`: backends, aliases, slots, the last hour's traffic, and a prompt box."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template

from appliance.admin.boxstate import gateway_facts, http_json
from appliance.admin.series import gateway_records, gateway_series
from appliance.admin.sessions import CSRF_FIELD
from appliance.admin.site import page, session_of
from appliance.services import Services, Svc, in_thread


class TryForm(msgspec.Struct, kw_only=True):
    """The prompt box."""

    model: str = ""
    prompt: str = ""
    csrf: str = msgspec.field(default="", name=CSRF_FIELD)


Form = Annotated[TryForm, Body(media_type=RequestEncodingType.URL_ENCODED)]


def _facts(svc: Services, token: str) -> dict[str, Any]:
    gateway = gateway_facts(svc.cfg, svc.layout, token)
    records = gateway_records(svc.layout.telemetry_dir)
    # The prompt box asks for a chat answer: only what a chat-capable backend serves.
    chat = {m for b in gateway["backends"] if "chat" in b.get("can", ["chat"]) for m in b["models"]}
    aliases = {a for a, targets in gateway["aliases"].items() if chat.intersection(targets)}
    names = sorted(aliases | chat)
    return {"gateway": gateway, "series": gateway_series(records), "names": names}


def _ask(url: str, token: str, model: str, prompt: str) -> dict[str, Any]:
    start = time.perf_counter()
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
    result = http_json(url + "/v1/chat/completions", token=token, body=body, timeout=120)
    ms = round((time.perf_counter() - start) * 1000)
    if not result.ok:
        return {"error": result.error or f"HTTP {result.status}", "ms": ms}
    choice = (result.body.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    return {"text": text, "ms": ms, "model": result.body.get("model", model)}


class ModelsController(Controller):
    """What the gateway serves and how it is doing."""

    path = "/models"

    @get("/")
    async def models(self, request: Request[Any, Any, Any], svc: Svc) -> Template:
        """Backends and health, aliases, slots, requests/s, latency and TTFT charts."""
        facts = await in_thread(_facts, svc, session_of(request).token)
        return page(request, "models.html", "models", answer=None, asked=None, **facts)

    @post("/try", status_code=200)
    async def try_alias(self, request: Request[Any, Any, Any], data: Form, svc: Svc) -> Template:
        """Send the prompt to a model or alias through the gateway; show the answer."""
        token = session_of(request).token
        facts = await in_thread(_facts, svc, token)
        answer = await in_thread(_ask, facts["gateway"]["url"], token, data.model, data.prompt)
        facts = await in_thread(_facts, svc, token)  # the charts now include this call
        return page(request, "models.html", "models", answer=answer, asked=data, **facts)
