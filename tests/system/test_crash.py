"""kill -9 of the api at a random instant loses nothing acknowledged, in this round or any
earlier one, and leaves nothing half-visible: CAS writes and deletes, tus uploads and
terminations, job enqueues with idempotency keys, new locations."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.system.conftest import StartServer
from tests.system.crashcheck import Checker
from tests.system.crashload import (
    Client,
    Ledger,
    Load,
    doc_client,
    job_client,
    location_client,
    start_clients,
    stop_clients,
    upload_client,
    wait_acks,
)
from tests.system.helpers import check_box, client, create_location, tus_create, tus_finish
from tests.videos import moving_square_video

BASE_LOCATIONS = ("base0", "base1")
SOAK_ROUNDS = int(os.environ.get("FIELDBOX_CRASH_ROUNDS", "300"))


def _clients(n: int) -> dict[str, Client]:
    return {
        f"r{n}d0": doc_client,
        f"r{n}d1": doc_client,
        f"r{n}u0": upload_client,
        f"r{n}j0": job_client,
        f"r{n}l0": location_client,
    }


def _run_rounds(
    start_server: StartServer, token: str, tmp_path: Path, rounds: int, seed: int
) -> None:
    rng = random.Random(seed)
    srv = start_server()
    led = Ledger()
    with client(srv.url, token) as c:
        for loc in BASE_LOCATIONS:
            create_location(c, loc)
        led.locations += BASE_LOCATIONS
        video = moving_square_video(
            tmp_path / "walk.mp4", frames=8, width=64, height=48
        ).read_bytes()
        video_asset = tus_finish(c, tus_create(c, "base0", len(video), "walk.mp4"), video)
    checker = Checker(led, srv.data_dir)
    for n in range(rounds):
        load = Load(srv.url, token, BASE_LOCATIONS, video_asset)
        clients = _clients(n)
        stop, threads = start_clients(load, led, clients, rng)
        # Every client must be acknowledged before the kill, or the round tested nothing.
        wait_acks(led, clients)
        # The crash instant: random, after every client is under way (not a wait for a result).
        stop.wait(rng.uniform(0.0, 0.8))
        srv.kill()
        stop_clients(stop, threads, led)

        check_box(srv.data_dir)
        srv = start_server()
        with client(srv.url, token) as c:
            full = rounds <= 20 or n % 10 == 0 or n == rounds - 1
            checker.verify(c, f"(round {n}, seed {seed})", full=full)
    srv.stop()
    check_box(srv.data_dir)
    print(f"\n{rounds} rounds (seed {seed}): {led.summary()}")


def _seed() -> int:
    return int(os.environ.get("FIELDBOX_CRASH_SEED", str(random.randrange(1 << 30))))


def test_kill9_loses_nothing_acknowledged(
    start_server: StartServer, token: str, tmp_path: Path
) -> None:
    """Three kill -9 rounds under mixed load: after each restart every acknowledgement of
    every round so far holds, every DB is sound and every asset has its blob and outbox row."""
    _run_rounds(start_server, token, tmp_path, rounds=3, seed=_seed())


@pytest.mark.slow
@pytest.mark.timeout(SOAK_ROUNDS * 60 + 120)
def test_kill9_soak(start_server: StartServer, token: str, tmp_path: Path) -> None:
    """FIELDBOX_CRASH_ROUNDS (default 300) kill -9 rounds of the api alone."""
    _run_rounds(start_server, token, tmp_path, rounds=SOAK_ROUNDS, seed=_seed())
