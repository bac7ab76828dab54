"""The bridge's blob uploads next to boto3's TransferManager, against one moto S3 server.

    .venv/bin/python bench/bench_bridge.py [--quick] [--profile]

Both upload the same files with the same concurrency and part size, into different
prefixes of one bucket on a moto server this script starts on a free port: first a batch
of small blobs (one PutObject each), then a few large ones (multipart). The bridge runs as
the daemon runs it (`Uploader.run`, client and modules warm); TransferManager runs twice,
as `upload_file` does by default (CRC32) and with `ChecksumAlgorithm=CRC64NVME`, the
full-object checksum the bridge uses, which costs moto more to complete.

The bridge does more per blob than TransferManager: a HEAD before, a HEAD to verify after
and the asset's metadata JSON, so four requests where TransferManager sends one. moto
runs on the same two cores and is CPU-bound on requests, so small blobs show that cost in
full; read the ratios, not the MB/s. `--profile` prints the bridge's top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.config import LogConfig, parse_config
from appliance.observe import configure_logging
from bridge.config import BridgeConfig
from bridge.throttle import Throttle
from bridge.uploader import Uploader
from store.ingest import add_file
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from tests.bridge.s3server import MotoServer, s3_env, s3_toml

MIB = 1024 * 1024
CONCURRENCY = 4
PART = 8 * MIB
THRESHOLD = 16 * MIB
BUCKET = "bench-bridge"
REPEAT = 2
Row = tuple[str, str, str, bool]


def make_files(folder: Path, count: int, size: int, tag: str) -> list[Path]:
    """`count` files of `size` random-ish bytes (distinct contents, so distinct blobs)."""
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB)
    paths = []
    for i in range(count):
        path = folder / f"{tag}-{i:04d}.bin"
        with open(path, "wb") as fh:
            left = size
            fh.write(f"{tag}{i}".encode())
            left -= len(f"{tag}{i}")
            while left > 0:
                fh.write(block[: min(left, MIB)])
                left -= min(left, MIB)
        paths.append(path)
    return paths


class BridgeSide:
    """A data root with one location, and the bridge's Uploader running as the daemon runs it.

    Its gate stays closed while the files are stored as assets, then opens and the clock
    runs until every row is closed: steady-state daemon throughput, with the S3 client and
    the modules already warm (a warm-up blob goes first).
    """

    def __init__(self, root: Path, endpoint: str) -> None:
        toml = s3_toml(endpoint, BUCKET, prefix="bridge") + (
            "[bridge.upload]\n"
            f"concurrency = {CONCURRENCY}\n"
            f"part_size_bytes = {PART}\n"
            f"multipart_threshold_bytes = {THRESHOLD}\n"
            "poll_s = 0.05\n"
        )
        cfg = parse_config(toml)
        self.bridge: BridgeConfig = cfg.bridge
        self.layout = Layout(root)
        self.layout.ensure()
        self.locs = Locations(self.layout, cfg.store)
        self.locs.create(Location(id="site1", account="acme", geo_prefix="eu", name="Bench"))
        self.outbox = Outbox(str(self.layout.outbox_db), cfg.store)
        self.uploader = Uploader(self.bridge, self.layout, self.locs, self.outbox, Throttle(0))
        self.open = False

    def store(self, files: list[Path]) -> None:
        """Make each file an asset (and an outbox row), as a job's results would be."""
        for f in files:
            kind, mime = "capture", "application/octet-stream"
            add_file(self.layout, self.locs, self.outbox, "site1", f,
                     kind=kind, filename=f.name, mime_type=mime)  # fmt: skip

    async def upload(self, files: list[Path], profile: cProfile.Profile | None) -> float:
        """Store `files`, open the gate, return the seconds until all of them are in S3."""
        await asyncio.to_thread(self.store, files)
        target = self.uploader.status()["uploaded"] + len(files)
        start = time.perf_counter()
        if profile is not None:
            profile.enable()
        self.open = True
        while self.uploader.status()["uploaded"] < target:
            if self.uploader.status()["last_error"]:
                raise SystemExit(f"bridge upload failed: {self.uploader.status()}")
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - start
        self.open = False
        if profile is not None:
            profile.disable()
        return elapsed


