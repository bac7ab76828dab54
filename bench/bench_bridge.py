"""The bridge's blob uploads next to boto3's TransferManager, on two real S3 servers.

    .venv/bin/python bench/bench_bridge.py [--quick] [--link RTT_MS:MB_PER_S | --link off]
                                           [--servers moto,seaweedfs] [--profile]

All upload the same files with the same concurrency and part size, into different
prefixes of one bucket on each server this script starts on free ports (moto, then
SeaweedFS's `weed mini`): a batch of small blobs (one PutObject each), then a few large
ones (multipart). The bridge runs as the daemon runs it (`Uploader.run`, client and
modules warm, its S3 server check done on a warm-up blob); TransferManager runs three
times: as `upload_file` does by default (CRC32), with `ChecksumAlgorithm=CRC64NVME`, the
full-object checksum the bridge uses, and with that plus a HeadObject per file comparing
size and CRC64NVME (TM+CRC64+HEAD: the bridge's own verification, the target's baseline).
Each set runs ROUNDS times with fresh contents, the order alternating; ratios are the
median of the per-round ratios (bridge_table.py).

Two scenarios per server, one after the other:
- loopback: straight to the server. On moto the server is the bottleneck: it closes the
  connection after every request and spends 3-4 ms of CPU on each, on the same two cores
  as the clients, so only a baseline that sends the same requests is a fair one. The
  table prints the server's CPU seconds for the bridge's and TM+CRC64+HEAD's requests.
- link: through the tests' fault proxy (a process of its own) as a field office's
  uplink: a round-trip delay and one upload rate shared by all connections (default
  40 ms, 8 MB/s). The link is the bottleneck, as it is on a real box.

`--profile` prints the bridge's top functions (its event loop thread only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge_table import UPLOADERS, Run, Timing, print_table

from appliance.config import LogConfig, parse_config
from appliance.observe import configure_logging
from bridge.config import BridgeConfig
from bridge.throttle import Throttle
from bridge.transfer import crc_b64, file_crc
from bridge.uploader import Uploader
from store.ingest import add_file
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from tests.bridge.s3server import MotoServer, s3_env, s3_toml
from tests.bridge.seaweed import SeaweedServer
from tests.conftest import free_port

MIB = 1024 * 1024
CONCURRENCY = 4
PART = 8 * MIB
THRESHOLD = 16 * MIB
BUCKET = "bench-bridge"
ROUNDS = 3
Server = MotoServer | SeaweedServer
Row = tuple[str, str, str, bool]
SETS = {  # scenario -> quick?  -> [(name, count, size)]
    "loopback": {
        True: [("small", 100, 64 * 1024), ("large", 2, 24 * MIB)],
        False: [("small", 200, 64 * 1024), ("large", 4, 40 * MIB)],
    },
    "link": {
        True: [("small", 50, 64 * 1024), ("large", 1, 24 * MIB)],
        False: [("small", 100, 64 * 1024), ("large", 2, 24 * MIB)],
    },
}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            "poll_s = 0.01\n"
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


def transfer_manager(
    endpoint: str, files: list[Path], prefix: str, crc64: bool, verify: bool = False
) -> float:
    """Seconds for boto3's TransferManager to upload `files` (same concurrency and parts).

    `crc64`: with `ChecksumAlgorithm=CRC64NVME`, the integrity the bridge asks for (a
    full-object checksum), which costs moto more on CompleteMultipartUpload than boto3's
    default CRC32 does. `verify`: then HEAD each object as its upload finishes (as many at
    once as uploads) and compare its size and CRC64NVME with the file's, as the bridge does.
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
    with (
        create_transfer_manager(client, config) as tm,
        ThreadPoolExecutor(CONCURRENCY) as heads,
    ):
        keys = [f"{prefix}/{f.name}" for f in files]
        futures = [
            tm.upload(str(f), BUCKET, k, extra_args=extra) for f, k in zip(files, keys, strict=True)
        ]

        def check(i: int) -> None:
            futures[i].result()
            if verify:
                head = client.head_object(Bucket=BUCKET, Key=keys[i], ChecksumMode="ENABLED")
                size, crc = files[i].stat().st_size, crc_b64(file_crc(files[i]))
                if (head["ContentLength"], head.get("ChecksumCRC64NVME")) != (size, crc):
                    raise SystemExit(f"TransferManager stored a different {keys[i]}")

        for done in [heads.submit(check, i) for i in range(len(files))]:
            done.result()
    return time.perf_counter() - start


