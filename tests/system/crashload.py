"""The clients of the kill -9 tests: each writes only its own items and remembers what the
box acknowledged, and what it sent without ever learning the outcome (`crashcheck` then
holds the box to both, every earlier round included)."""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.system.helpers import OCTETS, TUS, client, sha256, tus_metadata


@dataclass
class DocRec:
    """One document: its acknowledged state, and writes whose fate a crash hid."""

    location: str
    key: str
    # The acknowledged body; None while absent (never created, or deleted and acknowledged).
    acked: bytes | None = None
    etag: str | None = None
    # Sent after the last ack with no answer: a body, or None for a DELETE.
    unknown: list[bytes | None] = field(default_factory=list)


@dataclass
class UploadRec:
    """One tus upload: the bytes meant, the offset acknowledged, its end."""

    url: str
    location: str
    data: bytes
    acked_offset: int = 0
    asset_id: str | None = None
    terminate_sent: bool = False
    terminated: bool = False  # the DELETE got its 204
    checked: bool = False  # its asset's bytes were downloaded and compared
    digest: str = ""

    def __post_init__(self) -> None:
        self.digest = sha256(self.data)


@dataclass
class JobRec:
    """One job enqueue with its idempotency key; `job_id` None until acknowledged."""

    key: str
    asset_id: str
    job_id: str | None = None


@dataclass
class Load:
    """Where the clients of a box write, and how much."""

    url: str
    token: str
    locations: tuple[str, ...]
    video_asset: str
    upload_bytes: tuple[int, int] = (16 * 1024, 256 * 1024)
    chunk_bytes: tuple[int, int] = (8 * 1024, 64 * 1024)
    doc_pad: tuple[int, int] = (8, 2000)
    new_jobs: int = 10  # new jobs per client per round; after that it repeats known keys
    terminate_share: float = 0.2  # uploads abandoned with a tus DELETE


@dataclass
class Ledger:
    """Everything every client was told (and not told), over every round."""

    docs: list[DocRec] = field(default_factory=list)
    uploads: list[UploadRec] = field(default_factory=list)
    jobs: list[JobRec] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    unknown_locations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)  # this round's, per client
    total_acks: int = 0
    deletes: int = 0  # acknowledged document DELETEs
    terminations: int = 0  # acknowledged tus DELETEs
    busy: int = 0  # 503 "busy" answers (a DB write lock held past the timeout), retried
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, who: str) -> None:
        """Count one acknowledgement for client `who`."""
        with self.lock:
            self.acks[who] = self.acks.get(who, 0) + 1
            self.total_acks += 1

    def error(self, what: str, r: httpx.Response) -> None:
        """Record an answer no client should ever get (a 5xx, or a 4xx for a good request)."""
        with self.lock:
            self.errors.append(f"{what}: {r.status_code} {r.text[:300]}")

    def summary(self) -> str:
        """The figures of a run: how much was acknowledged, of what kinds."""
        docs = sum(d.acked is not None for d in self.docs)
        assets = sum(u.asset_id is not None for u in self.uploads)
        jobs = sum(j.job_id is not None for j in self.jobs)
        return (
            f"{self.total_acks} acks: {docs} documents held, {self.deletes} deletes, "
            f"{assets} upload assets, {self.terminations} terminations, {jobs} jobs, "
            f"{len(self.locations)} locations, {self.busy} busy answers retried"
        )

    def add(self, items: list[DocRec] | list[UploadRec] | list[JobRec], item: object) -> None:
        """Append `item` to one of the ledger's lists under the lock."""
        with self.lock:
            items.append(item)  # type: ignore[arg-type]


class Cut(httpx.HTTPError):
    """The round ended while the box answered busy: the request's fate stays unknown."""


def call(
    c: httpx.Client, led: Ledger, stop: threading.Event, method: str, url: str, **kw: Any
) -> httpx.Response:
    """One request; a 503 "busy" (another process held the database's write lock past the
    timeout: nothing was written) is sent again after its Retry-After, as a client would."""
    while True:
        r = c.request(method, url, **kw)
        if not (
            r.status_code == 503
            and "retry-after" in r.headers
            and r.headers.get("content-type", "").startswith("application/json")
            and r.json().get("error") == "busy"
        ):
            return r
        with led.lock:
            led.busy += 1
        if stop.wait(min(float(r.headers["retry-after"]), 1.0)):
            raise Cut("the round ended while the box was busy")


