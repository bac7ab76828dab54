"""Canary keys: no client key and no upstream key is ever written anywhere a person or a
machine could read it back (the process log, the telemetry spool, /metrics, any answer).

One real gateway (log level debug, so the most verbose log is the one searched) serves the
embedded model plus two `openai`-type upstreams whose keys are canaries taken from the
environment: one unreachable, one a tiny local server that echoes the key it is sent back
in its error messages, as some OpenAI-compatible servers do. Every kind of request is made
with a canary client key (answered, streamed, refused, failed upstream, revoked); then the
process is stopped, so its log is complete, and everything it wrote is searched.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.inference.conftest import (
    MODEL,
    bearer,
    embedded_model_path,
    new_key,
    revoke_key,
    start_gateway,
)

pytestmark = pytest.mark.timeout(120)

CLOUD_ENV = "FIELDBOX_TEST_CLOUD_KEY"
ECHO_ENV = "FIELDBOX_TEST_ECHO_KEY"
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Upstream:
    """A local OpenAI-compatible server that answers every call with an error echoing the
    Authorization header it got, and remembers every request."""

    port: int
    seen: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _serve_echo(upstream: Upstream) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _remember(self) -> str:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode(errors="replace") if length else ""
            upstream.seen.append(f"{self.command} {self.path}\n{self.headers}\n{body}")
            return self.headers.get("Authorization", "")

        def _json(self, status: int, doc: object) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._remember()
            self._json(200, {"object": "list", "data": [{"id": "echo-model", "object": "model"}]})

        def do_POST(self) -> None:
            auth = self._remember()
            said = f"Incorrect API key provided: {auth}"
            if self.path.endswith("/chat/completions"):
                self._json(401, {"error": {"message": said, "type": "invalid_request_error"}})
            elif self.path.endswith("/embeddings"):
                self._json(500, {"error": {"message": f"internal error for {auth}"}})
            else:  # /completions, streamed: one good chunk, then an error event
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chunk = {
                    "id": "c1",
                    "object": "text_completion",
                    "model": "echo-model",
                    "choices": [{"index": 0, "text": "Hello", "finish_reason": None}],
                }
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                error = {"error": {"message": said}}
                self.wfile.write(b"data: " + json.dumps(error).encode() + b"\n\n")

    server = ThreadingHTTPServer(("127.0.0.1", upstream.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Evidence:
    """What the gateway wrote and answered while canaries were in use."""

    token: str
    secret: str
    revoked_token: str
    cloud_key: str
    echo_key: str
    statuses: dict[str, int]
    bodies: dict[str, str]
    metrics: str
    log: str
    telemetry: str
    upstream_saw: list[str]


def _split(token: str) -> tuple[str, str]:
    """(key id, secret) of a `fbx_{id}_{secret}` token; the secret may hold underscores."""
    key_id, _, secret = token.removeprefix("fbx_").partition("_")
    assert key_id and len(secret) >= 32
    return key_id, secret


def _config(echo_url: str) -> str:
    return f"""
[log]
level = "debug"

[[inference.backends]]
name = "local"
type = "llamacpp"
path = "{embedded_model_path()}"
models = ["{MODEL}"]

[[inference.backends]]
name = "cloud"
type = "openai"
url = "http://127.0.0.1:1/v1"
api_key_env = "{CLOUD_ENV}"
models = ["cloud-model"]

