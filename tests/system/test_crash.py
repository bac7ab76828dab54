"""kill -9 at a random instant loses nothing acknowledged and leaves nothing half-visible."""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from tests.system.conftest import StartServer
from tests.system.helpers import (
    asset_bytes,
    check_blobs,
    check_databases,
    client,
    create_location,
    sha256,
    tus_finish,
    tus_metadata,
    tus_offset,
    tus_patch,
)

BASE_LOCATIONS = ("base0", "base1")
SOAK_ROUNDS = int(os.environ.get("FIELDBOX_CRASH_ROUNDS", "300"))


@dataclass
class DocKey:
    """What one client knows about one document it alone writes."""

    location: str
    key: str
    acked_body: bytes | None = None
    acked_etag: str | None = None
    # Bodies sent after the last ack whose outcome the client never learned.
    unknown: list[bytes] = field(default_factory=list)


@dataclass
class UploadRec:
    """What one client knows about one upload."""

    url: str
    data: bytes
    acked_offset: int = 0
    asset_id: str | None = None


@dataclass
class RoundLog:
    """Everything the clients of one round were told (and were not told)."""

    docs: list[DocKey] = field(default_factory=list)
    uploads: list[UploadRec] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    unknown_locations: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, who: str) -> None:
        """Count one acknowledgement for worker `who`."""
        with self.lock:
            self.acks[who] = self.acks.get(who, 0) + 1

    def error(self, what: str, r: httpx.Response) -> None:
        """Record an answer no client should ever get (a 5xx, or a 4xx for a good request)."""
        with self.lock:
            self.server_errors.append(f"{what}: {r.status_code} {r.text[:300]}")


Worker = Callable[[str, str, RoundLog, str, random.Random, threading.Event], None]


def _guarded(fn: Worker) -> Worker:
    """Run a worker so that a bug in the test client fails the test instead of vanishing."""

    def run(
        url: str, token: str, log: RoundLog, who: str, rng: random.Random, stop: threading.Event
    ) -> None:
        try:
            fn(url, token, log, who, rng, stop)
        except Exception as exc:
            with log.lock:
                log.server_errors.append(f"{who} crashed: {exc!r}")

    return run


def _doc_worker(
    url: str, token: str, log: RoundLog, who: str, rng: random.Random, stop: threading.Event
) -> None:
    mine: list[DocKey] = []
    with client(url, token, timeout=20) as c:
        for i in range(100_000):
            if stop.is_set():
                return
            if not mine or rng.random() < 0.3:
                doc = DocKey(rng.choice(BASE_LOCATIONS), f"{who}-k{i}")
                mine.append(doc)
                with log.lock:
                    log.docs.append(doc)
                headers = {"If-None-Match": "*"}
                want = 201
            else:
                doc = rng.choice(mine)
                if doc.unknown or doc.acked_etag is None:
                    continue
                headers = {"If-Match": doc.acked_etag}
                want = 200
            body = json.dumps(
                {"who": who, "i": i, "pad": secrets.token_hex(rng.randint(8, 2000))}
            ).encode()
            doc.unknown.append(body)
            try:
                r = c.put(
                    f"/v1/locations/{doc.location}/docs/c/{doc.key}", content=body, headers=headers
                )
            except httpx.HTTPError:
                return  # the server is gone; this write's fate is unknown
            if r.status_code != want:
                log.error(f"PUT {doc.key}", r)
                return
            doc.acked_body, doc.acked_etag = body, r.headers["etag"]
            doc.unknown.clear()
            log.ack(who)


def _upload_worker(
    url: str, token: str, log: RoundLog, who: str, rng: random.Random, stop: threading.Event
) -> None:
    with client(url, token, timeout=20) as c:
        for n in range(100_000):
            data = os.urandom(rng.randint(16 * 1024, 256 * 1024))
            try:
                r = c.post(
                    "/v1/uploads",
                    headers={
                        "Tus-Resumable": "1.0.0",
                        "Upload-Length": str(len(data)),
                        "Upload-Metadata": tus_metadata("base0", f"{who}-{n}.bin"),
                    },
                )
            except httpx.HTTPError:
                return
            if r.status_code != 201:
                log.error("POST /v1/uploads", r)
                return
            upload_url = str(r.headers["location"])
            rec = UploadRec(upload_url, data)
            with log.lock:
                log.uploads.append(rec)
            log.ack(who)
            while rec.asset_id is None:
                if stop.is_set():
                    return
                size = rng.randint(8 * 1024, 64 * 1024)
                chunk = data[rec.acked_offset : rec.acked_offset + size]
                try:
                    r = tus_patch(c, rec.url, rec.acked_offset, chunk)
                except httpx.HTTPError:
                    return
                if r.status_code != 204:
                    log.error(f"PATCH {rec.url}", r)
                    return
                rec.acked_offset = int(r.headers["upload-offset"])
                rec.asset_id = r.headers.get("fieldbox-asset-id")
                log.ack(who)


