"""The direct side of the tokens/s row: llama-cpp-python in a process of its own, no HTTP.

    python bench/gateway_llama.py MODEL.gguf N_THREADS

Loads the model as fieldbox's llamacpp backend does (same n_ctx, n_threads, verbose off),
prints `ready`, then for each JSON line `{"prompt", "max_tokens"}` on stdin streams one
`create_chat_completion` (temperature 0) and prints one JSON line: `first_event` and
`token_times`, seconds from the call to the first chunk and to each chunk carrying text.
Exits when stdin closes.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    """Serve generations over stdin/stdout until stdin closes."""
    import llama_cpp

    path, n_threads = argv[0], int(argv[1])
    llm: Any = llama_cpp.Llama(path, n_ctx=2048, n_threads=n_threads or None, verbose=False)
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            ask = json.loads(line)
            start = time.perf_counter()
            first = -1.0
            times: list[float] = []
            chunks = llm.create_chat_completion(
                messages=[{"role": "user", "content": ask["prompt"]}],
                temperature=0,
                max_tokens=ask["max_tokens"],
                stream=True,
            )
            for chunk in chunks:
                now = time.perf_counter() - start
                if first < 0:
                    first = now
                if (chunk["choices"][0].get("delta") or {}).get("content"):
                    times.append(now)
            print(json.dumps({"first_event": first, "token_times": times}), flush=True)
        except Exception as exc:  # reported to the bench, which stops
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