def transfer_manager(endpoint: str, files: list[Path], prefix: str, crc64: bool) -> float:
    """Seconds for boto3's TransferManager to upload `files` (same concurrency and parts).

    `crc64`: with `ChecksumAlgorithm=CRC64NVME`, the integrity the bridge asks for (a
    full-object checksum), which costs moto more on CompleteMultipartUpload than boto3's
    default CRC32 does.
    """
    import boto3
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    config = TransferConfig(
        multipart_threshold=THRESHOLD,
        multipart_chunksize=PART,
        max_concurrency=CONCURRENCY,
        preferred_transfer_client="classic",
    )
    extra = {"ChecksumAlgorithm": "CRC64NVME"} if crc64 else {}
    start = time.perf_counter()
    with create_transfer_manager(client, config) as tm:
        futures = [tm.upload(str(f), BUCKET, f"{prefix}/{f.name}", extra_args=extra) for f in files]
        for fut in futures:
            fut.result()
    return time.perf_counter() - start


Timing = tuple[str, int, float, float, float]  # label, bytes, bridge s, TM s, TM+CRC64 s


async def _measure(
    tmp: Path, endpoint: str, quick: bool, profile: cProfile.Profile | None
) -> list[Timing]:
    side = BridgeSide(tmp / "data", endpoint)
    stop = asyncio.Event()
    daemon = asyncio.create_task(side.uploader.run(stop, lambda: side.open))
    rows: list[Timing] = []
    try:
        await side.upload(make_files(tmp / "files", 1, 1024, "warmup"), None)
        sets = [
            ("small", *((100, 64 * 1024) if quick else (200, 64 * 1024))),
            ("large", *((2, 24 * MIB) if quick else (4, 40 * MIB))),
        ]
        for name, count, size in sets:
            # Best of REPEAT, taking turns, each round with new contents: the box's other
            # tenants and moto's own pauses make single runs noisy.
            best = [float("inf")] * 3
            for r in range(REPEAT):
                files = make_files(tmp / "files", count, size, f"{name}{r}")
                tm = await asyncio.to_thread(transfer_manager, endpoint, files, f"tm{r}", False)
                tm64 = await asyncio.to_thread(transfer_manager, endpoint, files, f"c{r}", True)
                bridge = await side.upload(files, profile)
                best = [min(x, y) for x, y in zip(best, (bridge, tm, tm64), strict=True)]
                for f in files:
                    f.unlink()
            rows.append((f"{count} x {size // 1024} KiB", count * size, best[0], best[1], best[2]))
    finally:
        stop.set()
        await daemon
    return rows


def litestream_rows() -> list[Row]:
    """HOOK: rows from `bench/bench_litestream.py`'s `lag_rows()` when that bench exists."""
    try:
        module: Any = importlib.import_module("bench_litestream")
    except ImportError:
        return []
    rows: list[Row] = module.lag_rows()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run both uploaders on small and large blobs and print the table with ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller blobs")
    parser.add_argument("--profile", action="store_true", help="cProfile the bridge's uploads")
    args = parser.parse_args(argv)
    os.environ.update(s3_env())
    # The daemon's JSON logs, warnings only: one info line per blob would bury the table.
    configure_logging(LogConfig(level="warning", format="json"), "bench")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    server = MotoServer(tmp).start()
    profile = cProfile.Profile() if args.profile else None
    rows: list[Timing] = []
    try:
        client: Any = server.client()
        client.create_bucket(Bucket=BUCKET)
        rows = asyncio.run(_measure(tmp, server.url, args.quick, profile))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"\nbridge uploads vs boto3 TransferManager, concurrency {CONCURRENCY}, "
          f"{PART // MIB} MiB parts, best of {REPEAT} ({elapsed:.0f} s)")  # fmt: skip
    print(f"{'blobs':18} {'bridge MB/s':>11} {'TM MB/s':>8} {'ratio':>6} "
          f"{'TM+CRC64 MB/s':>14} {'ratio':>6}  verdict (bridge >= TM)")  # fmt: skip
    for row in rows:
        _row(*row)
    _row(
        "all",
        sum(r[1] for r in rows),
        sum(r[2] for r in rows),
        sum(r[3] for r in rows),
        sum(r[4] for r in rows),
    )
    extra = litestream_rows()
    if extra:
        print(f"\n{'measure':44} {'value':>10} {'target':>10}  verdict")
        for name, value, target, ok in extra:
            print(f"{name:44} {value:>10} {target:>10}  {'PASS' if ok else 'MISS'}")
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(
            os.environ.get("BENCH_SORT", "cumulative")
        ).print_stats(40)
        print(out.getvalue())
    return 0


def _row(label: str, nbytes: int, bridge_s: float, tm_s: float, tm64_s: float) -> None:
    b, t, t64 = (nbytes / x / 1e6 for x in (bridge_s, tm_s, tm64_s))
    verdict = "PASS" if b >= t else "MISS"
    print(f"{label:18} {b:>11.1f} {t:>8.1f} {b / t:>6.0%} {t64:>14.1f} {b / t64:>6.0%}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
