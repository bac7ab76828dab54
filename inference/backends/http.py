"""The HTTP plumbing every remote backend shares: one keep-alive pool per upstream
(`upstream.Upstream`), upstream credentials from config only, and failures sorted into
retryable or not."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from inference.backends.base import Backend, BackendError, BaseConfig, Health, Json, PositiveFloat
from inference.backends.upstream import Response, Upstream

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class RemoteConfig(BaseConfig, kw_only=True):
    """What every backend reached over HTTP has: where, how long a stream may be silent,
    and where its upstream key comes from (never from a request)."""

    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    """The upstream's base URL (an OpenAI-compatible one usually ends in `/v1`)."""

    stream_idle_timeout_s: PositiveFloat = 60.0
    """A stream that sends nothing this long is ended with an error event."""

    api_key_env: str = ""
    """An environment variable holding the upstream's API key."""

    api_key_file: str = ""
    """A file holding the upstream's API key (not both this and `api_key_env`)."""

    def problems(self) -> list[tuple[str, str]]:
        """The common checks, and a key given two ways."""
        problems = super().problems()
        if self.api_key_env and self.api_key_file:
            problems.append(("", "both api_key_env and api_key_file are set"))
        return problems


def upstream_key(cfg: RemoteConfig) -> str | None:
    """The upstream's API key from the environment variable or file config names."""
    if cfg.api_key_env:
        return os.environ.get(cfg.api_key_env) or None
    if cfg.api_key_file:
        try:
            return Path(cfg.api_key_file).read_text().strip() or None
        except OSError:
            return None
    return None


class HttpBackend(Backend):
    """A backend reached over HTTP at `cfg.url`."""

    health_path = "/health"

    def __init__(self, cfg: RemoteConfig, models_dir: Path) -> None:
        super().__init__(cfg, models_dir)
        self.cfg = cfg
        self.base = cfg.url.rstrip("/")
        self.prefix = urlsplit(self.base).path
        self._upstream: Upstream | None = None
        # Resolved once at start; an upstream key set but missing disables the backend
        # rather than calling a paid upstream anonymously.
        self._key: str | None = None
        self.disabled_reason = ""

    async def start(self) -> None:
        """Open the connection pool."""
        self._key = upstream_key(self.cfg)
        if (self.cfg.api_key_env or self.cfg.api_key_file) and self._key is None:
            self.disabled_reason = "its API key is not available"
        # Fixed headers only: nothing a client sends (cookies, its own key) reaches upstream.
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        self._upstream = Upstream(self.base, headers, connect_timeout=5.0)

    async def close(self) -> None:
        """Close the pool."""
        if self._upstream is not None:
            await self._upstream.close()

    @property
    def upstream(self) -> Upstream:
        """The connection pool (after `start`)."""
        assert self._upstream is not None, "backend not started"
        return self._upstream

    async def get(self, url: str, timeout: float = 3.0) -> tuple[int, bytes]:
        """GET a URL on the upstream's origin: status and body."""
        async with await self.upstream.request("GET", urlsplit(url).path, None, timeout) as resp:
            return resp.status, await resp.read()

    async def health(self) -> Health:
        """GET the health path; 2xx is healthy."""
        if self.disabled_reason:
            return Health(False, self.disabled_reason)
        try:
            status, _ = await self.get(self.health_url())
        except OSError as exc:  # TimeoutError and every connection failure
            return Health(False, f"unreachable: {type(exc).__name__}")
        if status < 300:
            return Health(True)
        return Health(False, f"{self.health_path} answered {status}")

    def redact(self, text: str) -> str:
        """`text` with the upstream key blanked: upstreams may echo it in their errors."""
        return text.replace(self._key, "[redacted]") if self._key else text

    def health_url(self) -> str:
        """Where the health probe goes."""
        return self.base + self.health_path

    async def _post(self, path: str, body: Json) -> Response:
        resp = await self.upstream.request(
            "POST", self.prefix + path, _encode(body), self.cfg.timeout_s
        )
        if resp.status >= 300:
            try:
                raw = await resp.read()
            finally:
                resp.release()
            raise upstream_error(resp.status, raw, self.redact)
        return resp

    async def post_json(self, path: str, body: Json) -> tuple[Json, bytes]:
        """POST a JSON body; the decoded answer and its bytes, or a sorted BackendError."""
        try:
            async with await self._post(path, body) as resp:
                raw = await resp.read()
        except TimeoutError as exc:  # before OSError, of which it is a subclass
            raise BackendError(504, f"{self.name}: upstream timed out", retryable=True) from exc
        except OSError as exc:
            raise BackendError(502, f"{self.name}: {type(exc).__name__}", retryable=True) from exc
        try:
            return _decode(raw), raw
        except msgspec.DecodeError as exc:
            raise BackendError(502, f"{self.name}: answer is not JSON", retryable=True) from exc

    async def post_lines(self, path: str, body: Json) -> AsyncGenerator[list[bytes], None]:
        """POST and yield the answer's non-empty lines, stripped, those in together at once.

        Errors before the first line are retryable; after it they end the stream.
        """
        started = False
        idle = self.cfg.stream_idle_timeout_s
        try:
            async with await self._post(path, body) as resp:
                # A stalled upstream must not hang the client until `timeout_s`.
                while lines := await resp.lines(idle):
                    started = True
                    yield lines
        except TimeoutError as exc:  # before OSError, of which it is a subclass
            raise BackendError(
                504, f"{self.name}: upstream stalled or timed out", retryable=not started
            ) from exc
        except OSError as exc:
            raise BackendError(
                502, f"{self.name}: connection lost ({type(exc).__name__})", retryable=not started
            ) from exc

    def describe(self) -> Json:
        """Name, type, models, url: never the key."""
        return {**super().describe(), "url": self.base}


def upstream_error(status: int, raw: bytes, redact: Callable[[str], str]) -> BackendError:
    """An upstream error answer → BackendError; 5xx and 429 may go to another target.

    401/403 from an upstream are about the box's credentials, not the caller's: a 502.
    """
    message = redact(_error_message(raw)) or f"upstream answered {status}"
    if status in (401, 403):
        return BackendError(
            502, f"upstream refused this box's credentials ({status})", retryable=True
        )
    if status >= 500 or status == 429:
        return BackendError(502, f"upstream error {status}: {message}", retryable=True)
    return BackendError(status, message, retryable=False)


def _error_message(raw: bytes) -> str:
    try:
        data: Any = _decode(raw)
    except msgspec.DecodeError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message", ""))[:500]
        if isinstance(err, str):
            return err[:500]
        if isinstance(data.get("detail"), str):
            return str(data["detail"])[:500]
    return ""
