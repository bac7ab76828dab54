"""`fieldbox drain` against a real worker process: the running job finishes, nothing new is
claimed until `drain --off`, and a SIGTERM mid-job releases the lease and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.config import FieldboxConfig
from appliance.worker_status import drain_path, read_statuses
from store import ingest
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from store.queue import Job, Queue
from tests.conftest import ROOT, make_config
from tests.system.helpers import FAST_WORKER_CONFIG, DaemonProc
from tests.videos import moving_square_video

CONFIG = FAST_WORKER_CONFIG
WAIT_S = 120.0  # an upper bound on waiting, never part of an assertion


class Box:
    """A data root with a location, a video asset and the queue, opened by the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.config = tmp_path / "fieldbox.toml"
        self.config.write_text(CONFIG)
        self.cfg: FieldboxConfig = make_config(self.data, CONFIG)
        self.layout = Layout(self.data)
        self.layout.ensure()
        locs = Locations(self.layout, self.cfg.store)
        outbox = Outbox(str(self.layout.outbox_db), self.cfg.store)
        try:
            locs.create(Location(id="site1", account="acme", geo_prefix="u4pr", name="Site 1"))
            video = moving_square_video(
                tmp_path / "walk.mp4", frames=480, width=320, height=240, fps=30
            )
            self.asset = ingest.add_file(
                self.layout, locs, outbox, "site1", video,
                kind="video", filename="walk.mp4", mime_type="video/mp4",
            )  # fmt: skip
        finally:
            outbox.close()
            locs.close()
        self.queue = Queue(str(self.layout.queue_db), self.cfg.store, self.cfg.queue)

    def enqueue(self) -> str:
        """Queue a perception job for the video; its id."""
        payload = {"asset_id": self.asset.id, "params": {}}
        return self.queue.enqueue("perception", payload, location="site1")[0].id

    def job(self, job_id: str) -> Job:
        """The job as the queue has it now."""
        return self.queue.get(job_id)

    def wait(self, what: str, done: Callable[[], bool]) -> None:
        """Poll until `done()`; fail the test past WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while not done():
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.05)

    def stage_started(self, job_id: str, stage: str) -> bool:
        """True once the job has begun `stage`."""
        return any(
            e.type == "stage_started" and e.data.get("stage") == stage
            for e in self.queue.events(job_id)
        )

    def drained_polls(self) -> int:
        """Polls the worker skipped because the box was draining (from its status file)."""
        return sum(int(s.get("drained_polls", 0)) for s in read_statuses(self.layout))

    def fieldbox(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the CLI on this box's config and data root."""
        return subprocess.run(
            [sys.executable, "-m", "appliance", "--config", str(self.config), *args],
            env={**os.environ, "FIELDBOX_DATA": str(self.data)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    """A fresh box; its queue is closed at the end."""
    made = Box(tmp_path)
    try:
        yield made
    finally:
        made.queue.close()


def test_drain_finishes_the_running_job_and_claims_nothing_new(box: Box) -> None:
    """Two jobs, one worker slot: drained while the first runs, the worker finishes it,
    leaves the second queued, and `drain --wait` returns 0 only then; a short timeout
    exits 1 while it still runs. `drain --off` lets the worker claim again."""
    first, second = box.enqueue(), box.enqueue()
    worker = DaemonProc(box.data, box.config)
    try:
        box.wait("the first job segments", lambda: box.stage_started(first, "segment"))
        assert box.fieldbox("drain", "--reason", "test").returncode == 0
        assert drain_path(box.layout).is_file()

        short = box.fieldbox("drain", "--wait", "--timeout", "0.2")
        assert short.returncode == 1, short
        assert first in short.stdout and "timed out" in short.stderr

        waited = box.fieldbox("drain", "--wait", "--timeout", str(WAIT_S))
        assert waited.returncode == 0, (waited, worker.log_path.read_text()[-3000:])
        assert box.job(first).status == "succeeded"
        status = box.fieldbox("drain", "--status").stdout
        assert "draining: yes" in status and "running here: 0" in status

        # The worker looked at the queue several times since (its status counts the polls
        # it skipped because the box drains), and claimed nothing.
        box.wait("three drained polls", lambda: box.drained_polls() >= 3)
        held = box.job(second)
        assert (held.status, held.attempts) == ("queued", 0), held
        assert [e.type for e in box.queue.events(second)] == ["queued"]

        assert box.fieldbox("drain", "--off").returncode == 0
        box.wait("the second job is claimed", lambda: box.job(second).status == "running")
    finally:
        code = worker.stop()
    assert code == 0, worker.log_path.read_text()[-3000:]


def test_sigterm_mid_job_releases_the_lease_and_exits_0(box: Box) -> None:
    """A worker stopped during segmentation gives its job back (queued, the attempt not
    counted, no lease) and exits 0 well inside the unit's TimeoutStopSec."""
    job_id = box.enqueue()
    worker = DaemonProc(box.data, box.config)
    try:
        box.wait("the job segments", lambda: box.stage_started(job_id, "segment"))
    finally:
        started = time.monotonic()
        code = worker.stop()
        took = time.monotonic() - started
    assert code == 0, worker.log_path.read_text()[-3000:]
    assert took < 10, f"stopping took {took:.1f} s"
    job = box.job(job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("queued", 0, None), job
    assert box.queue.events(job_id)[-1].type == "released"


def test_serve_worker_undrain_clears_the_flag_and_drain_is_idempotent(box: Box) -> None:
    """`drain` twice says it was already draining; `serve worker --undrain` starts clear."""
    assert "already" not in box.fieldbox("drain").stdout
    assert "already" in box.fieldbox("drain").stdout
    assert box.fieldbox("drain", "--off", "--wait").returncode == 2
    job_id = box.enqueue()
    argv = [sys.executable, "-m", "appliance", "--config", str(box.config)]
    worker = subprocess.Popen(
        [*argv, "serve", "worker", "--undrain"],
        env={**os.environ, "FIELDBOX_DATA": str(box.data)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        box.wait("the job is claimed", lambda: box.job(job_id).status != "queued")
        assert not drain_path(box.layout).exists()
    finally:
        worker.terminate()
        assert worker.wait(30) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand the data root to another user")
def test_root_may_not_drain_a_data_root_it_does_not_own(box: Box) -> None:
    """Run as root on a box whose data root belongs to the service user, `drain` refuses
    (exit 2) instead of leaving root-owned files the services could not write."""
    os.chown(box.data, 4242, 4242)
    refused = box.fieldbox("drain")
    assert refused.returncode == 2, refused
    assert "sudo -u fieldbox" in refused.stderr
    assert not drain_path(box.layout).exists()
