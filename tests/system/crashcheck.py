"""After a restart: the whole ledger of the kill -9 tests, every round so far, held against
the box. What a crash left undecided is settled by what the restarted box shows (it is on
disk now), so every later round checks it strictly."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from tests.system.crashload import DocRec, Ledger, UploadRec
from tests.system.helpers import TUS, asset_bytes, sha256, tus_finish, tus_offset


def _pages(c: httpx.Client, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        r = c.get(path, params=query)
        assert r.status_code == 200, (path, r.status_code, r.text)
        page = r.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def listed_assets(c: httpx.Client, location: str) -> dict[str, str]:
    """Asset id → sha256 of a location, through the API's listing."""
    items = _pages(c, "/v1/assets", {"location": location})
    return {a["id"]: a["sha256"] for a in items}


def _settle_doc(doc: DocRec, item: dict[str, Any] | None, where: str) -> None:
    """Check one document against what the box lists, then adopt the box's state."""
    seen = None if item is None else item["body"]
    acked = None if doc.acked is None else json.loads(doc.acked)
    if seen == acked:
        if item is not None:
            assert item["etag"] == doc.etag, f"{doc.key}: ETag changed {where}"
        doc.unknown.clear()
        return
    candidates = [b for b in doc.unknown if (None if b is None else json.loads(b)) == seen]
    state = "deleted" if doc.acked is None else "written"
    assert candidates, f"{doc.key}: acknowledged {state} state lost (box has {seen}) {where}"
    doc.acked = candidates[0]
    doc.etag = None if item is None else str(item["etag"])
    doc.unknown.clear()


