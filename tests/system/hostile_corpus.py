"""The hostile-input corpus: named raw requests, each with the exact answer it must get.

Requests go out as raw bytes (`raw_request`), so a path's `..`, `%2e` or NUL reaches the
server exactly as written; httpx would normalise some of them away.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

LOC = "site-1"  # a location the corpus's fixture creates
TUS = "Tus-Resumable: 1.0.0"


@dataclass(frozen=True)
class Case:
    """One hostile request and the answer it must get."""

    name: str
    app: str  # "api" or "gateway"
    method: str
    target: str  # the request target, sent byte for byte
    status: int
    code: str | None = None  # the api's `error` code; None for the gateway's dialects
    headers: tuple[str, ...] = ()
    body: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    """A raw HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 60) -> Answer:
    """Send `head` + `body` on a fresh connection; read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # Refused mid-send: the answer is still in the socket.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + body)
        # No half-close: uvicorn takes the client's EOF for a disconnect and drops the request.
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    raw_headers, _, payload = rest.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in raw_headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    return Answer(int(status_line.split()[1]), headers, payload)


def head_of(case: Case, token: str) -> bytes:
    """The request line and headers of `case`, as bytes."""
    lines = [
        f"{case.method} {case.target} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {token}",
        "Connection: close",
        *case.headers,
    ]
    if case.body or case.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(case.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _meta(**pairs: str) -> str:
    return "Upload-Metadata: " + ",".join(
        f"{k} {base64.b64encode(v.encode('utf-8', 'surrogatepass')).decode()}"
        for k, v in pairs.items()
    )


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


_JSON = "Content-Type: application/json"
_OCTETS = "Content-Type: application/offset+octet-stream"

# Each form of "go up a directory" a client can write into an id or key.
_TRAVERSALS = {
    "raw": "..",
    "pct": "%2e%2e",
    "pct-slash": "..%2f..%2fkeys.db",
    "double": "%252e%252e%252fkeys.db",
    "fullwidth": "%ef%bc%8e%ef%bc%8e",  # U+FF0E twice: NFKC makes it ".."
    "nul": "a%00b",
    "newline": "site-1%0a",
    "backslash": "..%5c..%5ckeys.db",
}


def _traversal_cases() -> list[Case]:
    cases: list[Case] = []
    for form, bad in _TRAVERSALS.items():
        # An encoded '/' is decoded before routing: more segments, no route, 404.
        status, code = (404, "not_found") if "%2f" in bad else (400, "invalid_name")
        cases += [
            Case(f"location id {form}", "api", "GET", f"/v1/locations/{bad}", status, code),
            Case(
                f"collection {form}",
                "api",
                "GET",
                f"/v1/locations/{LOC}/docs/{bad}/k",
                status,
                code,
            ),
            Case(
                f"doc key {form} (PUT)",
                "api",
                "PUT",
                f"/v1/locations/{LOC}/docs/notes/{bad}",
                status,
                code,
                (_JSON, "If-None-Match: *"),
                b'{"a": 1}',
            ),
            Case(f"asset id {form}", "api", "GET", f"/v1/assets/{bad}", status, code),
            Case(f"upload id {form}", "api", "GET", f"/v1/uploads/{bad}", status, code, (TUS,)),
            Case(f"job id {form}", "api", "GET", f"/v1/jobs/{bad}", 404, "not_found"),
        ]
    return cases


def _tus_cases() -> list[Case]:
    create = ("POST", "/v1/uploads")
    ok_meta = _meta(location=LOC, filename="a.bin")
    return [
        Case("tus no Tus-Resumable", "api", *create, 412, "unsupported_tus_version",
             ("Upload-Length: 4", ok_meta)),
        Case("tus wrong version", "api", *create, 412, "unsupported_tus_version",
             ("Tus-Resumable: 0.2.2", "Upload-Length: 4", ok_meta)),
        Case("tus Upload-Length superscript two", "api", *create, 400, "bad_request",
             (TUS, "Upload-Length: \u00b2".encode().decode("latin-1"), ok_meta)),
        Case("tus Upload-Length negative", "api", *create, 400, "bad_request",
             (TUS, "Upload-Length: -1", ok_meta)),
        Case("tus Upload-Length 5000 digits", "api", *create, 400, "bad_request",
             (TUS, "Upload-Length: " + "9" * 5000, ok_meta)),
        Case("tus Upload-Length hex", "api", *create, 400, "bad_request",
             (TUS, "Upload-Length: 0x10", ok_meta)),
        Case("tus no length, no defer", "api", *create, 400, "bad_request", (TUS, ok_meta)),
        Case("tus metadata not base64", "api", *create, 400, "bad_request",
             (TUS, "Upload-Length: 4", "Upload-Metadata: location !!!,filename ???")),
        Case("tus metadata filename with CR LF", "api", *create, 400, "invalid_name",
             (TUS, "Upload-Length: 4", _meta(location=LOC, filename="a\r\nSet-Cookie: x"))),
        Case("tus metadata filename with NUL", "api", *create, 400, "invalid_name",
             (TUS, "Upload-Length: 4", _meta(location=LOC, filename="a\x00.bin"))),
        Case("tus metadata filetype text/html;x=\\x07", "api", *create, 400, "invalid_name",
             (TUS, "Upload-Length: 4",
              _meta(location=LOC, filename="a.bin", filetype="text/html;x=\x07"))),
        Case("tus metadata filetype not type/subtype", "api", *create, 400, "invalid_name",
             (TUS, "Upload-Length: 4", _meta(location=LOC, filename="a", filetype="html"))),
        Case("tus metadata location traversal", "api", *create, 400, "invalid_name",
             (TUS, "Upload-Length: 4", _meta(location="../../etc", filename="a.bin"))),
        Case("tus metadata filename traversal is kept as a name", "api", *create, 201, None,
             (TUS, "Upload-Length: 4", _meta(location=LOC, filename="../../pwned.bin"))),
        Case("tus PATCH wrong content type", "api", "PATCH", "/v1/uploads/{upload}", 415,
             "unsupported_media_type", (TUS, "Upload-Offset: 0", _JSON), b"abcd"),
        Case("tus PATCH offset superscript", "api", "PATCH", "/v1/uploads/{upload}", 400,
             "bad_request", (TUS, "Upload-Offset: \u00b2".encode().decode("latin-1"), _OCTETS),
             b"ab"),
        Case("tus PATCH offset 5000 digits", "api", "PATCH", "/v1/uploads/{upload}", 400,
             "bad_request", (TUS, "Upload-Offset: " + "1" * 5000, _OCTETS), b"ab"),
        Case("tus PATCH no offset", "api", "PATCH", "/v1/uploads/{upload}", 400,
             "bad_request", (TUS, _OCTETS), b"ab"),
        Case("tus PATCH past the length", "api", "PATCH", "/v1/uploads/{upload}", 413,
             "too_large", (TUS, "Upload-Offset: 0", _OCTETS), b"abcdefgh"),
        Case("tus PATCH bad checksum algorithm", "api", "PATCH", "/v1/uploads/{upload}", 400,
             "bad_request", (TUS, "Upload-Offset: 0", _OCTETS, "Upload-Checksum: crc32 AAAA"),
             b"ab"),
        Case("tus PATCH wrong checksum", "api", "PATCH", "/v1/uploads/{upload}", 460,
             "checksum_mismatch",
             (TUS, "Upload-Offset: 0", _OCTETS,
              "Upload-Checksum: sha1 " + base64.b64encode(b"\0" * 20).decode()), b"ab"),
    ]  # fmt: skip


def _range_cases() -> list[Case]:
    content = "/v1/assets/{asset}/content"
    return [
        # RFC 9110 14.1.1: a last-pos past the end means the end: the whole body, as a 206.
        Case("Range 5000 digits", "api", "GET", content, 206, None,
             ("Range: bytes=0-" + "9" * 5000,)),
        Case("Range start past end", "api", "GET", content, 416, "range_not_satisfiable",
             ("Range: bytes=100000-",)),
        Case("Range reversed is ignored", "api", "GET", content, 200, None,
             ("Range: bytes=5-1",)),
        Case("Range other unit is ignored", "api", "GET", content, 200, None,
             ("Range: items=0-1",)),
        Case("Range superscript digits are ignored", "api", "GET", content, 200, None,
             ("Range: bytes=\u00b2-".encode().decode("latin-1"),)),
        Case("Range suffix zero", "api", "GET", content, 416, "range_not_satisfiable",
             ("Range: bytes=-0",)),
        Case("Range garbage is ignored", "api", "GET", content, 200, None, ("Range: bytes=a-b",)),
    ]  # fmt: skip


def _body_cases() -> list[Case]:
    doc = f"/v1/locations/{LOC}/docs/notes/k1"
    _JSON = "Content-Type: application/json\r\nIf-None-Match: *"
    return [
        Case("doc JSON nested 100000 deep", "api", "PUT", doc, 400, "invalid_document",
             (_JSON,), _deep(100_000)),
        Case("doc not JSON", "api", "PUT", doc, 400, None, (_JSON,), b"{nope"),
        Case("doc invalid UTF-8", "api", "PUT", doc, 400, None, (_JSON,), b'{"a": "\xff\xfe"}'),
        Case("doc over the size limit", "api", "PUT", doc, 413, "too_large",
             (_JSON,), b'{"a": "' + b"x" * (17 * 1024 * 1024) + b'"}'),
        Case("location with control characters", "api", "POST", "/v1/locations", 400, None,
             (_JSON,), b'{"id": "x\\u0000y", "account": "acme", "geo_prefix": "u4", "name": "n"}'),
        Case("location id with newline", "api", "POST", "/v1/locations", 400, None,
             (_JSON,), b'{"id": "site-9\\n", "account": "acme", "geo_prefix": "u4", "name": "n"}'),
        Case("location account traversal", "api", "POST", "/v1/locations", 400, None,
             (_JSON,), b'{"id": "s9", "account": "../..", "geo_prefix": "u4", "name": "n"}'),
        Case("job JSON nested deep", "api", "POST", "/v1/jobs", 400, "invalid_document",
             (_JSON,), b'{"kind": "perception", "params": ' + _deep(100_000) + b"}"),
        Case("job params past the caps", "api", "POST", "/v1/jobs", 400, None, (_JSON,),
             b'{"kind": "splat", "asset_id": "{asset}", "params": {"iterations": 1000000000000}}'),
        Case("job kind unknown", "api", "POST", "/v1/jobs", 400, None, (_JSON,),
             b'{"kind": "rm -rf", "asset_id": "{asset}"}'),
        Case("docs list limit null", "api", "GET", f"/v1/locations/{LOC}/docs/notes?limit=null",
             400, None),
        Case("docs list cursor non-ASCII", "api", "GET",
             f"/v1/locations/{LOC}/docs/notes?cursor=%ff%fe", 400, None),
        Case("gateway chat nested deep", "gateway", "POST", "/v1/chat/completions", 400, None,
             (_JSON,), b'{"model": "smollm2-135m", "messages": ' + _deep(100_000) + b"}"),
        Case("gateway chat not JSON", "gateway", "POST", "/v1/chat/completions", 400, None,
             (_JSON,), b"{nope"),
        Case("gateway chat role object", "gateway", "POST", "/v1/chat/completions", 400, None,
             (_JSON,), b'{"model": "smollm2-135m", "messages": [{"role": {}, "content": "x"}]}'),
        Case("gateway chat huge max_tokens", "gateway", "POST", "/v1/chat/completions", 400,
             None, (_JSON,),
             b'{"model": "smollm2-135m", "max_tokens": 1e300, "messages": []}'),
        Case("gateway ollama chat nested deep", "gateway", "POST", "/api/chat", 400, None,
             (_JSON,), b'{"model": "smollm2-135m", "messages": ' + _deep(100_000) + b"}"),
        Case("gateway ollama chat over the size limit", "gateway", "POST", "/api/chat", 413,
             None, (_JSON,), b'{"model": "m", "prompt": "' + b"x" * (33 * 1024 * 1024) + b'"}'),
        Case("gateway embeddings input not text", "gateway", "POST", "/v1/embeddings", 400,
             None, (_JSON,), b'{"model": "smollm2-135m", "input": {"a": 1}}'),
    ]  # fmt: skip


def _head_cases() -> list[Case]:
    many = tuple(f"X-Pad-{i}: {'a' * 1000}" for i in range(40))
    one = (f"X-Pad: {'a' * 200_000}",)
    long_target = "/v1/locations/" + "a" * 9000
    return [
        Case("api 40 KB of headers", "api", "GET", "/v1/locations", 431,
             "request_header_fields_too_large", many),
        Case("api one 200 KB header", "api", "GET", "/v1/locations", 431,
             "request_header_fields_too_large", one),
        Case("api 9 KB target", "api", "GET", long_target, 414, "uri_too_long"),
        Case("gateway 40 KB of headers", "gateway", "GET", "/v1/models", 431, None, many),
        Case("gateway ollama 200 KB header", "gateway", "GET", "/api/tags", 431, None, one),
        Case("gateway 9 KB target", "gateway", "GET", "/v1/" + "a" * 9000, 414, None),
        Case("api header with NUL", "api", "GET", "/v1/locations", 400, None,
             ("X-Evil: a\x00b",)),
    ]  # fmt: skip


CORPUS: list[Case] = [
    *_traversal_cases(),
    *_tus_cases(),
    *_range_cases(),
    *_body_cases(),
    *_head_cases(),
]
