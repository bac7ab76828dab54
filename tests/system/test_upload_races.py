"""Finalize happens once, under the upload's lock, whatever else arrives meanwhile.

Finalize is made slow without touching the server: the api is restarted before the last
byte, so it lost its running hash and must read the whole 256 MiB file again (a quarter
second or more) while the final PATCH holds the lock. Other requests then race it for real.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.system.conftest import StartServer
from tests.system.helpers import OCTETS, TUS, client, create_location, tus_create, tus_patch

MIB = 1 << 20
SIZE = 256 * MIB
BLOCK = bytes(range(256)) * 4096  # 1 MiB


def _body(size: int) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        piece = BLOCK[: min(MIB, size - sent)]
        sent += len(piece)
        yield piece


@dataclass
class Answer:
    """One racing request: what it was, when it went out and came back, what it got."""

    op: str
    sent: float
    received: float
    status: int
    asset_id: str | None
    error: str | None


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _offset(data_dir: Path, upload_id: str) -> int | None:
    conn = _ro(data_dir / "uploads.db")
    try:
        row = conn.execute("SELECT offset FROM uploads WHERE id = ?", (upload_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else int(row[0])


def _asset_ids(data_dir: Path, upload_id: str) -> list[str]:
    conn = _ro(data_dir / "locations" / "acme" / "u4pr" / "site" / "location.db")
    try:
        rows = conn.execute("SELECT id FROM assets WHERE upload_id = ?", (upload_id,)).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def _outbox_assets(data_dir: Path) -> list[str]:
    conn = _ro(data_dir / "outbox.db")
    try:
        return [r[0] for r in conn.execute("SELECT asset_id FROM outbox").fetchall()]
    finally:
        conn.close()


def _all_but_last_byte(start_server: StartServer, token: str) -> tuple[str, str, Path]:
    """An upload with SIZE - 1 bytes acknowledged, on a freshly restarted api (no hash)."""
    first = start_server()
    with client(first.url, token, timeout=120) as c:
        create_location(c, "site")
        url = tus_create(c, "site", SIZE, "big.bin")
        r = c.patch(
            url,
            content=_body(SIZE - 1),
            headers={
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": OCTETS,
                "Content-Length": str(SIZE - 1),
            },
        )
        assert r.status_code == 204, r.text
        assert r.headers["upload-offset"] == str(SIZE - 1)
    first.kill()
    second = start_server()
    return second.url, url, first.data_dir


def _race(
    base: str, token: str, url: str, data_dir: Path, ops: list[str]
) -> tuple[httpx.Response, list[Answer]]:
    """Send the last byte; once it is committed, fire `ops` in a loop until it is answered."""
    upload_id = url.rsplit("/", 1)[1]
    final: list[httpx.Response] = []

    def last_byte() -> None:
        with client(base, token, timeout=120) as c:
            final.append(tus_patch(c, url, SIZE - 1, BLOCK[(SIZE - 1) % MIB :][:1]))

    closer = threading.Thread(target=last_byte)
    closer.start()
    deadline = time.monotonic() + 60
    while _offset(data_dir, upload_id) != SIZE and time.monotonic() < deadline:
        time.sleep(0.002)
    assert _offset(data_dir, upload_id) == SIZE, "the last byte was never committed"
    answers: list[Answer] = []
    lock = threading.Lock()

    def hammer(op: str) -> None:
        with client(base, token) as c:
            while closer.is_alive():
                sent = time.monotonic()
                r = tus_patch(c, url, SIZE, b"") if op == "patch" else c.delete(url, headers=TUS)
                got = Answer(
                    op,
                    sent,
                    time.monotonic(),
                    r.status_code,
                    r.headers.get("fieldbox-asset-id"),
                    r.json()["error"] if r.status_code >= 400 else None,
                )
                if r.status_code >= 400:
                    assert r.json()["status"] == r.status_code
                with lock:
                    answers.append(got)

    hammers = [threading.Thread(target=hammer, args=(op,)) for op in ops]
    for h in hammers:
        h.start()
    closer.join(120)
    for h in hammers:
        h.join(60)
    assert final, "the final PATCH never came back"
    return final[0], answers


def test_second_patches_during_finalize_get_423_and_one_asset(
    start_server: StartServer, token: str
) -> None:
    """Empty PATCHes racing finalize: 423 while it runs, then 204 naming the one asset."""
    base, url, data_dir = _all_but_last_byte(start_server, token)
    upload_id = url.rsplit("/", 1)[1]
    final, answers = _race(base, token, url, data_dir, ["patch"] * 4)
    assert final.status_code == 204, final.text
    asset_id = final.headers["fieldbox-asset-id"]
    assert _asset_ids(data_dir, upload_id) == [asset_id]
    assert _outbox_assets(data_dir) == [asset_id], "finalized more than once"
    for a in answers:
        if a.status == 423:
            assert a.error == "locked"
        else:
            assert (a.status, a.asset_id) == (204, asset_id), a
    assert [a for a in answers if a.status == 423], "no request landed during finalize"
    with client(base, token) as c:
        again = tus_patch(c, url, SIZE, b"")
        assert (again.status_code, again.headers["fieldbox-asset-id"]) == (204, asset_id)
    assert not (data_dir / "uploads" / f"{upload_id}.part").exists()


def test_delete_during_finalize_waits_its_turn(start_server: StartServer, token: str) -> None:
    """DELETEs racing finalize: 423 while it runs; the asset is made, then the upload goes."""
    base, url, data_dir = _all_but_last_byte(start_server, token)
    upload_id = url.rsplit("/", 1)[1]
    final, answers = _race(base, token, url, data_dir, ["delete", "patch", "patch"])
    assert final.status_code == 204, final.text
    asset_id = final.headers["fieldbox-asset-id"]
    assert [a for a in answers if a.status == 423], "no request landed during finalize"
    with client(base, token) as c:
        sent = time.monotonic()
        last = c.delete(url, headers=TUS)
        received = time.monotonic()
    deleted = [a for a in answers if a.op == "delete" and a.status == 204]
    if last.status_code == 204:  # no racing DELETE won: this one, after them all, did
        deleted.append(Answer("delete", sent, received, 204, None, None))
    else:
        assert (last.status_code, last.json()["error"]) == (404, "not_found")
    assert len(deleted) == 1, "the upload was deleted more than once, or never"
    winner = deleted[0]
    for a in answers:
        if a is winner:
            continue
        if a.sent > winner.received:  # went out after the DELETE was answered: gone
            assert (a.status, a.error) == (404, "not_found"), a
        elif a.status == 423:
            assert a.error == "locked"
        elif a.status == 204:
            assert (a.op, a.asset_id) == ("patch", asset_id), a
        else:  # overlapped the winning DELETE, and came after it on the server
            assert (a.status, a.error) == (404, "not_found"), a
            assert a.received > winner.sent, a
    assert _offset(data_dir, upload_id) is None
    assert _asset_ids(data_dir, upload_id) == [asset_id]
    assert _outbox_assets(data_dir) == [asset_id]
    with client(base, token) as c:
        r = c.get(f"/v1/assets/{asset_id}")
        assert r.status_code == 200, r.text
        assert r.json()["size"] == SIZE
