"""The bridge checks an S3 server before its first upload (bridge/s3probe.py), on real
servers: moto and SeaweedFS pass; s3rver, which ignores `If-None-Match: *` and keeps no
CRC64NVME, gets no blob, and every place a person looks says what it lacks."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.daemon import read_status
from tests.bridge.s3rver import KEY, S3rver
from tests.bridge.s3server import Bucket, S3Server, s3_toml
from tests.bridge.uploadbox import MIB, UPLOAD, blob_bytes, make_box
from tests.system.helpers import DaemonProc

WAIT_S = 60.0  # an upper bound on waiting, never part of an assertion
LACKS = [
    "conditional PutObject (If-None-Match: *): it overwrote an existing object",
    "CRC64NVME on HeadObject (ChecksumMode=ENABLED) for a PutObject",
    "CRC64NVME on HeadObject (ChecksumMode=ENABLED) for a multipart upload",
    "conditional CompleteMultipartUpload (If-None-Match: *): it overwrote an existing object",
]
NO_CHECK = "it stores a body whose CRC64NVME does not match (no check on upload)"


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3rver]:
    """An s3rver process for this module's tests."""
    server = S3rver(tmp_path_factory.mktemp("s3rver")).start()
    yield server
    server.stop()


@pytest.fixture
def s3rver_bucket(s3rver: S3rver, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new bucket on s3rver; the AWS credential variables hold s3rver's keys."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY)
    name = f"t-{secrets.token_hex(6)}"
    client: object = s3rver.client()
    client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return Bucket(s3rver, name, client)


def test_moto_and_seaweedfs_pass_the_check_and_it_leaves_nothing_behind(
    tmp_path: Path, s3_bucket: Bucket, s3_server: S3Server
) -> None:
    box = make_box(tmp_path, s3_bucket.endpoint, s3_bucket.name)
    made = [box.add(blob_bytes(1000, 1)), box.add(blob_bytes(6 * MIB, 2))]
    up = box.uploader()

    result = box.drain(up)

    assert (result.uploaded, result.failed, result.error) == (2, 0, None)
    check = up.status()["server_check"]
    assert (check["ok"], check["missing"]) == (True, [])
    # moto stores what it is sent whatever its checksum says; SeaweedFS refuses it, as S3.
    notes = [n.split(":")[0] for n in check["notes"]]
    assert notes == ([NO_CHECK] if s3_server.name == "moto" else [])
    assert s3_bucket.keys() == sorted(box.key(a.sha256) for a in made)
    assert s3_bucket.multipart_uploads() == []


def test_a_server_without_conditional_writes_or_crc64nvme_gets_no_blob(
    tmp_path: Path, s3rver_bucket: Bucket
) -> None:
    box = make_box(tmp_path, s3rver_bucket.endpoint, s3rver_bucket.name)
    for i, n in enumerate((1000, 6 * MIB)):
        box.add(blob_bytes(n, 10 + i))
    up = box.uploader()

    for _ in range(2):  # a second pass checks again, and still refuses
        result = box.drain(up)
        assert (result.uploaded, result.done) == (0, 0)
        error = result.error or ""
        assert f"S3 server at {s3rver_bucket.endpoint}" in error
        assert "lacks what the bridge needs" in error and all(f in error for f in LACKS)
        status = up.status()
        assert status["server_check"]["ok"] is False
        assert status["server_check"]["missing"] == LACKS
        assert status["last_error"] == error and status["retry_at"] > time.time() - 1
        pending = box.outbox.pending()
        assert len(pending) == 2 and all(i.state == "pending" for i in pending)
        tried = [i for i in pending if i.attempts]
        assert tried and all(i.last_error == error for i in tried)
        box.outbox.retry_all_now()
    # Not one blob went up; the check's own objects were deleted again.
    assert s3rver_bucket.keys() == []


def test_the_daemon_names_what_the_server_lacks_in_its_status(
    tmp_path: Path, s3rver_bucket: Bucket
) -> None:
    toml = (
        s3_toml(s3rver_bucket.endpoint, s3rver_bucket.name)
        + UPLOAD
        + ("[bridge.litestream]\nenabled = false\n")
    )
    box = make_box(tmp_path, s3rver_bucket.endpoint, "", extra=toml)
    box.add(blob_bytes(2000, 3))
    config = tmp_path / "fieldbox.toml"
    config.write_text(toml)
    daemon = DaemonProc(box.layout.root, config, "bridge", env={"AWS_ACCESS_KEY_ID": KEY,
                        "AWS_SECRET_ACCESS_KEY": KEY})  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            status = read_status(box.layout)
            if status and str(status["remote"]).startswith("S3 server lacks"):
                break
            assert daemon.proc.poll() is None, daemon.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, json.dumps(status)[-3000:]
            time.sleep(0.1)
    finally:
        code = daemon.stop()
    assert code == 0
    assert status["remote"] == "S3 server lacks what the bridge needs: " + "; ".join(LACKS)
    assert status["uploader"]["server_check"]["missing"] == LACKS
    assert "lacks what the bridge needs" in (status["outbox"]["last_error"] or "")
    log = daemon.log_path.read_text()
    assert "s3_server_lacks" in log
    # No blob went up (a check cut short by the stop may leave its few bytes under s3-check/).
    assert box.outbox.backlog().items == 1
    assert [k for k in s3rver_bucket.keys("") if "/s3-check/" not in k] == []
