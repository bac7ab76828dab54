"""One OS process of the CAS race: N read-modify-write increments with If-Match, retry on 412.

Run as `python -m tests.system.cas_worker http URL TOKEN LOCATION N` or
`python -m tests.system.cas_worker store DATA_DIR LOCATION N`. It waits for one line on
stdin (the start signal, so every worker races), then prints one JSON line: the counter
values its acknowledged writes set, and how many 412s it saw.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

COLLECTION = "counters"
KEY = "shared"
MAX_TRIES = 5000


def _value(body: bytes) -> int:
    return int(json.loads(body)["n"])


def _body(n: int, who: str) -> bytes:
    return json.dumps({"n": n, "by": who}).encode()


def run_http(url: str, token: str, location: str, n: int, who: str) -> dict[str, object]:
    """Increment over HTTP; returns what was acknowledged."""
    acked: list[int] = []
    conflicts = 0
    path = f"/v1/locations/{location}/docs/{COLLECTION}/{KEY}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for _ in range(MAX_TRIES):
            if len(acked) == n:
                break
            got = c.get(path)
            if got.status_code != 200:
                raise SystemExit(f"GET answered {got.status_code}: {got.text}")
            new = _value(got.content) + 1
            put = c.put(path, content=_body(new, who), headers={"If-Match": got.headers["etag"]})
            if put.status_code == 412:
                conflicts += 1
                continue
            if put.status_code != 200:
                raise SystemExit(f"PUT answered {put.status_code}: {put.text}")
            acked.append(new)
    return {"acked": acked, "conflicts": conflicts}


def run_store(data_dir: str, location: str, n: int, who: str) -> dict[str, object]:
    """Increment through the store directly (no server)."""
    from store import documents
    from store.config import StoreConfig
    from store.errors import PreconditionFailed
    from store.locations import Locations
    from store.paths import Layout

    locs = Locations(Layout(Path(data_dir)), StoreConfig(data_dir=data_dir))
    db = locs.db(location)
    acked: list[int] = []
    conflicts = 0
    try:
        for _ in range(MAX_TRIES):
            if len(acked) == n:
                break
            doc = documents.get(db, COLLECTION, KEY)
            new = _value(doc.body) + 1
            try:
                documents.put(db, COLLECTION, KEY, _body(new, who), if_match=doc.etag)
            except PreconditionFailed:
                conflicts += 1
                continue
            acked.append(new)
    finally:
        locs.close()
    return {"acked": acked, "conflicts": conflicts}


def main(argv: list[str]) -> None:
    """Parse argv, wait for the start line, run, print the result as JSON."""
    mode = argv[0]
    sys.stdin.readline()
    started = time.monotonic()
    if mode == "http":
        result = run_http(argv[1], argv[2], argv[3], int(argv[4]), argv[5])
    else:
        result = run_store(argv[1], argv[2], int(argv[3]), argv[4])
    result["seconds"] = time.monotonic() - started
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
