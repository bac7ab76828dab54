"""The bridge's blob uploads next to boto3's TransferManager, against one moto S3 server.

    .venv/bin/python bench/bench_bridge.py [--quick] [--link RTT_MS:MB_PER_S | --link off]
                                           [--profile]

Both upload the same files with the same concurrency and part size, into different
prefixes of one bucket on a moto server this script starts on a free port: a batch of
small blobs (one PutObject each), then a few large ones (multipart). The bridge runs as
the daemon runs it (`Uploader.run`, client and modules warm); TransferManager runs twice,
as `upload_file` does by default (CRC32) and with `ChecksumAlgorithm=CRC64NVME`, the
full-object checksum the bridge uses.

Two scenarios, one after the other, on the same server:
- loopback: straight to moto. moto is the bottleneck here: it closes the connection after
  every request and spends 2-3 ms of CPU on each, on the same two cores as the clients.
  The bridge sends two requests per small blob (the PUT and the verifying HEAD the issue
  requires) where TransferManager sends one, so for each set the table also prints moto's
  CPU seconds per side and the ceiling that puts on the bridge: TransferManager's wall
  time over the bridge's moto CPU time (moto runs Python under one GIL).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
from tests.conftest import free_port

MIB = 1024 * 1024
CONCURRENCY = 4
PART = 8 * MIB
THRESHOLD = 16 * MIB
BUCKET = "bench-bridge"
REPEAT = 2
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


@dataclass
class Run:
    """One uploader's best run over a set: wall seconds, and the CPU seconds of that run."""

    wall: float = float("inf")
    client_cpu: float = 0.0  # this process: the uploader
    server_cpu: float = 0.0  # the moto process


# The uploaders side by side: the bridge, then TransferManager as `upload_file` runs it
# (CRC32), with the bridge's checksum, and with that checksum plus a HeadObject per file
# afterwards, comparing size and CRC64NVME: the same verification the bridge does.
UPLOADERS = ("bridge", "TM", "TM+CRC64", "TM+CRC64+HEAD")


@dataclass
class Timing:
    """One set of files in one scenario: the best run of each uploader."""

    scenario: str
    label: str
    nbytes: int
    runs: dict[str, Run]


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
    cpu, moto = time.process_time(), process_cpu(server_pid)
    wall = await run()
    return Run(wall, time.process_time() - cpu, process_cpu(server_pid) - moto)


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
    name: str, tmp: Path, endpoint: str, server_pid: int, quick: bool,
    profile: cProfile.Profile | None,
) -> list[Timing]:  # fmt: skip
    side = BridgeSide(tmp / f"data-{name}", endpoint)
    stop = asyncio.Event()
    daemon = asyncio.create_task(side.uploader.run(stop, lambda: side.open))
    rows: list[Timing] = []
    try:
        await side.upload(make_files(tmp / "files", 1, 1024, f"warmup-{name}"), None)
        for kind, count, size in SETS[name][quick]:
            # Best of REPEAT, taking turns, each round with new contents: the box's other
            # tenants and moto's own pauses make single runs noisy.
            best = {name: Run() for name in UPLOADERS}
            for r in range(REPEAT):
                files = make_files(tmp / "files", count, size, f"{name}-{kind}{r}")
                # The order alternates: no uploader always meets the fresher server.
                runs = await _round(
                    side, endpoint, files, f"{name}{r}", server_pid, profile, reverse=r % 2 == 1
                )
                best = {n: min(best[n], runs[n], key=lambda x: x.wall) for n in UPLOADERS}
                for f in files:
                    f.unlink()
            label = f"{count} x {size // 1024} KiB"
            rows.append(Timing(name, label, count * size, best))
    finally:
        stop.set()
        await daemon
    return rows


async def _measure(
    tmp: Path, server: MotoServer, quick: bool, link: tuple[float, float] | None,
    profile: cProfile.Profile | None,
) -> list[Timing]:  # fmt: skip
    assert server.proc is not None
    pid = server.proc.pid
    rows = await _scenario("loopback", tmp, server.url, pid, quick, profile)
    if link is not None:
        with link_proxy(server.port, link) as url:
            rows += await _scenario("link", tmp, url, pid, quick, None)
    return rows


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
    """Run both uploaders on small and large blobs, on loopback and over a link; print ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller blobs")
    parser.add_argument("--link", default="40:8", help="RTT_MS:MB_PER_S of the link, or off")
    parser.add_argument("--profile", action="store_true", help="cProfile the bridge's uploads")
    args = parser.parse_args(argv)
    link = parse_link(args.link)
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
        rows = asyncio.run(_measure(tmp, server, args.quick, link, profile))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"\nbridge uploads vs boto3 TransferManager, concurrency {CONCURRENCY}, "
          f"{PART // MIB} MiB parts, best of {REPEAT} ({elapsed:.0f} s)")  # fmt: skip
    for scenario in dict.fromkeys(r.scenario for r in rows):
        mine = [r for r in rows if r.scenario == scenario]
        if scenario == "link" and link is not None:
            title = f"link: {link[0] * 1000:g} ms round trip, {link[1] / 1e6:g} MB/s uplink"
        else:
            title = "loopback: straight to moto"
        _table(title, [*mine, _total(mine)])
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


def _total(rows: list[Timing]) -> Timing:
    def add(runs: list[Run]) -> Run:
        fields = ("wall", "client_cpu", "server_cpu")
        return Run(*(sum(getattr(r, f) for r in runs) for f in fields))

    runs = {name: add([r.runs[name] for r in rows]) for name in UPLOADERS}
    return Timing(rows[0].scenario, "all", sum(r.nbytes for r in rows), runs)


def _table(title: str, rows: list[Timing]) -> None:
    print(f"\n{title}: MB/s, and the bridge's rate as a share of each baseline's")
    head = "".join(f" {n:>13} {'ratio':>5}" for n in UPLOADERS[1:])
    print(f"{'blobs':14} {'bridge':>7}{head}  {'moto CPU s':>11} {'ceiling':>7}  verdict")
    for t in rows:
        mbs = {n: t.nbytes / r.wall / 1e6 for n, r in t.runs.items()}
        cells = "".join(f" {mbs[n]:>13.1f} {mbs['bridge'] / mbs[n]:>5.0%}" for n in UPLOADERS[1:])
        bridge, tm = t.runs["bridge"], t.runs["TM"]
        # The fastest the bridge could go if only moto's CPU time for its requests counted.
        ceiling = tm.wall / bridge.server_cpu if bridge.server_cpu else float("inf")
        cpu = f"{bridge.server_cpu:.2f}/{tm.server_cpu:.2f}"
        verdict = "PASS" if mbs["bridge"] >= mbs["TM"] else "MISS"
        print(f"{t.label:14} {mbs['bridge']:>7.1f}{cells}  {cpu:>11} {ceiling:>7.0%}  {verdict}")
    print("(verdict: bridge >= TM; moto CPU s: bridge/TM; ceiling: TM's time over the moto "
          "CPU time of the bridge's requests)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
