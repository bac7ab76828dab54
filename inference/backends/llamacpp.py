"""`llamacpp`: llama-cpp-python in this process (the embedded default, SmolLM2-135M).

The model is not thread-safe, so every call runs on one dedicated thread, one at a time;
the event loop only waits on futures and a queue, never on generation itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec

from inference import slots
from inference.backends import registry
from inference.backends.base import (
    Backend,
    BackendError,
    BaseConfig,
    Health,
    Json,
    Kind,
    Positive,
    Reply,
)

_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "logit_bias",
)
_CHAT_ONLY = ("tools", "tool_choice", "logprobs", "top_logprobs")
# Sampling for what a client leaves unset. llama-cpp-python's own defaults have no repeat
# penalty (1.0), and small models then loop ("Check the roof's foundation..." until
# max_tokens); 1.2 with a nucleus-trimmed sampler stopped every loop on the fixed
# inspection questions (docs/gateway.md). A client's own values always win.
SAMPLING_DEFAULTS: dict[str, int | float] = {
    "repeat_penalty": 1.2,
    "temperature": 0.4,
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
}
_DONE = object()


_LOOSE_CHAR = 'char ::= [^"\\\\]'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


def schema_grammar(schema: str) -> str:
    """The GBNF grammar of a JSON schema, its strings free of raw control characters.

    llama-cpp-python's port of llama.cpp's converter lets a string hold any character but
    `"` and `\\`, a raw newline included, which no JSON parser accepts (seen: SmolLM2 wrote
    one into an `ask` answer); llama.cpp's own converter excludes them.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf: str = json_schema_to_gbnf(schema)
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


