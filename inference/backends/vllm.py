"""`vllm`: a vLLM OpenAI-compatible server, with vLLM's own structured-output parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from inference.backends import registry
from inference.backends.base import Health, Json, Kind
from inference.backends.http import RemoteConfig
from inference.backends.openai import OpenAIBackend


class VllmConfig(RemoteConfig, tag="vllm", kw_only=True):
    """A vLLM OpenAI-compatible server."""

    structured_output_param: Literal["structured_outputs", "guided_json"] = "structured_outputs"
    """How a JSON schema is passed: `guided_json` for vLLM before 0.10."""


class VllmBackend(OpenAIBackend):
    """vLLM: `/health` for liveness, `/metrics` for its queue, guided decoding for schemas."""

    type_name = "vllm"

    def __init__(self, cfg: VllmConfig, models_dir: Path) -> None:
        super().__init__(cfg, models_dir)
        self.param = cfg.structured_output_param
        # vLLM serves /health and /metrics at the root, beside /v1.
        self.root = self.base.removesuffix("/v1")

    def prepare(self, kind: Kind, body: Json) -> Json:
        """A JSON schema becomes `structured_outputs.json` (or the older `guided_json`)."""
        fmt = body.get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") not in ("json_schema", "json_object"):
            return body
        out = {k: v for k, v in body.items() if k != "response_format"}
        if fmt["type"] == "json_object":
            schema: Json = {"type": "object"}
        else:
            schema = fmt.get("json_schema", {}).get("schema", {"type": "object"})
        if self.param == "guided_json":
            out["guided_json"] = schema
        else:
            out["structured_outputs"] = {"json": schema}
        return out

    async def health(self) -> Health:
        """`/health`, plus the running and waiting request counts from `/metrics`."""
        if self.disabled_reason:
            return Health(False, self.disabled_reason)
        try:
            status, _ = await self.get(self.root + "/health")
            if status >= 300:
                return Health(False, f"/health answered {status}")
            status, text = await self.get(self.root + "/metrics")
        except OSError as exc:  # TimeoutError and every connection failure
            return Health(False, f"unreachable: {type(exc).__name__}")
        info = _queue_figures(text.decode("utf-8", "replace")) if status < 300 else {}
        return Health(True, info=info)


def _queue_figures(text: str) -> Json:
    """`vllm:num_requests_running` and `..._waiting` summed over models, when present."""
    wanted = {"vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting"}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            out[wanted[name]] = out.get(wanted[name], 0.0) + value
    return out


registry.register(VllmConfig, VllmBackend)
