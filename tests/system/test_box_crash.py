"""kill -9 of the whole box: api, worker and bridge die at random (seeded) moments while
crews upload, write documents and queue jobs and the bridge syncs. After every round each
acknowledgement of every round is on the box; at the end, once the bridge has drained the
outbox, every acknowledged asset's bytes are in S3 under its content address, once."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.bridge.s3server import Bucket, s3_env, s3_toml
from tests.conftest import Server, make_config, make_token
from tests.system.crashcheck import Checker
from tests.system.crashload import (
    Client,
    Ledger,
    Load,
    doc_client,
    job_client,
    start_clients,
    stop_clients,
    upload_client,
    wait_acks,
)
from tests.system.helpers import (
    FAST_WORKER_CONFIG,
    DaemonProc,
    check_box,
    client,
    create_location,
    location_assets,
    outbox_assets,
    sha256,
    tus_create,
    tus_finish,
)
from tests.videos import moving_square_video

pytest.importorskip("moto")

LOCATIONS = ("site0", "site1")
PROCESSES = ("api", "worker", "bridge")
SOAK_ROUNDS = int(os.environ.get("FIELDBOX_CRASH_ROUNDS", "300"))
PREFIX = "fieldbox"


def _config(tmp_path: Path, bucket: Bucket) -> Path:
    # Fast polls and retries so a restarted process is back at work at once; many attempts,
    # since a job may lose its worker to several rounds in a row; Litestream off (its child
    # process is not this test's subject; the bridge's blob sync is).
    path = tmp_path / "fieldbox.toml"
    path.write_text(
        FAST_WORKER_CONFIG.replace("[queue]\n", "[queue]\nmax_attempts = 1000\n", 1)
        + "[bridge]\n"
        + s3_toml(bucket.endpoint, bucket.name, prefix=PREFIX)
        + "[bridge.upload]\npoll_s = 0.1\nretry_base_s = 0.2\nretry_max_s = 1.0\n"
        + "[bridge.litestream]\nenabled = false\n"
        + "[bridge.telemetry]\ninterval_s = 3600.0\n"
    )
    return path


@dataclass
class Box:
    """The three processes of one box on one data root, restarted one by one."""

    data_dir: Path
    config: Path
    api: Server
    daemons: dict[str, DaemonProc] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)

    def start(self, name: str) -> None:
        """Start (again) process `name`: the api waits for /health, daemons run at once."""
        if name == "api":
            self.api = Server(self.data_dir, self.config).start()
            self.logs.append(self.api.log_path)
            return
        env = s3_env() if name == "bridge" else None
        self.daemons[name] = DaemonProc(self.data_dir, self.config, name, env=env)
        self.logs.append(self.daemons[name].log_path)

    def kill(self, name: str) -> None:
        """SIGKILL one process: the crash."""
        if name == "api":
            self.api.kill()
        else:
            self.daemons[name].kill()

    def stop(self) -> dict[str, int]:
        """SIGTERM every process; each daemon's exit code."""
        codes = {name: d.stop() for name, d in self.daemons.items()}
        self.api.stop()
        return codes


@pytest.fixture
def box(tmp_path: Path, bucket: Bucket) -> Iterator[tuple[Box, str, str]]:
    """A running box (api, worker, bridge) with two locations and a small video asset."""
    data = tmp_path / "data"
    config = _config(tmp_path, bucket)
    token = make_token(make_config(data))
    api = Server(data, config).start()
    b = Box(data, config, api, logs=[api.log_path])
    try:
        with client(api.url, token) as c:
            for loc in LOCATIONS:
                create_location(c, loc)
            clip = moving_square_video(tmp_path / "walk.mp4", frames=8, width=64, height=48)
            video = clip.read_bytes()
            video_asset = tus_finish(c, tus_create(c, LOCATIONS[0], len(video), "walk.mp4"), video)
        b.start("worker")
        b.start("bridge")
        yield b, token, video_asset
    finally:
        b.stop()


def _clients(n: int) -> dict[str, Client]:
    return {
        f"r{n}d0": doc_client,
        f"r{n}d1": doc_client,
        f"r{n}u0": upload_client,
        f"r{n}j0": job_client,
    }


def _until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _one_asset_per_output(data_dir: Path, where: str) -> None:
    """A job's retried publish finds what it stored: one asset per (job, output)."""
    outputs = Counter(
        (a["metadata"]["job_id"], a["kind"])
        for a in location_assets(data_dir)
        if "job_id" in a["metadata"]
    )
    twice = [k for k, n in outputs.items() if n > 1]
    assert not twice, f"jobs that published an output twice: {twice[:5]} {where}"


