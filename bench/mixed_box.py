"""The box bench/bench_mixed.py plays a field office against: every process for real.

A moto S3 server (tests/bridge/s3server.py) and `fieldbox serve api`, `serve gateway` (the
embedded llama.cpp model, no backend configured), `serve worker` and `serve bridge`, each
on a free port of 127.0.0.1 with one temp data dir and one config file, as `fieldbox up`
runs them. Unlike the other benches' helpers they stay in the bench's own session: Linux
groups each session's processes for the scheduler (autogroup), and a worker's niceness
only counts against processes in its own group, as under `fieldbox up`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, ApiServer, BenchError, _die_with_parent, expect_2xx
from gateway_procs import Proc
from workloads import LOCATION, tus_upload

from tests.bridge.s3server import MotoServer, s3_env, s3_toml

BUCKET = "bench-mixed"


class BoxProc(Proc):
    """One `fieldbox serve …` process in the bench's session (see the module docstring)."""

    def launch(self, argv: list[str], ready: Any, timeout: float) -> None:
        """Start `argv` in this session (PDEATHSIG still set) and wait for `ready()`."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited; see {self.log_path}:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except (OSError, BenchError, ValueError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} was not ready within {timeout:.0f}s; see {self.log_path}")


def box_toml(s3_url: str, extra: str = "") -> str:
    """The box's config: defaults, the bridge pointed at moto, and `extra`."""
    return (
        "# Written by bench/bench_mixed.py: the defaults a box runs with, S3 on moto.\n"
        + s3_toml(s3_url, BUCKET, box_id="bench-box")
        + extra
    )


class Box:
    """moto + api + gateway + worker + bridge on one data dir."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.data_dir = run_dir / "data"
        self.data_dir.mkdir(parents=True)
        self.moto = MotoServer(run_dir)
        self.env = {"FIELDBOX_DATA": str(self.data_dir), **s3_env()}
        self.procs: dict[str, BoxProc] = {}
        self.token = ""
        self.configs: dict[str, Path] = {}

    def config(self, name: str, extra: str = "") -> Path:
        """Write (once) and return the config file `name`."""
        if name not in self.configs:
            path = self.run_dir / f"{name}.toml"
            path.write_text(box_toml(self.moto.url, extra))
            self.configs[name] = path
        return self.configs[name]

    def _fieldbox(self, config: Path, *args: str) -> list[str]:
        return [sys.executable, "-m", "appliance", f"--config={config}", *args]

    def start(self) -> None:
        """Start every process; create the bucket, a field+gateway key and the location."""
        self.moto.start()
        self.moto.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        config = self.config("box")
        out = subprocess.run(
            self._fieldbox(config, "keys", "create", "--scope=field,gateway", "--name=crew"),
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0 or not out.stdout.split():
            raise BenchError(f"keys create failed: {out.stderr.strip()}")
        self.token = out.stdout.split()[-1]
        for name in ("api", "gateway"):
            proc = BoxProc(name, self.run_dir, self.env)
            argv = self._fieldbox(config, "serve", name, "--host=127.0.0.1", f"--port={proc.port}")
            path = "/ready" if name == "gateway" else "/health"
            proc.launch(argv, lambda p=proc, u=path: p.get_ok(u), 180)
            self.procs[name] = proc
        self.start_daemon("bridge", config)
        self.start_worker("box")
        self.api().create_location(LOCATION)

    def start_daemon(self, name: str, config: Path) -> None:
        """`fieldbox serve {name}` (worker or bridge); ready once it runs 2 s without dying."""
        proc = BoxProc(name, self.run_dir, self.env)
        began = time.monotonic()
        proc.launch(self._fieldbox(config, "serve", name), lambda: time.monotonic() - began > 2, 30)
        self.procs[name] = proc

    def start_worker(self, config_name: str, extra: str = "") -> None:
        """(Re)start the worker with config `config_name`."""
        if "worker" in self.procs:
            self.procs.pop("worker").stop()
        self.start_daemon("worker", self.config(config_name, extra))

    def api(self) -> ApiServer:
        """A client handle on the api process (not started by it)."""
        return ApiServer(self.data_dir, port=self.procs["api"].port, token=self.token)

    @property
    def api_addr(self) -> tuple[str, int]:
        """(host, port) of the api."""
        return ("127.0.0.1", self.procs["api"].port)

    @property
    def gateway_addr(self) -> tuple[str, int]:
        """(host, port) of the gateway."""
        return ("127.0.0.1", self.procs["gateway"].port)

    def pids(self) -> dict[str, int]:
        """Process id of each box process."""
        return {name: p.pid for name, p in self.procs.items()}

    def check_alive(self) -> None:
        """BenchError naming any box process that has exited."""
        for name, p in self.procs.items():
            if p.proc is None or p.proc.poll() is not None:
                raise BenchError(f"{name} died; see {p.log_path}:\n{p.log_tail()}")

    def stop(self) -> None:
        """Stop everything, worker and bridge first."""
        for name in ("worker", "bridge", "gateway", "api"):
            if name in self.procs:
                self.procs[name].stop()
        self.moto.stop()

    # --- the splat job -----------------------------------------------------------------

    def submit_splat(self, video: Path) -> str:
        """Upload `video` with tus and queue a default splat job for it; the job id."""
        api = self.api()
        tus_upload(api, video.read_bytes(), 4 << 20, video.name)
        assets = self.request("GET", f"/v1/assets?location={LOCATION}&limit=10")
        asset = next(a for a in assets["items"] if a["filename"] == video.name)
        job = self.request("POST", "/v1/jobs", {"kind": "splat", "asset_id": asset["id"]})
        return str(job["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /v1/jobs/{id}."""
        job: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}")
        return job

    def wait_training(self, job_id: str, timeout: float = 600) -> dict[str, Any]:
        """Wait until the job is running in its train stage and its fraction moves."""
        deadline = time.monotonic() + timeout
        seen: float | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            job = self.job(job_id)
            if job["status"] not in ("queued", "running"):
                raise BenchError(f"splat job ended before the busy phases: {job}")
            if job["status"] == "running" and job["stage"] == "train":
                if seen is not None and job["fraction"] > seen:
                    return job
                seen = job["fraction"]
            time.sleep(1.0)
        raise BenchError(f"splat job {job_id} did not start training within {timeout:.0f}s")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON api call (2xx expected)."""
        conn = self.api().connect()
        try:
            headers = {"Authorization": f"Bearer {self.token}"}
            data = b""
            if body is not None:
                headers["Content-Type"] = "application/json"
                data = json.dumps(body).encode()
            resp = expect_2xx(conn.request(method, path, headers, data), f"{method} {path}")
            return json.loads(resp.body) if resp.body else None
        finally:
            conn.close()

    # --- what the bridge did -----------------------------------------------------------

    def outbox_done_between(self, start: float, end: float) -> tuple[int, int]:
        """(items the bridge finished sending in [start, end), items still pending)."""
        path = self.data_dir / "outbox.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            done = conn.execute(
                "SELECT count(*) FROM outbox WHERE state = 'done' AND done_at >= ? AND done_at < ?",
                (start, end),
            ).fetchone()[0]
            pending = conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()
        finally:
            conn.close()
        return int(done), int(pending[0])
