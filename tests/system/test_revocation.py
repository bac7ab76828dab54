"""`fieldbox keys revoke` takes effect on the very next request to a real api and gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx

from appliance.config import FieldboxConfig
from tests.conftest import ROOT, Server
from tests.inference.conftest import new_key
from tests.system.conftest import StartServer

CLIENTS = 16
ROUNDS = 4


def _many(targets: list[str], token: str) -> list[tuple[str, int, dict[str, object]]]:
    """GET every target from CLIENTS concurrent clients, each on its own connection."""

    def one(url: str) -> tuple[str, int, dict[str, object]]:
        r = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        return url, r.status_code, (r.json() if r.status_code >= 400 else {})

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, targets * (CLIENTS * ROUNDS // len(targets))))


def test_revoked_key_is_refused_by_both_apps_at_once(
    start_server: StartServer, cfg: FieldboxConfig
) -> None:
    """Warm both apps' key memos with concurrent requests, revoke with the CLI, all get 401."""
    key_id, token = new_key(cfg, "tablet-3", ("field", "gateway"))
    api = start_server()
    gateway = Server(cfg.data_dir, process="gateway")
    try:
        gateway.start()
        targets = [api.url + "/v1/locations", gateway.url + "/v1/models"]
        warm = _many(targets, token)
        assert [s for _, s, _ in warm] == [200] * len(warm)
        revoked = subprocess.run(
            [sys.executable, "-m", "appliance", "keys", "revoke", key_id],
            env={**os.environ, "FIELDBOX_DATA": str(cfg.data_dir)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        after = _many(targets, token)
        assert [s for _, s, _ in after] == [401] * len(after)
        for url, _, body in after:
            if url.startswith(api.url):  # the field API's dialect
                assert body["error"] == "unauthorized" and body["status"] == 401, body
            else:  # the gateway speaks OpenAI's
                error = body["error"]
                assert isinstance(error, dict) and "revoked" in str(error["message"]), body
    finally:
        gateway.stop()
