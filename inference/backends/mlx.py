"""`mlx`: an `mlx_lm.server` on a Mac Mini (OpenAI-compatible chat and completions)."""

from __future__ import annotations

from inference.backends.base import Capabilities
from inference.backends.openai import OpenAICompatBackend


class MlxBackend(OpenAICompatBackend):
    """mlx_lm.server has `/health` at the server root and no embeddings or schema-constrained
    output, so the router sends those requests to another target."""

    type_name = "mlx"
    capabilities = Capabilities(embeddings=False, json_schema=False)

    def health_url(self) -> str:
        """`/health` beside `/v1`."""
        return self.base.removesuffix("/v1") + "/health"
