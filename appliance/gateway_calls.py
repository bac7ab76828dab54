"""The api's own calls to the model gateway: embeddings and chat, under a key of its own.

The api answers `ask` through the gateway as any client would (its OpenAI-compatible
routes), so the alias decides the backend: llama.cpp on a laptop, vLLM on a GPU box. The
key lives in `api/gateway.token` (0600); a revoked or missing one is replaced by a new
`gateway`-scope key on next use, so revoking it cuts the api off until it makes another,
which an operator sees in `fieldbox keys list`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from appliance.config import FieldboxConfig
from store import keys
from store.db import Database, replace_file
from store.paths import Layout

KEY_NAME = "api (ask answers)"
_decode = msgspec.json.Decoder().decode


class GatewayFailed(Exception):
    """The gateway refused or failed a call; `status` is what the api answers (502/503/504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GatewayDeferred(GatewayFailed):
    """A background call the gateway put off while chats run (503, error code `deferred`)."""


BACKGROUND = {"Priority": "u=7"}
"""RFC 9218's lowest urgency: the gateway runs such a call only between chat requests."""


def gateway_token(layout: Layout, key_db: Database) -> str:
    """The api's live gateway key, made (and written 0600, durably) when there is none."""
    path = layout.ask_gateway_token
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if token:
        key = keys.verify(key_db, token)
        if key is not None and "gateway" in key.scopes:
            return token
    _, token = keys.create(key_db, KEY_NAME, ("gateway",))
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, token + "\n", durable=True)
    os.chmod(path, 0o600)
    return token


def gateway_base(cfg: FieldboxConfig, layout: Layout) -> str:
    """`[ask] gateway_url`, else where this box's gateway listens."""
    if cfg.ask.gateway_url:
        return cfg.ask.gateway_url.rstrip("/")
    from appliance.admin.boxstate import gateway_url
    from appliance.supervisor import read_up_status

    return gateway_url(cfg, read_up_status(layout))


class GatewayCalls:
    """One keep-alive session to the gateway; the key is read (or made) on first use."""

    def __init__(self, cfg: FieldboxConfig, layout: Layout, key_db: Database) -> None:
        self.cfg = cfg
        self.layout = layout
        self.key_db = key_db
        self._session: aiohttp.ClientSession | None = None
        self._token = ""

    async def _headers(self) -> dict[str, str]:
        if not self._token:
            self._token = await asyncio.to_thread(gateway_token, self.layout, self.key_db)
        return {"Authorization": f"Bearer {self._token}"}

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.cfg.ask.timeout_s, sock_connect=5)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _post(
        self, path: str, body: dict[str, Any], extra: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        url = gateway_base(self.cfg, self.layout) + path
        for attempt in (1, 2):
            headers = {**await self._headers(), **(extra or {})}
            try:
                resp = await self._open().post(url, json=body, headers=headers)
            except TimeoutError as exc:
                raise GatewayFailed(504, "the model gateway did not answer in time") from exc
            except aiohttp.ClientError as exc:
                raise GatewayFailed(503, f"the model gateway is unreachable ({url})") from exc
            if resp.status == 401 and attempt == 1:
                resp.release()
                self._token = ""  # revoked since: make a new key once
                continue
            if resp.status >= 400:
                raw = await resp.read()
                resp.release()
                if resp.status == 503 and _code(raw) == "deferred":
                    raise GatewayDeferred(503, _message(raw))
                raise GatewayFailed(
                    503 if resp.status in (429, 503) else 502,
                    f"the model gateway answered {resp.status}: {_message(raw)}",
                )
            return resp
        raise GatewayFailed(502, "the model gateway refused the api's key")

    async def embed(self, texts: list[str], background: bool = False) -> list[list[float]]:
        """One vector per text, in order; `background` ones wait for a pause in the chats
        (GatewayDeferred until then)."""
        resp = await self._post(
            "/v1/embeddings",
            {"model": self.cfg.ask.embed_alias, "input": texts},
            BACKGROUND if background else None,
        )
        async with resp:
            data = _decode(await resp.read())
        rows = sorted(data.get("data") or [], key=lambda r: r.get("index", 0))
        if len(rows) != len(texts):
            raise GatewayFailed(502, "the embeddings answer has the wrong number of vectors")
        return [list(r["embedding"]) for r in rows]

    async def chat(self, body: dict[str, Any]) -> tuple[str, str]:
        """A whole chat answer: its text and the model that wrote it."""
        resp = await self._post("/v1/chat/completions", {**body, "stream": False})
        async with resp:
            data = _decode(await resp.read())
        choice = (data.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        if choice.get("finish_reason") == "length":
            raise GatewayFailed(502, "the model's answer was cut short (max_tokens)")
        return str(text), str(data.get("model") or body.get("model"))

    async def chat_stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """A chat answer's text as it is written (server-sent events from the gateway)."""
        resp = await self._post("/v1/chat/completions", {**body, "stream": True})
        async with resp:
            async for line in resp.content:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                chunk = _decode(payload)
                if isinstance(chunk, dict) and "error" in chunk:
                    raise GatewayFailed(502, f"the model failed mid-answer: {chunk['error']}")
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield str(text)

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()


def _code(raw: bytes) -> str | None:
    """The OpenAI error `code` of an error body, if it has one."""
    try:
        data = _decode(raw)
    except msgspec.DecodeError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    return str(err.get("code")) if isinstance(err, dict) and err.get("code") else None


def _message(raw: bytes) -> str:
    try:
        data = _decode(raw)
    except msgspec.DecodeError:
        return raw[:200].decode("utf-8", "replace")
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", ""))[:300]
    return str(err or data)[:300]