class Checker:
    """Holds one box to its ledger after each restart."""

    def __init__(self, led: Ledger, data_dir: Path) -> None:
        self.led = led
        self.data_dir = data_dir
        self.seen_docs = 0  # ledger entries before these were checked once in full
        self.seen_uploads = 0
        self.seen_jobs = 0

    def verify(self, c: httpx.Client, where: str, full: bool = False) -> None:
        """Every acknowledgement so far is on the box; `full` re-reads every byte and row."""
        self._docs(c, where, full)
        self._uploads(c, where, full)
        self._jobs(c, where, full)
        self._locations(c, where)
        self.seen_docs = len(self.led.docs)
        self.seen_uploads = len(self.led.uploads)
        self.seen_jobs = len(self.led.jobs)

    def _docs(self, c: httpx.Client, where: str, full: bool) -> None:
        by_location: dict[str, list[DocRec]] = defaultdict(list)
        for doc in self.led.docs:
            by_location[doc.location].append(doc)
        for loc, docs in by_location.items():
            listed = {i["key"]: i for i in _pages(c, f"/v1/locations/{loc}/docs/c", {})}
            for doc in docs:
                _settle_doc(doc, listed.pop(doc.key, None), where)
            assert not listed, f"documents nobody wrote in {loc}: {sorted(listed)[:5]} {where}"
        # The exact bytes and ETag header of each one not read in full before.
        for doc in self.led.docs if full else self.led.docs[self.seen_docs :]:
            r = c.get(f"/v1/locations/{doc.location}/docs/c/{doc.key}")
            if doc.acked is None:
                assert r.status_code == 404, f"deleted {doc.key} is back {where}"
            else:
                assert r.status_code == 200, f"acknowledged {doc.key} is gone {where}"
                assert r.content == doc.acked, f"{doc.key}: other bytes {where}"
                assert r.headers["etag"] == doc.etag, f"{doc.key}: ETag changed {where}"

    def _uploads(self, c: httpx.Client, where: str, full: bool) -> None:
        assets: dict[str, str] = {}
        for loc in {u.location for u in self.led.uploads}:
            assets.update(listed_assets(c, loc))
        shas = set(assets.values())
        for i, rec in enumerate(self.led.uploads):
            fresh = full or i >= self.seen_uploads or not (rec.checked or rec.terminated)
            if rec.terminated or rec.terminate_sent:
                self._terminated(c, rec, fresh, where)
                assert rec.digest not in shas, f"terminated {rec.url} is an asset {where}"
            elif fresh:
                self._finish(c, rec, where)
            else:
                assert assets.get(str(rec.asset_id)) == rec.digest, (
                    f"asset {rec.asset_id} of {rec.url} is not listed with its sha256 {where}"
                )

    def _terminated(self, c: httpx.Client, rec: UploadRec, fresh: bool, where: str) -> None:
        if not fresh:
            return
        head = c.head(rec.url, headers=TUS)
        if not rec.terminated and head.status_code == 200:
            # The DELETE never got its answer and did not happen: send it again.
            r = c.delete(rec.url, headers=TUS)
            assert r.status_code == 204, (rec.url, r.status_code, r.text, where)
            rec.terminated = True
            head = c.head(rec.url, headers=TUS)
        assert head.status_code == 404, f"terminated upload {rec.url} is back {where}"
        rec.terminated = True

    def _finish(self, c: httpx.Client, rec: UploadRec, where: str) -> None:
        head = c.head(rec.url, headers=TUS)
        assert head.status_code == 200, f"acknowledged upload {rec.url} is gone {where}"
        offset = int(head.headers["upload-offset"])
        assert rec.acked_offset <= offset <= len(rec.data), (offset, rec.acked_offset, where)
        if rec.asset_id is not None:
            assert head.headers.get("fieldbox-asset-id") == rec.asset_id, where
        assert tus_offset(c, rec.url) == offset
        asset_id = tus_finish(c, rec.url, rec.data)
        if rec.asset_id is not None:
            assert asset_id == rec.asset_id, where
        rec.asset_id = asset_id
        body = asset_bytes(c, asset_id)
        assert sha256(body) == rec.digest, f"asset {asset_id} has other bytes {where}"
        assert c.get(f"/v1/assets/{asset_id}").json()["sha256"] == rec.digest, where
        rec.checked = True

    def jobs_on_disk(self) -> dict[str, str]:
        """Idempotency key → job id, read from queue.db (the API lists only the newest)."""
        conn = sqlite3.connect(f"file:{self.data_dir / 'queue.db'}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute(
                "SELECT idempotency_key, id FROM jobs WHERE idempotency_key IS NOT NULL"
            ).fetchall()
        finally:
            conn.close()
        return {str(k): str(v) for k, v in rows}

    def _jobs(self, c: httpx.Client, where: str, full: bool) -> None:
        on_disk = self.jobs_on_disk()
        for i, rec in enumerate(self.led.jobs):
            body = {"kind": "perception", "asset_id": rec.asset_id, "idempotency_key": rec.key}
            if rec.job_id is None:
                if rec.key not in on_disk:
                    # Never stored: enqueue it now, so later rounds hold the box to it.
                    r = c.post("/v1/jobs", json=body)
                    assert r.status_code == 202, (rec.key, r.status_code, r.text, where)
                    on_disk[rec.key] = str(r.json()["id"])
                rec.job_id = on_disk[rec.key]
                continue
            assert on_disk.get(rec.key) == rec.job_id, f"acknowledged job {rec.key} lost {where}"
            if full or i >= self.seen_jobs:
                job = c.get(f"/v1/jobs/{rec.job_id}")
                assert job.status_code == 200, (rec.job_id, job.text, where)
                assert job.json()["idempotency_key"] == rec.key, where
                again = c.post("/v1/jobs", json=body)
                assert again.status_code == 200, (rec.key, again.status_code, again.text, where)
                assert again.json()["id"] == rec.job_id, f"{rec.key}: a second job {where}"

    def _locations(self, c: httpx.Client, where: str) -> None:
        r = c.get("/v1/locations")
        assert r.status_code == 200, r.text
        listed = {loc["id"] for loc in r.json()["items"]}
        assert not [i for i in listed if i.startswith(".") or "tmp" in i], listed
        lost = set(self.led.locations) - listed
        assert not lost, f"acknowledged locations lost: {lost} {where}"
        extra = listed - set(self.led.locations) - set(self.led.unknown_locations)
        assert not extra, f"locations nobody created: {extra} {where}"
        # Settled now: a location whose POST got no answer either exists or never will.
        for loc_id in list(self.led.unknown_locations):
            if loc_id in listed:
                self.led.locations.append(loc_id)
            self.led.unknown_locations.remove(loc_id)