@contextlib.contextmanager
def link_proxy(upstream: int, link: tuple[float, float]) -> Iterator[str]:
    """The tests' fault proxy as a link, in a process of its own (off this one's GIL)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "tests.bridge.faultproxy", "--upstream", str(upstream),
        "--port", str(port), "--latency", str(link[0] / 2), "--bandwidth", str(int(link[1])),
    ]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"the link proxy did not start: {line!r}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def _timed(run: Callable[[], Awaitable[float]], server_pid: int) -> Run:
    cpu, server = time.process_time(), process_cpu(server_pid)
    wall = await run()
    return Run(wall, time.process_time() - cpu, process_cpu(server_pid) - server)


async def _round(
    side: BridgeSide, endpoint: str, files: list[Path], tag: str, server_pid: int,
    profile: cProfile.Profile | None, reverse: bool = False,
) -> dict[str, Run]:  # fmt: skip
    """Each uploader once over `files`, in UPLOADERS order (or the reverse)."""

    def tm(crc64: bool, verify: bool) -> Callable[[], Awaitable[float]]:
        prefix = f"{'c' if crc64 else 'tm'}{'v' if verify else ''}-{tag}"
        return lambda: asyncio.to_thread(transfer_manager, endpoint, files, prefix, crc64, verify)

    uploaders = {
        "bridge": lambda: side.upload(files, profile),
        "TM": tm(False, False),
        "TM+CRC64": tm(True, False),
        "TM+CRC64+HEAD": tm(True, True),
    }
    names = list(reversed(UPLOADERS)) if reverse else list(UPLOADERS)
    return {name: await _timed(uploaders[name], server_pid) for name in names}


async def _scenario(
    server: str, name: str, tmp: Path, endpoint: str, server_pid: int, quick: bool,
    profile: cProfile.Profile | None,
) -> list[Timing]:  # fmt: skip
    side = BridgeSide(tmp / f"data-{server}-{name}", endpoint)
    stop = asyncio.Event()
    daemon = asyncio.create_task(side.uploader.run(stop, lambda: side.open))
    rows: list[Timing] = []
    try:
        await side.upload(make_files(tmp / "files", 1, 1024, f"warmup-{server}-{name}"), None)
        for kind, count, size in SETS[name][quick]:
            label = (
                f"{count} x {size // MIB} MiB" if size >= MIB else f"{count} x {size // 1024} KiB"
            )
            timing = Timing(server, name, label, count * size)
            for r in range(ROUNDS):
                # New contents each round; the order alternates, so no uploader always
                # meets the fresher server (or the quieter machine).
                files = make_files(tmp / "files", count, size, f"{server}-{name}-{kind}{r}")
                timing.rounds.append(await _round(
                    side, endpoint, files, f"{name}{r}", server_pid, profile, reverse=r % 2 == 1
                ))  # fmt: skip
                for f in files:
                    f.unlink()
            rows.append(timing)
    finally:
        stop.set()
        await daemon
    return rows


async def _measure(
    tmp: Path, server: Server, quick: bool, link: tuple[float, float] | None,
    profile: cProfile.Profile | None,
) -> list[Timing]:  # fmt: skip
    assert server.proc is not None
    pid = server.proc.pid
    rows = await _scenario(server.name, "loopback", tmp, server.url, pid, quick, profile)
    if link is not None:
        with link_proxy(server.port, link) as url:
            rows += await _scenario(server.name, "link", tmp, url, pid, quick, None)
    return rows


def start_server(name: str, tmp: Path) -> Server:
    """One of the S3 servers, started on free loopback ports, with the bench's bucket."""
    server: Server = (
        MotoServer(tmp) if name == "moto" else SeaweedServer(tmp / "seaweedfs")
    ).start()
    client: Any = server.client()
    client.create_bucket(Bucket=BUCKET)
    return server


def server_version(name: str) -> str:
    """The version of a server the bench ran, for the table's title."""
    if name == "moto":
        from importlib.metadata import version

        return f"moto {version('moto')}"
    from tests.bridge.seaweed import weed_binary, weed_version

    binary = weed_binary()
    return f"SeaweedFS {weed_version(binary) if binary else '?'}"


def litestream_rows() -> list[Row]:
    """HOOK: rows from `bench/bench_litestream.py`'s `lag_rows()` when that bench exists."""
    try:
        module: Any = importlib.import_module("bench_litestream")
    except ImportError:
        return []
    rows: list[Row] = module.lag_rows()
    return rows


def parse_link(text: str) -> tuple[float, float] | None:
    """`RTT_MS:MB_PER_S` as (round trip in seconds, bytes per second); 'off' is None."""
    if text == "off":
        return None
    rtt_ms, _, rate = text.partition(":")
    return float(rtt_ms) / 1000, float(rate) * 1e6


def main(argv: list[str] | None = None) -> int:
    """Run every uploader on small and large blobs, per server, on loopback and over a link."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller blobs")
    parser.add_argument("--link", default="40:8", help="RTT_MS:MB_PER_S of the link, or off")
    parser.add_argument("--servers", default="moto,seaweedfs", help="comma-separated")
    parser.add_argument("--profile", action="store_true", help="cProfile the bridge's uploads")
    args = parser.parse_args(argv)
    link = parse_link(args.link)
    servers = [s for s in args.servers.split(",") if s]
    if not servers or set(servers) - {"moto", "seaweedfs"}:
        parser.error("--servers takes moto and/or seaweedfs")
    os.environ.update(s3_env())
    # The daemon's JSON logs, warnings only: one info line per blob would bury the table.
    configure_logging(LogConfig(level="warning", format="json"), "bench")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    profile = cProfile.Profile() if args.profile else None
    rows: list[Timing] = []
    try:
        for name in servers:
            server = start_server(name, tmp)
            try:
                rows += asyncio.run(_measure(tmp, server, args.quick, link, profile))
            finally:
                server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    where = ", ".join(server_version(n) for n in servers)
    linked = (
        f"; link: {link[0] * 1000:g} ms round trip, {link[1] / 1e6:g} MB/s uplink" if link else ""
    )
    print_table(rows, f"bridge uploads vs boto3 TransferManager on {where}{linked}; "
                f"concurrency {CONCURRENCY}, {PART // MIB} MiB parts, {ROUNDS} rounds "
                f"({elapsed:.0f} s)")  # fmt: skip
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


if __name__ == "__main__":
    sys.exit(main())