Client = Callable[[Load, Ledger, str, random.Random, threading.Event], None]


def guarded(fn: Client) -> Client:
    """Run a client so that a bug in the test client fails the test instead of vanishing."""

    def run(load: Load, led: Ledger, who: str, rng: random.Random, stop: threading.Event) -> None:
        try:
            fn(load, led, who, rng, stop)
        except Exception as exc:
            with led.lock:
                led.errors.append(f"{who} crashed: {exc!r}")

    return run


def doc_client(
    load: Load, led: Ledger, who: str, rng: random.Random, stop: threading.Event
) -> None:
    """Create, update and delete own documents with CAS until stopped or cut off."""
    mine: list[DocRec] = []
    with client(load.url, load.token, timeout=20) as c:
        for i in itertools.count():
            if stop.is_set():
                return
            settled = [d for d in mine if not d.unknown]
            if not settled or rng.random() < 0.3:
                doc = DocRec(rng.choice(load.locations), f"{who}-k{i}")
                mine.append(doc)
                led.add(led.docs, doc)
            else:
                doc = rng.choice(settled)
            body: bytes | None
            if doc.acked is None:
                method, headers, want = "PUT", {"If-None-Match": "*"}, 201
            elif rng.random() < 0.25:
                method, headers, want = "DELETE", {"If-Match": str(doc.etag)}, 204
            else:
                method, headers, want = "PUT", {"If-Match": str(doc.etag)}, 200
            pad = secrets.token_hex(rng.randint(*load.doc_pad))
            body = (
                json.dumps({"who": who, "i": i, "pad": pad}).encode() if method == "PUT" else None
            )
            doc.unknown.append(body)
            url = f"/v1/locations/{doc.location}/docs/c/{doc.key}"
            try:
                r = call(c, led, stop, method, url, content=body, headers=headers)
            except httpx.HTTPError:
                return  # the server is gone; this write's fate is unknown
            if r.status_code != want:
                led.error(f"{method} {doc.key}", r)
                return
            doc.acked, doc.etag = body, (r.headers["etag"] if body is not None else None)
            doc.unknown.clear()
            if body is None:
                with led.lock:
                    led.deletes += 1
            led.ack(who)


def upload_client(
    load: Load, led: Ledger, who: str, rng: random.Random, stop: threading.Event
) -> None:
    """tus uploads in random chunks; some are abandoned part-way with a tus DELETE."""
    with client(load.url, load.token, timeout=20) as c:
        for n in itertools.count():
            if stop.is_set():
                return
            data = os.urandom(rng.randint(*load.upload_bytes))
            loc = rng.choice(load.locations)
            headers = {
                **TUS,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": tus_metadata(loc, f"{who}-{n}.bin"),
            }
            try:
                r = call(c, led, stop, "POST", "/v1/uploads", headers=headers)
            except httpx.HTTPError:
                return
            if r.status_code != 201:
                led.error("POST /v1/uploads", r)
                return
            rec = UploadRec(str(r.headers["location"]), loc, data)
            led.add(led.uploads, rec)
            led.ack(who)
            abandon = rng.randrange(len(data)) if rng.random() < load.terminate_share else None
            while rec.asset_id is None:
                if stop.is_set():
                    return
                if abandon is not None and rec.acked_offset >= abandon:
                    rec.terminate_sent = True
                    try:
                        r = call(c, led, stop, "DELETE", rec.url, headers=TUS)
                    except httpx.HTTPError:
                        return
                    if r.status_code != 204:
                        led.error(f"DELETE {rec.url}", r)
                        return
                    rec.terminated = True
                    with led.lock:
                        led.terminations += 1
                    led.ack(who)
                    break
                size = rng.randint(*load.chunk_bytes)
                chunk = data[rec.acked_offset : rec.acked_offset + size]
                try:
                    headers = {**TUS, "Upload-Offset": str(rec.acked_offset)}
                    headers["Content-Type"] = OCTETS
                    r = call(c, led, stop, "PATCH", rec.url, content=chunk, headers=headers)
                except httpx.HTTPError:
                    return
                if r.status_code != 204:
                    led.error(f"PATCH {rec.url}", r)
                    return
                rec.acked_offset = int(r.headers["upload-offset"])
                rec.asset_id = r.headers.get("fieldbox-asset-id")
                led.ack(who)


