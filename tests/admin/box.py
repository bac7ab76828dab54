"""A real `fieldbox up` for the admin tests, with real state: a location, a tus upload, a
perception job the worker runs, a job that fails, and a finished splat."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import ROOT, free_port
from tests.system.helpers import client, create_location, tus_create, tus_finish, wait_job
from tests.videos import moving_square_video

TOKEN = re.compile(r"\bfbx_[0-9a-f]+_[A-Za-z0-9_-]+")
# Splat jobs take minutes on two cores: this box's worker runs perception only, and the
# finished splat is published by the test itself through the queue (see `splat_job`).
CONFIG = """
[queue]
lease_s = 5.0
backoff_s = [0.5]
max_attempts = 1
[worker]
heartbeat_s = 0.5
poll_s = 0.2
kinds = ["perception"]
"""


@dataclass
class Box:
    """The running tree, its URLs, its admin token and the state made in it."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    url: str
    gateway_url: str
    token: str
    lines: list[str]
    video_asset: str = ""
    perception_job: str = ""
    failed_job: str = ""
    splat_job: str = ""

    def stop(self) -> None:
        """SIGINT the tree; SIGKILL the group if it lingers."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_box(tmp: Path, config_text: str = CONFIG) -> Box:
    """`fieldbox up` on free ports; wait for its banner and the admin token it prints."""
    config = tmp / "fieldbox.toml"
    config.write_text(config_text)
    data = tmp / "data"
    port, gw_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "FIELDBOX_CONFIG"}
    env.update(FIELDBOX_DATA=str(data), PYTHONUNBUFFERED="1")
    argv = [
        sys.executable,
        "-m",
        "appliance",
        "--config",
        str(config),
        "up",
        "--host",
        "127.0.0.1",
        "--api-port",
        str(port),
        "--gateway-port",
        str(gw_port),
    ]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))
            if '"fieldbox_up"' in lines[-1]:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        raise AssertionError("up printed no banner with a token:\n" + "".join(lines)[-3000:])
    found = TOKEN.search(next(line for line in lines if '"fieldbox_up"' in line))
    assert found is not None
    return Box(
        proc, data, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{gw_port}", found.group(0), lines
    )


def _tiny_ply(path: Path) -> Path:
    from perception.splat.ply import Splat, write_ply

    rng = np.random.default_rng(3)
    n = 400
    f32 = np.float32
    splat = Splat(
        means=rng.normal(0, 1, (n, 3)).astype(f32),
        sh_dc=rng.normal(0, 1, (n, 3)).astype(f32),
        sh_rest=np.zeros((n, 0, 3), f32),
        opacity_logits=np.full(n, 2.0, f32),
        log_scales=np.full((n, 3), -3.0, f32),
        quats=np.tile(np.array([1, 0, 0, 0], f32), (n, 1)),
    )
    write_ply(path, splat, sh_degree=0)
    return path


def populate(box: Box, tmp: Path) -> None:
    """A location, a real tus upload, a perception job run by the real worker, a job that
    fails (its asset does not exist), and a splat job finished with a real .ply asset."""
    from store.paths import Layout
    from store.queue import Queue
    from tests.conftest import make_config

    with client(box.url, box.token) as c:
        create_location(c, "site1")
        video = moving_square_video(tmp / "walk.mp4", frames=20)
        data = video.read_bytes()
        box.video_asset = tus_finish(c, tus_create(c, "site1", len(data), video.name), data)
        r = c.post(
            "/v1/jobs",
            json={"kind": "perception", "asset_id": box.video_asset, "params": {"fps": 5.0}},
        )
        assert r.status_code == 202, r.text
        box.perception_job = r.json()["id"]
        ply = _tiny_ply(tmp / "room.splat.ply")
        pdata = ply.read_bytes()
        ply_asset = tus_finish(c, tus_create(c, "site1", len(pdata), ply.name), pdata)
        cfg = make_config(box.data_dir, CONFIG)
        queue = Queue(str(Layout(box.data_dir).queue_db), cfg.store, cfg.queue)
        try:
            missing = {"asset_id": "site1.000000000000deadbeef", "params": {}}
            box.failed_job = queue.enqueue("perception", missing, location="site1")[0].id
            splat, _ = queue.enqueue(
                "splat", {"asset_id": box.video_asset, "params": {}}, location="site1"
            )
            assert queue.claim("test-splat", ["splat"]) is not None
            queue.progress(splat.id, "test-splat", "train", 1.0, "stage_done")
            queue.succeed(splat.id, "test-splat", {"splat_asset_id": ply_asset})
            box.splat_job = splat.id
        finally:
            queue.close()
        done = wait_job(c, box.perception_job, {"succeeded", "failed", "dead"}, timeout=120)
        assert done["status"] == "succeeded", done
        wait_job(c, box.failed_job, {"failed", "dead"}, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the gateway's first answer can take a moment
        if httpx.get(box.gateway_url + "/ready", timeout=2).status_code == 200:
            break
        time.sleep(0.5)