def _location_worker(
    url: str, token: str, log: RoundLog, who: str, rng: random.Random, stop: threading.Event
) -> None:
    with client(url, token, timeout=20) as c:
        for i in range(100_000):
            if stop.is_set():
                return
            loc_id = f"{who}-l{i}"
            geo = rng.choice(("u4pr", "u4ps", "dr5r"))
            with log.lock:
                log.unknown_locations.append(loc_id)
            try:
                r = c.post(
                    "/v1/locations",
                    json={"id": loc_id, "account": "acme", "geo_prefix": geo, "name": loc_id},
                )
            except httpx.HTTPError:
                return
            if r.status_code != 201:
                log.error(f"POST location {loc_id}", r)
                return
            with log.lock:
                log.unknown_locations.remove(loc_id)
                log.locations.append(loc_id)
            log.ack(who)


def _verify(c: httpx.Client, log: RoundLog, seed: int) -> None:
    """Check every acknowledgement of a round against the restarted server."""
    where = f"(seed {seed})"
    for doc in log.docs:
        r = c.get(f"/v1/locations/{doc.location}/docs/c/{doc.key}")
        if doc.acked_body is None:
            assert r.status_code in (200, 404), (r.status_code, r.text, where)
            if r.status_code == 200:
                assert r.content in doc.unknown, f"{doc.key}: body nobody sent {where}"
            continue
        assert r.status_code == 200, f"acknowledged {doc.key} is gone {where}"
        if r.content == doc.acked_body:
            assert r.headers["etag"] == doc.acked_etag, f"{doc.key}: ETag changed {where}"
        else:
            assert r.content in doc.unknown, f"{doc.key}: acknowledged body lost {where}"

    for rec in log.uploads:
        head = c.head(rec.url, headers={"Tus-Resumable": "1.0.0"})
        assert head.status_code == 200, f"acknowledged upload {rec.url} is gone {where}"
        offset = int(head.headers["upload-offset"])
        assert rec.acked_offset <= offset <= len(rec.data), (offset, rec.acked_offset, where)
        if rec.asset_id is not None:
            assert head.headers.get("fieldbox-asset-id") == rec.asset_id, where
        assert tus_offset(c, rec.url) == offset
        asset_id = tus_finish(c, rec.url, rec.data)
        if rec.asset_id is not None:
            assert asset_id == rec.asset_id, where
        body = asset_bytes(c, asset_id)
        assert sha256(body) == sha256(rec.data), f"asset {asset_id} has other bytes {where}"
        meta = c.get(f"/v1/assets/{asset_id}").json()
        assert meta["sha256"] == sha256(rec.data), where

    listed = [loc["id"] for loc in c.get("/v1/locations").json()["items"]]
    assert not [i for i in listed if i.startswith(".") or "tmp" in i], listed
    for loc_id in log.locations:
        assert loc_id in listed, f"acknowledged location {loc_id} is not listed {where}"
        assert c.get(f"/v1/locations/{loc_id}").status_code == 200, where


def _run_rounds(start_server: StartServer, token: str, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    srv = start_server()
    with client(srv.url, token) as c:
        for loc in BASE_LOCATIONS:
            create_location(c, loc)
    every_location: set[str] = set(BASE_LOCATIONS)
    total_acks = 0
    for n in range(rounds):
        log = RoundLog()
        stop = threading.Event()
        workers = {
            f"r{n}d0": _doc_worker,
            f"r{n}d1": _doc_worker,
            f"r{n}u0": _upload_worker,
            f"r{n}l0": _location_worker,
        }
        threads = [
            threading.Thread(
                target=_guarded(fn),
                args=(srv.url, token, log, who, random.Random(rng.random()), stop),
                daemon=True,
            )
            for who, fn in workers.items()
        ]
        for t in threads:
            t.start()
        # Let every worker be acknowledged at least once, then crash at a random instant.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(log.acks) < len(workers):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.8))
        srv.kill()
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a client thread hung after the kill"
        assert not log.server_errors, f"bad answers before the crash: {log.server_errors}"
        total_acks += sum(log.acks.values())

        data_dir = srv.data_dir
        check_databases(data_dir)
        check_blobs(data_dir)
        srv = start_server()
        with client(srv.url, token) as c:
            _verify(c, log, seed)
            every_location.update(log.locations)
            listed = {loc["id"] for loc in c.get("/v1/locations").json()["items"]}
            assert every_location <= listed, f"locations lost: {every_location - listed}"
            extra = listed - every_location - set(log.unknown_locations)
            assert not extra, f"locations nobody created: {extra}"
            every_location.update(listed)
    assert total_acks > 0
    srv.stop()
    check_databases(srv.data_dir)
    check_blobs(srv.data_dir)


def _seed() -> int:
    return int(os.environ.get("FIELDBOX_CRASH_SEED", str(random.randrange(1 << 30))))


def test_kill9_loses_nothing_acknowledged(start_server: StartServer, token: str) -> None:
    """Three kill -9 rounds under mixed load: every ack survives, every DB and blob is sound."""
    _run_rounds(start_server, token, rounds=3, seed=_seed())


@pytest.mark.slow
@pytest.mark.timeout(SOAK_ROUNDS * 60 + 120)
def test_kill9_soak(start_server: StartServer, token: str) -> None:
    """FIELDBOX_CRASH_ROUNDS (default 300) kill -9 rounds; run by `make crash-soak`."""
    _run_rounds(start_server, token, rounds=SOAK_ROUNDS, seed=_seed())