[[inference.backends]]
name = "echo"
type = "openai"
url = "{echo_url}"
api_key_env = "{ECHO_ENV}"
models = ["echo-model"]
"""


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    """Run every kind of request with canary keys, stop the gateway, collect what it wrote."""
    cloud_key = "sk-cloud-canary-" + secrets.token_hex(16)
    echo_key = "sk-echo-canary-" + secrets.token_hex(16)
    upstream = Upstream(free_port())
    echo_server = _serve_echo(upstream)
    root = tmp_path_factory.mktemp("secrets")
    gw = start_gateway(
        root,
        _config(upstream.url),
        env={CLOUD_ENV: cloud_key, ECHO_ENV: echo_key},
        key_name="canary",
    )
    token = gw.token
    http = httpx.Client(base_url=gw.url, timeout=60, headers=bearer(token))
    try:
        revoked_id, revoked_token = new_key(gw.cfg, "canary-revoked", ("gateway",))
        statuses: dict[str, int] = {}
        bodies: dict[str, str] = {}

        def record(name: str, r: httpx.Response) -> None:
            statuses[name] = r.status_code
            bodies[name] = r.text

        chat = {"model": MODEL, "messages": HI, "max_tokens": 8, "temperature": 0}
        record("chat", http.post("/v1/chat/completions", json=chat))
        record("chat stream", http.post("/v1/chat/completions", json={**chat, "stream": True}))
        record(
            "ollama stream",
            http.post(
                "/api/chat", json={"model": MODEL, "messages": HI, "options": {"num_predict": 8}}
            ),
        )
        record("unknown model", http.post("/v1/chat/completions", json={**chat, "model": "nope"}))
        record("bad json", http.post("/v1/chat/completions", content=b'{"model": '))
        record("ollama bad json", http.post("/api/chat", content=b'{"model": '))
        record("key in body", http.post("/v1/chat/completions", json={**chat, "api_key": token}))
        record("max_tokens 0", http.post("/v1/chat/completions", json={**chat, "max_tokens": 0}))
        record("models", http.get("/v1/models"))
        record("backends", http.get("/v1/backends"))
        record("show cloud", http.post("/api/show", json={"model": "cloud-model"}))
        record(
            "cloud chat", http.post("/v1/chat/completions", json={**chat, "model": "cloud-model"})
        )
        record("echo chat", http.post("/v1/chat/completions", json={**chat, "model": "echo-model"}))
        record(
            "echo embeddings",
            http.post("/v1/embeddings", json={"model": "echo-model", "input": "hi"}),
        )
        record(
            "echo stream",
            http.post(
                "/v1/completions",
                json={"model": "echo-model", "prompt": "hi", "max_tokens": 8, "stream": True},
            ),
        )
        record(
            "basic scheme",
            http.get("/v1/models", headers={"Authorization": f"Basic {token}"}),
        )
        key_id, secret = _split(token)
        record(
            "wrong secret",
            http.get("/v1/models", headers=bearer(f"fbx_{key_id}_{secret[::-1]}")),
        )
        record("before revoke", http.get("/v1/models", headers=bearer(revoked_token)))
        revoke_key(gw.cfg, revoked_id)
        record(
            "revoked",
            http.post("/v1/chat/completions", json=chat, headers=bearer(revoked_token)),
        )
        record(
            "revoked ollama",
            http.post(
                "/api/chat", json={"model": MODEL, "messages": HI}, headers=bearer(revoked_token)
            ),
        )
        metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    finally:
        http.close()
        gw.server.stop()
        echo_server.shutdown()
        echo_server.server_close()
    telemetry_dir = gw.cfg.data_dir / "telemetry"
    telemetry = "\n".join(p.read_text() for p in sorted(telemetry_dir.rglob("*")) if p.is_file())
    return Evidence(
        token=token,
        secret=secret,
        revoked_token=revoked_token,
        cloud_key=cloud_key,
        echo_key=echo_key,
        statuses=statuses,
        bodies=bodies,
        metrics=metrics,
        log=Path(gw.server.log_path).read_text(),
        telemetry=telemetry,
        upstream_saw=upstream.seen,
    )


def _places(ev: Evidence) -> dict[str, str]:
    return {
        "process log": ev.log,
        "telemetry": ev.telemetry,
        "/metrics": ev.metrics,
        **{f"answer to {name!r}": body for name, body in ev.bodies.items()},
    }


def test_the_canary_requests_did_what_they_should(evidence: Evidence) -> None:
    """The search below means something: every request reached the gateway and got the
    answer it should, the log and the spool recorded them."""
    expected = {
        "chat": 200,
        "chat stream": 200,
        "ollama stream": 200,
        "unknown model": 404,
        "bad json": 400,
        "ollama bad json": 400,
        "key in body": 400,
        "max_tokens 0": 400,
        "models": 200,
        "backends": 200,
        "show cloud": 200,
        "cloud chat": 503,
        "basic scheme": 401,
        "wrong secret": 401,
        "before revoke": 200,
        "revoked": 401,
        "revoked ollama": 401,
    }
    assert {k: evidence.statuses[k] for k in expected} == expected
    assert evidence.statuses["echo chat"] >= 400
    assert evidence.statuses["echo embeddings"] >= 500
    assert '"error"' in evidence.bodies["echo stream"]
    assert evidence.bodies["chat stream"].rstrip().endswith("data: [DONE]")
    logged = 0
    for line in evidence.log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # llama.cpp writes plain text to stderr
        logged += isinstance(event, dict) and event.get("event") == "request"
    assert logged >= len(expected), "the log does not hold a line per request"
    records = [json.loads(line) for line in evidence.telemetry.splitlines() if line.strip()]
    assert {r["caller"] for r in records} == {"canary"}
    assert len(records) >= 3
    assert "fieldbox_gateway_requests_total" in evidence.metrics


def test_client_key_appears_nowhere(evidence: Evidence) -> None:
    """Neither the canary key nor its secret is in the log, the spool, /metrics or an answer."""
    for place, text in _places(evidence).items():
        for what, value in (
            ("token", evidence.token),
            ("secret", evidence.secret),
            ("revoked token", evidence.revoked_token),
            ("revoked secret", _split(evidence.revoked_token)[1]),
        ):
            assert value not in text, f"the canary {what} leaked into the {place}"


def test_client_key_is_never_sent_upstream(evidence: Evidence) -> None:
    """The upstream gets the box's key, never the caller's."""
    assert evidence.upstream_saw, "the echo upstream was never called"
    assert any(f"Bearer {evidence.echo_key}" in seen for seen in evidence.upstream_saw)
    for seen in evidence.upstream_saw:
        assert evidence.secret not in seen
        assert evidence.cloud_key not in seen


def test_unreachable_upstream_fails_cleanly_without_its_key(evidence: Evidence) -> None:
    """A request for a model whose upstream is down is a 503 naming the model, and the
    upstream's key shows up nowhere, not even in /v1/backends or /api/show."""
    error = json.loads(evidence.bodies["cloud chat"])["error"]
    assert "cloud-model" in error["message"]
    backends = {b["name"]: b for b in json.loads(evidence.bodies["backends"])["backends"]}
    assert backends["cloud"]["healthy"] is False
    assert backends["cloud"]["url"] == "http://127.0.0.1:1/v1"
    for place, text in _places(evidence).items():
        assert evidence.cloud_key not in text, f"the cloud upstream's key leaked into the {place}"


def test_upstream_echoing_its_key_does_not_leak_it(evidence: Evidence) -> None:
    """When an upstream echoes the key it was sent (in a 401, a 500 or a stream error
    event), the gateway still never passes the box's upstream key on or writes it down."""
    leaked = [place for place, text in _places(evidence).items() if evidence.echo_key in text]
    assert not leaked, f"the echo upstream's key leaked into: {', '.join(leaked)}"


def test_upstream_refusing_the_box_key_is_not_blamed_on_the_caller(evidence: Evidence) -> None:
    """An upstream that refuses the box's key is a failed upstream (502), not a 401 that
    makes the client believe its own gateway key is bad."""
    assert evidence.statuses["echo chat"] == 502
