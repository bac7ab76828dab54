"""Schemathesis against a real api and a real gateway, each through its own OpenAPI schema.

Each app runs as its own process on a free port, on a data root seeded with a location,
documents, a video asset and a job, and is fuzzed by the `schemathesis run` CLI: coverage
(boundary and invalid values of every parameter), fuzzing (random valid and invalid
requests) and stateful phases (call chains through the links schemathesis infers, e.g.
`POST /v1/locations` → `GET /v1/locations/{id}/docs/...`). Every response is checked for:
no 5xx (`not_a_server_error`), every error JSON in its app's dialect, and `nosniff`
(`tests/system/fuzz_checks.py`). Afterwards the process must still be up and its log must
hold no unhandled error.

`make test` runs a few hundred cases per app (`FIELDBOX_FUZZ_EXAMPLES`, default 5 per
operation and phase, plus the coverage phase's deterministic cases); `make fuzz` runs
thousands. The seed is fixed (`FIELDBOX_FUZZ_SEED`), so a failure replays; the CLI's report
prints a curl command for each failing request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from appliance.config import FieldboxConfig
from tests.conftest import ROOT, Server, make_token
from tests.inference.upstreams import FakeUpstream, remote_backend, start_gateway
from tests.system.helpers import client, create_location, tus_create, tus_finish
from tests.videos import moving_square_video

EXAMPLES = int(os.environ.get("FIELDBOX_FUZZ_EXAMPLES", "5"))
SEED = int(os.environ.get("FIELDBOX_FUZZ_SEED", "20261204"))
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = "not_a_server_error,error_is_app_json,sends_nosniff"
GATEWAY_MODEL = "smollm2-135m"  # the schema's example model name, so examples reach a backend


@dataclass
class Target:
    """One app under fuzz: where its schema is, a key, and its process."""

    server: Server
    token: str
    dialect: str

    @property
    def schema_url(self) -> str:
        """The app's own OpenAPI document."""
        return self.server.url + "/schema/openapi.json"


@dataclass
class Outcome:
    """What one schemathesis run did and found."""

    rc: int
    output: str
    report: dict[str, object]

    def cases(self) -> int:
        """How many test cases it generated and sent."""
        cases = self.report["test_cases"]
        assert isinstance(cases, dict), self.output[-3000:]
        return int(cases["generated"])

    def phase(self, name: str) -> str:
        """A phase's status in the report: success, failure, skip, error."""
        phases = self.report["phases"]
        assert isinstance(phases, dict), self.output[-3000:]
        return str(phases[name]["status"])

    def untested(self) -> int:
        """Operations of the schema that got no case."""
        ops = self.report["operations"]
        assert isinstance(ops, dict), self.output[-3000:]
        return int(ops["selected"]) - int(ops["tested"])


def fuzz(target: Target, tmp: Path, examples: int = EXAMPLES) -> Outcome:
    """Run `schemathesis run` against the target with fieldbox's checks; return what it did."""
    report = tmp / f"schemathesis-{target.dialect}.json"
    argv = [
        str(SCHEMATHESIS),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        target.schema_url,
        "--header",
        f"Authorization: Bearer {target.token}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        str(SEED),
        # One worker: a fixed seed gives the same requests in the same order.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--max-failures",
        "25",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.system.fuzz_checks",
        "FIELDBOX_FUZZ_DIALECT": target.dialect,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    output = proc.stdout + proc.stderr
    data = json.loads(report.read_text()) if report.exists() else {}
    return Outcome(proc.returncode, output, data)


def assert_clean(target: Target, outcome: Outcome) -> None:
    """No failure, and the process is up with no unhandled error in its log."""
    assert outcome.rc == 0, outcome.output[-12000:]
    proc = target.server.proc
    assert proc is not None and proc.poll() is None, "the server died during the fuzz run"
    log = target.server.log_path.read_text(errors="replace")
    assert "unhandled_error" not in log, log[log.index("unhandled_error") - 200 :][:3000]
    assert "Traceback" not in log, log[log.index("Traceback") :][:3000]


def _seed_api(url: str, token: str, tmp: Path) -> None:
    """A location, documents, a video asset and a (cancelled) job for the fuzzer to reach."""
    with client(url, token) as c:
        create_location(c, "loc1")
        for key in ("roof", "porch"):
            r = c.put(
                f"/v1/locations/loc1/docs/inspections/{key}",
                json={"project": "p1", "ok": key == "roof"},
                headers={"If-None-Match": "*"},
            )
            assert r.status_code == 201, r.text
        video = moving_square_video(tmp / "walk.mp4").read_bytes()
        asset_id = tus_finish(c, tus_create(c, "loc1", len(video), "walk.mp4"), video)
        r = c.post("/v1/jobs", json={"kind": "perception", "asset_id": asset_id})
        assert r.status_code == 202, r.text
        # Cancelled, so its event stream ends: no worker runs in this test.
        r = c.post(f"/v1/jobs/{r.json()['id']}/cancel")
        assert r.status_code == 200, r.text


@pytest.fixture
def api_target(cfg: FieldboxConfig, tmp_path: Path) -> Iterator[Target]:
    """A real `fieldbox serve api` with seeded data and a field+admin key."""
    token = make_token(cfg, ("field", "admin"))
    server = Server(cfg.data_dir).start()
    try:
        _seed_api(server.url, token, tmp_path)
        yield Target(server, token, "api")
    finally:
        server.stop()


@pytest.fixture
def gateway_target(tmp_path: Path) -> Iterator[Target]:
    """A real `fieldbox serve gateway` in front of a fake OpenAI-compatible upstream."""
    fake = FakeUpstream(tmp_path).start()
    try:
        toml = remote_backend("openai", "up", fake.v1("up"), [GATEWAY_MODEL])
        gateway = start_gateway(tmp_path / "gw", toml)
        try:
            assert httpx.get(gateway.url + "/ready", timeout=10).status_code == 200
            yield Target(gateway.server, gateway.token, "gateway")
        finally:
            gateway.stop()
    finally:
        fake.stop()


def test_fuzz_api(api_target: Target, tmp_path: Path) -> None:
    """Schemathesis finds no 5xx, no non-JSON error and no missing nosniff in the api."""
    outcome = fuzz(api_target, tmp_path)
    assert_clean(api_target, outcome)
    assert outcome.cases() >= 25 * EXAMPLES, outcome.output[-3000:]
    assert outcome.untested() == 0, outcome.output[-3000:]
    assert outcome.phase("stateful") == "success", outcome.output[-3000:]
    print(f"api: {outcome.cases()} schemathesis cases, no failure")


def test_fuzz_gateway(gateway_target: Target, tmp_path: Path) -> None:
    """Schemathesis finds no 5xx, no non-JSON error and no missing nosniff in the gateway."""
    outcome = fuzz(gateway_target, tmp_path)
    assert_clean(gateway_target, outcome)
    # The gateway's few operations run out of distinct inputs first: 1208 cases at 100
    # examples (make fuzz), so the floor that proves the fuzzer ran is 10 per example.
    assert outcome.cases() >= 10 * EXAMPLES, outcome.output[-3000:]
    assert outcome.untested() == 0, outcome.output[-3000:]
    print(f"gateway: {outcome.cases()} schemathesis cases, no failure")
    assert outcome.phase("examples") == "success", outcome.output[-3000:]
    print(f"gateway: {outcome.cases()} schemathesis cases, no failure")