def job_client(
    load: Load, led: Ledger, who: str, rng: random.Random, stop: threading.Event
) -> None:
    """Enqueue perception jobs with idempotency keys; repeat known keys (200, same job)."""
    mine: list[JobRec] = []
    with client(load.url, load.token, timeout=20) as c:
        for i in itertools.count():
            if stop.is_set():
                return
            if len(mine) < load.new_jobs and (not mine or rng.random() < 0.5):
                rec, want = JobRec(f"{who}-j{i}", load.video_asset), 202
                led.add(led.jobs, rec)
            else:
                rec, want = rng.choice(mine), 200
            body = {"kind": "perception", "asset_id": rec.asset_id, "idempotency_key": rec.key}
            try:
                r = call(c, led, stop, "POST", "/v1/jobs", json=body)
            except httpx.HTTPError:
                return
            if r.status_code != want:
                led.error(f"POST /v1/jobs {rec.key}", r)
                return
            job_id = str(r.json()["id"])
            if rec.job_id is not None and job_id != rec.job_id:
                with led.lock:
                    led.errors.append(f"{rec.key}: job {job_id}, before {rec.job_id}")
                return
            if rec.job_id is None:
                rec.job_id = job_id
                mine.append(rec)
            led.ack(who)
            if stop.wait(0.02):  # a client pace, not a wait for an outcome
                return


def location_client(
    load: Load, led: Ledger, who: str, rng: random.Random, stop: threading.Event
) -> None:
    """Create locations (each one a new location.db) until stopped or cut off."""
    with client(load.url, load.token, timeout=20) as c:
        for i in itertools.count():
            if stop.is_set():
                return
            loc_id = f"{who}-l{i}"
            geo = rng.choice(("u4pr", "u4ps", "dr5r"))
            with led.lock:
                led.unknown_locations.append(loc_id)
            body = {"id": loc_id, "account": "acme", "geo_prefix": geo, "name": loc_id}
            try:
                r = call(c, led, stop, "POST", "/v1/locations", json=body)
            except httpx.HTTPError:
                return
            if r.status_code != 201:
                led.error(f"POST location {loc_id}", r)
                return
            with led.lock:
                led.unknown_locations.remove(loc_id)
                led.locations.append(loc_id)
            led.ack(who)


def start_clients(
    load: Load, led: Ledger, clients: dict[str, Client], rng: random.Random
) -> tuple[threading.Event, list[threading.Thread]]:
    """Start one thread per client (each with its own seeded random); return the stop flag."""
    stop = threading.Event()
    led.acks.clear()
    threads = [
        threading.Thread(
            target=guarded(fn),
            args=(load, led, who, random.Random(rng.random()), stop),
            daemon=True,
        )
        for who, fn in clients.items()
    ]
    for t in threads:
        t.start()
    return stop, threads


def wait_acks(led: Ledger, clients: dict[str, Client], timeout: float = 30) -> None:
    """Block until every client was acknowledged once; fail the round if one never was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with led.lock:
            if all(led.acks.get(who) for who in clients) or led.errors:
                return
        time.sleep(0.01)
    missing = [who for who in clients if not led.acks.get(who)]
    raise AssertionError(f"clients never acknowledged before the kill: {missing}; {led.errors}")


def stop_clients(stop: threading.Event, threads: list[threading.Thread], led: Ledger) -> None:
    """Stop the clients; fail if one hung or got an answer no client should get."""
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a client thread hung after the kill"
    assert not led.errors, f"bad answers before the crash: {led.errors}"
