"""What every backend offers the router: OpenAI-shaped requests in, OpenAI-shaped answers out.

The canonical shape inside the gateway is OpenAI's (a request dict as a client would send
it to `/v1/chat/completions`, answers and stream chunks as OpenAI returns them); the Ollama
dialect and the Ollama backend are translated to and from it in `inference.translate`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

Kind = Literal["chat", "completion"]
Json = dict[str, Any]

Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]


class BaseConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    """What every `[[inference.backends]]` table has; each type's struct adds its own keys
    and a `tag` (the `type` value), beside its backend class."""

    name: Name
    """A unique name: in logs, metrics, `/v1/backends`."""

    models: list[Name] = msgspec.field(default_factory=list)
    """The model names it serves (what clients ask for, or aliases point at)."""

    max_concurrency: Positive = 8
    """Calls it runs at once."""

    max_queue: Annotated[int, msgspec.Meta(ge=0)] = 64
    """Calls that may wait beyond those (429 with `Retry-After` past it)."""

    queue_timeout_s: PositiveFloat = 30.0
    """How long a call may wait for its turn (429 after it)."""

    timeout_s: PositiveFloat = 300.0
    """How long a whole call may take."""

    @property
    def type(self) -> str:
        """The `type` this table was loaded as (the struct's tag)."""
        return str(self.__struct_config__.tag)

    def problems(self) -> list[tuple[str, str]]:
        """(key within this table, or "" for the table; problem): what types alone cannot
        catch, for check-config to report at the right line."""
        return [] if self.models else [("models", "`models` is empty")]


class BackendError(Exception):
    """A call that failed. `retryable`: nothing reached the client yet and another target
    may do better (connection refused, 5xx, timeout before the first byte)."""

    def __init__(self, status: int, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the router skips targets that cannot serve a request."""

    chat: bool = True
    completion: bool = True
    embeddings: bool = True
    json_schema: bool = True
    tools: bool = True


@dataclass
class Health:
    """The outcome of one probe."""

    ok: bool
    detail: str = ""
    info: Json = field(default_factory=dict)


@dataclass
class Reply:
    """A finished (non-streamed) answer. `raw` is the upstream's own bytes when they are
    already what an OpenAI client expects, so they can be passed on untouched."""

    body: Json
    raw: bytes | None = None


class Backend:
    """Base class: a named backend serving some models. Subclasses override the calls."""

    type_name = "base"
    capabilities = Capabilities()

    def __init__(self, cfg: BaseConfig, models_dir: Path) -> None:
        # One signature for every type, so the registry can build any of them.
        self.name = cfg.name
        self.models = list(cfg.models)
        self.models_dir = models_dir

    async def start(self) -> None:
        """Open connections or load weights."""

    async def close(self) -> None:
        """Release everything `start` took."""

    async def health(self) -> Health:
        """Probe the backend (cheap; called every few seconds)."""
        return Health(True)

    async def generate(self, kind: Kind, body: Json) -> Reply:
        """A whole chat or text completion for a canonical request."""
        raise BackendError(400, f"{self.type_name} backends cannot do {kind}", retryable=False)

    def stream(self, kind: Kind, body: Json) -> AsyncGenerator[list[Json], None]:
        """Chunks of a chat or text completion, OpenAI-shaped, as they are produced: each
        item the chunks that came in together (never empty)."""
        raise BackendError(400, f"{self.type_name} backends cannot stream", retryable=False)

    async def embed(self, body: Json) -> Json:
        """An OpenAI embeddings answer for `{model, input}`."""
        raise BackendError(400, f"{self.type_name} backends cannot embed", retryable=False)

    def describe(self) -> Json:
        """What `/v1/backends` and `/api/show` say about this backend (no secrets)."""
        can = [name for name, able in asdict(self.capabilities).items() if able]
        return {"name": self.name, "type": self.type_name, "models": self.models, "can": can}
