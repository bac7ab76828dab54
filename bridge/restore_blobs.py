"""`fieldbox restore --all --blobs`: the bytes of every asset copied back from S3.

For each location on the box, every blob its assets refer to that is not on the box is
read from its content-addressed key, written to a temporary file under `{data}/tmp`
while its SHA-256 is computed, fsynced, and moved into the blob store only when the
digest and the size are the asset's. A blob S3 does not have (it never left the old box)
is counted as missing; the others go on. As many downloads run at once as uploads would
(`[bridge.upload] concurrency`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge import s3
from bridge.config import BridgeConfig
from bridge.transfer import Calls, error_code, readable
from store import assets, blobs
from store.locations import Location, Locations
from store.paths import Layout

_CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]
"""Called with (bytes just written, bytes to fetch in all) as the downloads go."""


@dataclass
class Fetched:
    """What copying blobs back did."""

    fetched: int = 0
    bytes: int = 0
    present: int = 0  # already on the box
    missing: list[str] = field(default_factory=list)  # not in S3: "{location}/{sha256}"
    failed: list[str] = field(default_factory=list)  # "{location}/{sha256}: why"


async def _one(
    calls: Calls, cfg: BridgeConfig, layout: Layout, loc: Location, sha: str, size: int,
    out: Fetched, progress: Callable[[int], None],
) -> None:  # fmt: skip
    key = s3.blob_key(cfg.s3, loc.account, loc.geo_prefix, loc.id, sha)
    tmp = layout.tmp_dir / f"fetch-{secrets.token_hex(8)}"
    try:
        try:
            got = await calls("get_object", Key=key)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                out.missing.append(f"{loc.id}/{sha}")
                return
            raise
        digest, n = hashlib.sha256(), 0
        with open(tmp, "wb") as fh:
            async with got["Body"] as body:
                while chunk := await body.read(_CHUNK):
                    digest.update(chunk)
                    n += len(chunk)
                    fh.write(chunk)
                    progress(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
        if digest.hexdigest() != sha or n != size:
            out.failed.append(f"{loc.id}/{sha}: S3's copy does not match (size {n})")
            return
        await asyncio.to_thread(blobs.adopt, layout, loc, tmp, sha)
        out.fetched += 1
        out.bytes += n
    except Exception as exc:
        out.failed.append(f"{loc.id}/{sha}: {readable(exc, cfg.s3)}")
    finally:
        tmp.unlink(missing_ok=True)


async def _fetch(
    cfg: BridgeConfig, layout: Layout, locs: Locations, progress: Progress | None
) -> Fetched:
    out = Fetched()
    todo: list[tuple[Location, str, int]] = []
    for loc in await asyncio.to_thread(locs.list):
        for sha, size in await asyncio.to_thread(assets.digests, locs.db(loc.id)):
            if blobs.blob_path(layout, loc, sha).exists():
                out.present += 1
            else:
                todo.append((loc, sha, size))
    if not todo:
        return out
    total = sum(size for _, _, size in todo)

    def step(n: int) -> None:
        if progress is not None:
            progress(n, total)

    layout.tmp_dir.mkdir(parents=True, exist_ok=True)
    slots = asyncio.Semaphore(cfg.upload.concurrency)
    async with s3.open_client(cfg.s3, max_pool=cfg.upload.concurrency + 2) as client:
        calls = Calls(client, cfg.s3)

        async def bounded(loc: Location, sha: str, size: int) -> None:
            async with slots:
                await _one(calls, cfg, layout, loc, sha, size, out, step)

        await asyncio.gather(*(bounded(*t) for t in todo))
    return out


def fetch_missing_blobs(
    cfg: BridgeConfig, layout: Layout, locs: Locations, progress: Progress | None = None
) -> Fetched:
    """Copy every asset's blob that is not on the box back from S3 (blocking)."""
    return asyncio.run(_fetch(cfg, layout, locs, progress))