def _round(
    box: Box,
    token: str,
    video: str,
    led: Ledger,
    checker: Checker,
    n: int,
    rng: random.Random,
    seed: int,
) -> None:
    load = Load(
        box.api.url,
        token,
        LOCATIONS,
        video,
        upload_bytes=(1024, 16 * 1024),
        chunk_bytes=(512, 8 * 1024),
        doc_pad=(8, 200),
        new_jobs=2,
        terminate_share=0.25,
    )
    clients = _clients(n)
    stop, threads = start_clients(load, led, clients, rng)
    wait_acks(led, clients)
    victims = [p for p in PROCESSES if rng.random() < 0.5] or [rng.choice(PROCESSES)]
    moments = sorted((rng.uniform(0.0, 0.6), name) for name in victims)
    began = time.monotonic()
    for at, name in moments:
        stop.wait(max(0.0, at - (time.monotonic() - began)))  # the random crash instant
        box.kill(name)
    stop_clients(stop, threads, led)
    where = f"(round {n}, killed {victims}, seed {seed})"
    check_box(box.data_dir)
    _one_asset_per_output(box.data_dir, where)
    for name in victims:
        box.start(name)
    with client(box.api.url, token) as c:
        checker.verify(c, where)


def _drained_into_s3(box: Box, bucket: Bucket, token: str, led: Ledger) -> int:
    """Wait for every job to finish and the outbox to empty; then every asset on the box
    (each acknowledged upload, each job output) is in S3 under its content address with its
    bytes, named by its metadata, and S3 holds no blob the box does not; the asset count."""
    with client(box.api.url, token) as c:
        for rec in led.jobs:
            job = _until(
                f"job {rec.job_id} to finish",
                lambda rec=rec: (j := c.get(f"/v1/jobs/{rec.job_id}").json())["finished_at"] and j,  # type: ignore[misc]
                timeout=120,
            )
            assert job["status"] == "succeeded", job
            facts = job["result"]["scene_facts_asset_id"]
            assert c.get(f"/v1/assets/{facts}").status_code == 200, job
    _until(
        "the outbox to drain",
        lambda: all(s == "done" for s in outbox_assets(box.data_dir).values()),
        timeout=120,
    )
    assets = location_assets(box.data_dir)
    acked = {str(u.asset_id) for u in led.uploads if u.asset_id is not None and not u.terminated}
    assert acked <= {a["id"] for a in assets}, "acknowledged assets missing from the box"
    in_s3 = set(bucket.keys(f"{PREFIX}/"))
    blobs = {k for k in in_s3 if "/blobs/" in k}
    for a in assets:
        key = f"{PREFIX}/acme/u4pr/{a['location']}/blobs/{a['sha256']}"
        assert key in blobs, f"asset {a['id']} is not in S3 at {key}"
        sidecar = f"{PREFIX}/acme/u4pr/{a['location']}/assets/{a['id']}.json"
        if sidecar not in in_s3:
            head = bucket.client.head_object(Bucket=bucket.name, Key=key)
            assert head["Metadata"].get("asset-id") == a["id"], f"S3 does not name {a['id']}"
    on_box = {f"{PREFIX}/acme/u4pr/{a['location']}/blobs/{a['sha256']}" for a in assets}
    assert blobs <= on_box, f"S3 blobs no asset has: {sorted(blobs - on_box)[:5]}"
    for key in blobs:
        body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
        assert sha256(body) == key.rsplit("/", 1)[1], f"{key} holds other bytes"
    named = {k.rsplit("/", 1)[1].removesuffix(".json") for k in in_s3 if "/assets/" in k}
    assert named <= {a["id"] for a in assets}, f"S3 names assets the box lacks: {named}"
    assert bucket.multipart_uploads() == []
    return len(assets)


def _run(box: tuple[Box, str, str], bucket: Bucket, rounds: int, seed: int) -> None:
    b, token, video = box
    rng = random.Random(seed)
    led = Ledger()
    led.locations += LOCATIONS
    checker = Checker(led, b.data_dir)
    began = time.monotonic()
    for n in range(rounds):
        _round(b, token, video, led, checker, n, rng, seed)
        if n % 25 == 24:
            print(f"round {n + 1}: {time.monotonic() - began:.0f} s, {led.summary()}", flush=True)
    with client(b.api.url, token) as c:
        checker.verify(c, f"(after {rounds} rounds, seed {seed})", full=True)
    count = _drained_into_s3(b, bucket, token, led)
    check_box(b.data_dir)
    _one_asset_per_output(b.data_dir, f"(seed {seed})")
    codes = b.stop()
    assert codes == {"worker": 0, "bridge": 0}, codes
    took = time.monotonic() - began
    print(f"\n{rounds} box rounds in {took:.0f} s (seed {seed}): {led.summary()}; "
          f"{count} assets in S3; 0 lost")  # fmt: skip


def _seed() -> int:
    return int(os.environ.get("FIELDBOX_CRASH_SEED", str(random.randrange(1 << 30))))


def test_whole_box_kill9_loses_nothing(box: tuple[Box, str, str], bucket: Bucket) -> None:
    """Four rounds of kill -9 of api, worker and bridge at random moments: nothing
    acknowledged is lost on the box, and after the drain everything is in S3 once."""
    _run(box, bucket, rounds=4, seed=_seed())


@pytest.mark.slow
@pytest.mark.timeout(SOAK_ROUNDS * 15 + 600)
def test_whole_box_kill9_soak(box: tuple[Box, str, str], bucket: Bucket) -> None:
    """FIELDBOX_CRASH_ROUNDS (default 300) whole-box rounds; run by `make crash-soak`."""
    _run(box, bucket, rounds=SOAK_ROUNDS, seed=_seed())
