"""One `fieldbox serve api` per data root: a second is refused; a kill -9 frees the root."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, Server, free_port
from tests.system.conftest import StartServer


def _second_api(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "api", "--port", str(port)],
        env={**os.environ, "FIELDBOX_DATA": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )


def _outcome(proc: subprocess.Popen[bytes], url: str, deadline: float) -> str:
    """'exited' once the process ends, 'serving' if it answers /health first."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "exited"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return "serving"
        except httpx.HTTPError:
            time.sleep(0.05)
    return "neither"


def test_second_api_on_one_data_root_is_refused(start_server: StartServer, token: str) -> None:
    """The second exits 1 naming the root and the holder's PID; the first keeps serving."""
    first = start_server()
    assert first.proc is not None
    port = free_port()
    second = _second_api(first.data_dir, port)
    try:
        outcome = _outcome(second, f"http://127.0.0.1:{port}", time.monotonic() + 60)
    finally:
        if second.poll() is None:
            second.kill()
        _, err = second.communicate(timeout=30)
    assert outcome == "exited", "a second api started on a data root already served"
    assert second.returncode == 1
    message = err.decode()
    assert str(first.data_dir) in message, message
    assert f"process {first.proc.pid}" in message, message
    r = httpx.get(first.url + "/v1/locations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert (first.data_dir / "api.lock").read_text().strip() == str(first.proc.pid)


def test_api_starts_at_once_after_the_holder_was_killed(
    start_server: StartServer, token: str
) -> None:
    """kill -9 leaves api.lock on disk, but the kernel dropped the lock: a restart is served."""
    first = start_server()
    first.kill()
    assert (first.data_dir / "api.lock").exists()
    second: Server = start_server()
    assert second.proc is not None
    r = httpx.get(second.url + "/v1/locations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert (second.data_dir / "api.lock").read_text().strip() == str(second.proc.pid)


def test_other_processes_share_the_root_with_the_api(start_server: StartServer) -> None:
    """The lock is the api's alone: a worker on the same data root runs beside it."""
    api = start_server()
    worker = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "worker"],
        env={**os.environ, "FIELDBOX_DATA": str(api.data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        # The worker writes its status file once it runs its loop: wait on that.
        deadline = time.monotonic() + 60
        status: list[Path] = []
        while time.monotonic() < deadline and worker.poll() is None and not status:
            status = list((api.data_dir / "workers").glob("*.json"))
            time.sleep(0.05)
        assert worker.poll() is None, worker.communicate()[1].decode()[-2000:]
        assert status, "the worker never reported in beside the api"
        assert httpx.get(api.url + "/health").status_code == 200
    finally:
        worker.terminate()
        worker.wait(30)
