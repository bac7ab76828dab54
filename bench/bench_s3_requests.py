"""What one S3 request costs: moto's CPU per request, and a small PUT's time over a link.

    .venv/bin/python bench/bench_s3_requests.py [--count N]

The figures behind the bridge's upload ratios in docs/performance.md:

- loopback: N requests in a row, one at a time, from boto3 to a moto server on a free
  port; moto's CPU time per request (from /proc) and the wall time. moto closes the
  connection after every request, so each also pays a connect and a thread.
- link: through the tests' fault proxy in its own process (40 ms round trip, 8 MB/s),
  N 64 KiB PutObjects in a row with boto3 (which sends `Expect: 100-continue` and waits
  for the "100 Continue") next to the bridge's own client (which does not, under 1 MiB),
  and N HeadObjects with each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_bridge import BUCKET, link_proxy, process_cpu

from bridge import s3
from bridge.config import BridgeConfig
from bridge.throttle import Throttle
from bridge.transfer import Body, Calls, crc_b64, crc_of
from tests.bridge.s3server import MotoServer, s3_env, s3_toml

SMALL = 64 * 1024
LINK = (0.040, 8e6)


def per_request(count: int, pid: int, call: Callable[[int], object]) -> tuple[float, float]:
    """(moto CPU ms, wall ms) per call of `call(i)`, `count` calls one after another."""
    cpu, start = process_cpu(pid), time.perf_counter()
    for i in range(count):
        call(i)
    wall = time.perf_counter() - start
    return (process_cpu(pid) - cpu) / count * 1000, wall / count * 1000


def loopback_rows(server: MotoServer, count: int) -> list[tuple[str, float, float]]:
    """moto's CPU and the wall time per request, for the requests the uploaders send."""
    assert server.proc is not None
    client: Any = server.client()
    data = os.urandom(SMALL)
    meta = {"asset-id": "a" * 26, "location": "site1", "kind": "capture", "filename": "f.jpg"}
    calls: list[tuple[str, Callable[[int], object]]] = [
        ("PutObject 64 KiB (TM's default, CRC32)",
         lambda i: client.put_object(Bucket=BUCKET, Key=f"tm/{i}", Body=data)),
        ("PutObject 64 KiB, CRC64NVME, If-None-Match, metadata (bridge)",
         lambda i: client.put_object(Bucket=BUCKET, Key=f"br/{i}", Body=data,
                                     ChecksumAlgorithm="CRC64NVME", IfNoneMatch="*",
                                     Metadata=meta)),
        ("HeadObject, checksum mode (bridge's verification)",
         lambda i: client.head_object(Bucket=BUCKET, Key=f"br/{i}", ChecksumMode="ENABLED")),
    ]  # fmt: skip
    return [(name, *per_request(count, server.proc.pid, call)) for name, call in calls]


def link_rows(server: MotoServer, count: int) -> list[tuple[str, float, float]]:
    """Wall ms per request over the link: boto3 next to the bridge's client."""
    assert server.proc is not None
    pid = server.proc.pid
    data = os.urandom(SMALL)
    with link_proxy(server.port, LINK) as url:
        import boto3

        client: Any = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        boto_put = per_request(count, pid, lambda i: client.put_object(
            Bucket=BUCKET, Key=f"l-tm/{i}", Body=data))[1]  # fmt: skip
        boto_head = per_request(count, pid, lambda i: client.head_object(
            Bucket=BUCKET, Key=f"l-tm/{i}"))[1]  # fmt: skip
        bridge_put, bridge_head = asyncio.run(_bridge_link(url, data, count))
    return [
        ("PutObject 64 KiB: boto3 (Expect: 100-continue)", boto_put, 0.0),
        ("PutObject 64 KiB: bridge client (no Expect)", bridge_put, boto_put),
        ("HeadObject: boto3", boto_head, 0.0),
        ("HeadObject: bridge client", bridge_head, boto_head),
    ]


async def _bridge_link(url: str, data: bytes, count: int) -> tuple[float, float]:
    from appliance.config import parse_config

    cfg: BridgeConfig = parse_config(s3_toml(url, BUCKET, prefix="x")).bridge
    async with s3.open_client(cfg.s3, max_pool=4) as client:
        calls = Calls(client, cfg.s3)
        crc = crc_b64(crc_of(data))
        start = time.perf_counter()
        for i in range(count):
            body = Body(data, Throttle(0), lambda _: None)
            checksum: dict[str, Any] = {"ChecksumAlgorithm": "CRC64NVME", "ChecksumCRC64NVME": crc}
            await calls("put_object", body=body, Key=f"l-br/{i}", ContentLength=len(data),
                        IfNoneMatch="*", **checksum)  # fmt: skip
        put = (time.perf_counter() - start) / count * 1000
        start = time.perf_counter()
        for i in range(count):
            await calls.head(f"l-br/{i}")
        head = (time.perf_counter() - start) / count * 1000
    return put, head


def main(argv: list[str] | None = None) -> int:
    """Print moto's cost per request on loopback and a small PUT's time over the link."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="requests per row")
    args = parser.parse_args(argv)
    os.environ.update(s3_env())
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3req-"))
    server = MotoServer(tmp).start()
    try:
        client: Any = server.client()
        client.create_bucket(Bucket=BUCKET)
        loop = loopback_rows(server, args.count)
        link = link_rows(server, args.count)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nloopback, {args.count} requests in a row, one at a time")
    print(f"{'request':64} {'moto CPU ms':>11} {'wall ms':>8}")
    for name, cpu, wall in loop:
        print(f"{name:64} {cpu:>11.2f} {wall:>8.2f}")
    rtt, rate = LINK
    print(f"\nlink ({rtt * 1000:g} ms round trip, {rate / 1e6:g} MB/s), {args.count} in a row")
    print(f"{'request':64} {'wall ms':>8} {'vs boto3':>9}")
    for name, wall, base in link:
        ratio = f"{wall / base:>8.0%}" if base else f"{'':>8}"
        print(f"{name:64} {wall:>8.1f} {ratio:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