class LlamaCppConfig(BaseConfig, tag="llamacpp", kw_only=True):
    """llama-cpp-python in this process. `path` names a GGUF file; or `slot` + `version`."""

    path: str = ""
    """A GGUF file to load (or `slot`, not both)."""

    slot: str = ""
    """A model slot under `models/` (or `path`, not both)."""

    version: str = "latest"
    """The slot's version to load: `latest` or a pinned one (`v3`)."""

    n_ctx: Positive = 2048
    """Context length in tokens."""

    n_threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Threads generating; 0 lets llama.cpp choose."""

    max_concurrency: Positive = 1
    """One model thread: calls take turns."""

    sampling: dict[str, int | float] = msgspec.field(default_factory=dict)
    """Defaults for the sampling settings a request leaves unset, over the built-in ones
    (`repeat_penalty = 1.2`, `temperature = 0.4`, `top_p = 0.9`, `top_k = 40`,
    `min_p = 0.05`), e.g. `sampling = { repeat_penalty = 1.1 }`."""

    def problems(self) -> list[tuple[str, str]]:
        """Exactly one of `path` and `slot`, the common checks, known `sampling` keys."""
        own = (
            [("", "give exactly one of path or slot")] if bool(self.path) == bool(self.slot) else []
        )
        unknown = sorted(set(self.sampling) - set(SAMPLING_DEFAULTS))
        keys = [("sampling", f"unknown sampling setting {k!r}") for k in unknown]
        return own + super().problems() + keys


class LlamaCppBackend(Backend):
    """A GGUF model loaded with llama-cpp-python; JSON schemas become llama.cpp grammars."""

    type_name = "llamacpp"

    def __init__(self, cfg: LlamaCppConfig, models_dir: Path) -> None:
        super().__init__(cfg, models_dir)
        self.cfg = cfg
        self.sampling: dict[str, int | float] = {**SAMPLING_DEFAULTS, **cfg.sampling}
        self.path: Path | None = None
        self.error = ""
        self._llm: Any = None
        self._embedder: Any = None
        # One thread owns the model; the lock also guards a lazily loaded embedder.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=cfg.name)
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    def model_path(self) -> Path:
        """The GGUF file this backend loads: `path`, or the slot's resolved version."""
        if self.cfg.path:
            return Path(self.cfg.path)
        return slots.gguf_in(slots.version_dir(self.models_dir, self.cfg.slot, self.cfg.version))

    async def start(self) -> None:
        """Load the weights on the model thread; a failure leaves the backend unhealthy."""
        try:
            self.path = self.model_path()
            self._llm = await self._run(self._load, False)
        except (slots.SlotError, OSError, ValueError) as exc:
            self.error = f"cannot load model: {exc}"

    def _load(self, embedding: bool) -> Any:
        import llama_cpp  # heavy (native library): only where a llamacpp backend runs

        assert self.path is not None
        if not self.path.is_file():
            raise OSError(f"{self.path} does not exist")
        extra: dict[str, Any] = {}
        if embedding:
            extra = {"embedding": True, "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN}
        return llama_cpp.Llama(
            str(self.path),
            n_ctx=self.cfg.n_ctx,
            n_threads=self.cfg.n_threads or None,
            verbose=False,
            **extra,
        )

    async def close(self) -> None:
        """Stop the model thread and drop the weights."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._llm = self._embedder = None

    async def health(self) -> Health:
        """Healthy once the weights are loaded."""
        if self._llm is None:
            return Health(False, self.error or "loading")
        return Health(True, info={"path": str(self.path)})

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(self._locked, fn, *args))

    def _locked(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            return fn(*args)

    def _grammar(self, body: Json) -> Any:
        fmt = body.get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
            return None
        if fmt["type"] == "json_object":
            schema: Json = {"type": "object"}
        else:
            schema = fmt.get("json_schema", {}).get("schema") or {"type": "object"}
        text = msgspec.json.encode(schema).decode()
        grammar = self._grammars.get(text)
        if grammar is None:
            import llama_cpp.llama_grammar

            try:
                grammar = llama_cpp.llama_grammar.LlamaGrammar.from_string(
                    schema_grammar(text), verbose=False
                )
            except (ValueError, RuntimeError, KeyError) as exc:
                raise BackendError(
                    400, f"schema cannot be turned into a grammar: {exc}", retryable=False
                ) from exc
            if len(self._grammars) > 256:
                self._grammars.clear()
            self._grammars[text] = grammar
        return grammar

    def _call(self, kind: Kind, body: Json, stream: bool) -> Any:
        if self._llm is None:
            raise BackendError(503, f"{self.name}: model not loaded", retryable=True)
        given = {k: body[k] for k in _SAMPLING if body.get(k) is not None}
        args: Json = {**self.sampling, **given}
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        args["max_tokens"] = limit or 512
        args["stream"] = stream
        grammar = self._grammar(body)
        if grammar is not None:
            args["grammar"] = grammar
        if kind == "chat":
            args.update({k: body[k] for k in _CHAT_ONLY if body.get(k) is not None})
            return self._llm.create_chat_completion(messages=body["messages"], **args)
        return self._llm.create_completion(prompt=body["prompt"], **args)

    async def generate(self, kind: Kind, body: Json) -> Reply:
        """A whole answer, generated on the model thread."""
        result: Json = await self._run(self._call, kind, body, False)
        result["model"] = body["model"]
        return Reply(result)

    async def stream(self, kind: Kind, body: Json) -> AsyncGenerator[list[Json], None]:
        """Chunks handed from the model thread through a queue, one per token as it comes out."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                chunks: Iterator[Json] = self._call(kind, body, True)
                for chunk in chunks:
                    if stop.is_set():  # the client went away: stop generating
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                # Counted here, on the model thread: the model is not safe to share.
                count = _prompt_tokens(self._llm, kind, body)
                loop.call_soon_threadsafe(queue.put_nowait, (_DONE, count))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        future = loop.run_in_executor(self._pool, functools.partial(self._locked, produce))
        prompt_tokens = 0
        completion_tokens = 0
        try:
            while True:
                item = await queue.get()
                if isinstance(item, tuple) and item[0] is _DONE:
                    prompt_tokens = item[1]
                    break
                if isinstance(item, BackendError):
                    raise item
                if isinstance(item, BaseException):
                    raise BackendError(
                        500, f"{self.name}: {type(item).__name__}", retryable=completion_tokens == 0
                    ) from item
                completion_tokens += 1 if _has_content(kind, item) else 0
                item["model"] = body["model"]
                yield [item]
            yield [
                {
                    "id": "usage",
                    "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                    "model": body["model"],
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            ]
        finally:
            stop.set()
            await asyncio.shield(future)

    async def embed(self, body: Json) -> Json:
        """Mean-pooled embeddings from a second, embedding-mode instance of the model."""
        if self._llm is None:
            raise BackendError(503, f"{self.name}: model not loaded", retryable=True)

        def run() -> Json:
            if self._embedder is None:
                self._embedder = self._load(True)
            result: Json = dict(self._embedder.create_embedding(body["input"]))
            return result

        result: Json = await self._run(run)
        result["model"] = body["model"]
        return result

    def describe(self) -> Json:
        """Name, type, models and the file loaded."""
        return {**super().describe(), "path": str(self.path) if self.path else None}


def _has_content(kind: Kind, chunk: Json) -> bool:
    choices = chunk.get("choices") or [{}]
    if kind == "chat":
        delta = choices[0].get("delta") or {}
        return bool(delta.get("content") or delta.get("tool_calls"))
    return bool(choices[0].get("text"))


def _prompt_tokens(llm: Any, kind: Kind, body: Json) -> int:
    # llama-cpp-python's stream carries no usage: count the prompt as the model saw it,
    # through the model's own chat template (as the non-streamed path counts it).
    if kind == "completion":
        return len(llm.tokenize(str(body.get("prompt", "")).encode(), add_bos=True))
    template = llm.metadata.get("tokenizer.chat_template")
    if template:
        from llama_cpp import llama_chat_format

        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(llm.token_eos()),
            bos_token=llm._model.token_get_text(llm.token_bos()),
        )
        prompt = formatter(messages=body["messages"]).prompt
        return len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    return len(llm.tokenize(text.encode(), add_bos=True))


registry.register(LlamaCppConfig, LlamaCppBackend)
