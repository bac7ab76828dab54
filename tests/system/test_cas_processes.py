"""Compare-and-swap across OS processes: no lost update, no double count, no corruption."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from appliance.config import FieldboxConfig
from store import documents
from store.config import StoreConfig
from store.locations import Location, Locations
from store.paths import Layout
from tests.conftest import ROOT, Server
from tests.system.cas_worker import COLLECTION, KEY
from tests.system.helpers import check_databases, client, create_location, integrity_check

WORKERS = 4
N = 50


def _race(args_per_worker: list[list[str]], timeout: float = 240) -> list[dict[str, object]]:
    """Start every worker, release them at once, collect each one's JSON result."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.system.cas_worker", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in args_per_worker
    ]
    results: list[dict[str, object]] = []
    try:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err.decode()[-3000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def _check_counts(results: list[dict[str, object]]) -> None:
    """Every acknowledged write set a distinct value, and together they cover 1..200."""
    acked: list[int] = []
    for r in results:
        values = r["acked"]
        assert isinstance(values, list)
        assert len(values) == N, f"a worker got only {len(values)} acknowledgements"
        acked.extend(int(v) for v in values)
    counts = Counter(acked)
    doubles = sorted(v for v, c in counts.items() if c > 1)
    assert not doubles, f"values acknowledged to two writers (lost update): {doubles[:10]}"
    assert sorted(acked) == list(range(1, WORKERS * N + 1))


def test_http_cas_four_processes(server: Server, token: str, cfg: FieldboxConfig) -> None:
    """4 processes x 50 If-Match increments over HTTP end at exactly 200, each ack counted once."""
    with client(server.url, token) as c:
        create_location(c, "race")
        path = f"/v1/locations/race/docs/{COLLECTION}/{KEY}"
        r = c.put(path, content=b'{"n": 0}', headers={"If-None-Match": "*"})
        assert r.status_code == 201, r.text
        results = _race(
            [["http", server.url, token, "race", str(N), f"w{i}"] for i in range(WORKERS)]
        )
        _check_counts(results)
        final = c.get(path)
        assert final.status_code == 200
        assert json.loads(final.content)["n"] == WORKERS * N
        stale = c.put(path, content=b'{"n": -1}', headers={"If-Match": r.headers["etag"]})
        assert stale.status_code == 412
        assert json.loads(c.get(path).content)["n"] == WORKERS * N
    server.stop()
    check_databases(cfg.data_dir)


def test_store_cas_four_processes(tmp_path: Path) -> None:
    """4 processes x 50 increments straight through store.documents end at 200; DB stays ok."""
    data = tmp_path / "data"
    layout = Layout(data)
    layout.ensure()
    locs = Locations(layout, StoreConfig(data_dir=str(data)))
    try:
        locs.create(Location(id="race", account="acme", geo_prefix="u4pr", name="race"))
        documents.put(locs.db("race"), COLLECTION, KEY, b'{"n": 0}', if_none_match=True)
    finally:
        locs.close()
    results = _race([["store", str(data), "race", str(N), f"w{i}"] for i in range(WORKERS)])
    _check_counts(results)
    locs = Locations(layout, StoreConfig(data_dir=str(data)))
    try:
        doc = documents.get(locs.db("race"), COLLECTION, KEY)
        assert json.loads(doc.body)["n"] == WORKERS * N
    finally:
        locs.close()
    db_path = layout.location_db("acme", "u4pr", "race")
    assert integrity_check(db_path) == "ok"
