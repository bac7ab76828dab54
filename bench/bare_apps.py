"""The HTTP stack with no fieldbox in it: how fast Litestar on uvicorn goes doing nothing.

Run as `python bare_apps.py HOST PORT DIR`: the same server settings as `fieldbox serve api`
(uvicorn, httptools, the asyncio loop), serving
- `GET /health`,
- `PUT /doc/{key}`: reads the body, answers a fresh ETag, stores nothing (the ceiling of any
  CAS endpoint on this stack),
- `PATCH /sink/{name}`: appends the body to a file in DIR and fsyncs it, no hashing and
  no protocol (the ceiling of any upload endpoint on this stack).
These are reference rows in bench_api.py, not targets.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, get, patch, put
from litestar.params import FromPath


def make_app(sink_dir: Path) -> Litestar:
    """The bare app."""

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, bool]:
        return {"ok": True}

    @put("/doc/{key:str}")
    async def doc(request: Request[Any, Any, Any], key: FromPath[str]) -> Response[Any]:
        await request.body()
        etag = f'"{secrets.token_hex(10)}"'
        return Response({"key": key, "etag": etag}, headers={"ETag": etag})

    @patch("/sink/{name:str}", status_code=204)
    async def sink(request: Request[Any, Any, Any], name: FromPath[str]) -> None:
        path = sink_dir / f"{os.getpid()}-{name}"
        with open(path, "ab", buffering=0) as fh:
            async for chunk in request.stream():
                fh.write(chunk)
            os.fsync(fh.fileno())

    return Litestar([health, doc, sink], request_max_body_size=None, logging_config=None)


def main() -> None:
    """Serve the bare app until SIGTERM."""
    host, port, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    directory.mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        make_app(directory),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        loop="asyncio",
    )


if __name__ == "__main__":
    main()
