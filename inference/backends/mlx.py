"""`mlx`: an `mlx_lm.server` on a Mac Mini (OpenAI-compatible chat and completions)."""

from __future__ import annotations

from inference.backends import registry
from inference.backends.base import Capabilities
from inference.backends.http import RemoteConfig
from inference.backends.openai import OpenAIBackend


class MlxConfig(RemoteConfig, tag="mlx", kw_only=True):
    """An `mlx_lm.server` (a Mac Mini)."""


class MlxBackend(OpenAIBackend):
    """mlx_lm.server has `/health` at the server root and no embeddings or schema-constrained
    output, so the router sends those requests to another target."""

    type_name = "mlx"
    capabilities = Capabilities(embeddings=False, json_schema=False)

    def health_url(self) -> str:
        """`/health` beside `/v1`."""
        return self.base.removesuffix("/v1") + "/health"


registry.register(MlxConfig, MlxBackend)
