"""`fieldbox serve bridge` killed (SIGKILL) at the three instants a multipart upload can be
torn apart, then started again: the object reaches S3 exactly once with our bytes, no
multipart upload is left behind, and the outbox row is closed once.

The kill lands at a precise point without patching anything: the fault proxy between the
daemon and S3 (moto, then SeaweedFS) forwards a chosen request in full and holds back S3's
answer, so S3 has done the work while the daemon has not heard of it; the test then kills
the real process.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bridge.faultproxy import FaultProxy
from tests.bridge.s3server import Bucket, s3_env, s3_toml
from tests.bridge.uploadbox import MIB, Box, blob_bytes, crc, get, make_box
from tests.system.helpers import DaemonProc

WAIT_S = 90.0  # an upper bound on waiting, never part of an assertion
BLOB = r"^{method} \S+/blobs/[0-9a-f]{{64}}\?"
CREATE = BLOB.format(method="POST") + r"uploads "
PART = BLOB.format(method="PUT") + r"\S*partNumber=(\d+)"
COMPLETE = BLOB.format(method="POST") + r"uploadId="
# One body in flight at a time, so "mid-parts" is parts 1 and 2 in S3 and part 3 not. Read
# timeout far above any wait here: the daemon must still be waiting on the held
# answer when it is killed, not have given up and moved on.
TOML = (
    "connect_timeout_s = 1.0\nread_timeout_s = 60.0\n"
    "[bridge.upload]\n"
    f"multipart_threshold_bytes = {5 * MIB}\npart_size_bytes = {5 * MIB}\n"
    "concurrency = 1\nretry_base_s = 0.2\nretry_max_s = 1.0\npoll_s = 0.2\n"
    "[bridge.litestream]\nenabled = false\n"  # a killed daemon must leave no child behind
)


def _until(what: str, check: Callable[[], Any], daemon: DaemonProc) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := check()):
        assert daemon.proc.poll() is None, f"bridge exited: {daemon.log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never: {what}\n{daemon.log_path.read_text()[-3000:]}"
        time.sleep(0.05)
    return value


def _rows(box: Box) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{box.layout.outbox_db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT state, multipart_upload_id, note FROM outbox").fetchall()
    finally:
        conn.close()


def _parts(bucket: Bucket, upload: dict[str, Any]) -> set[int]:
    listed = bucket.client.list_parts(
        Bucket=bucket.name, Key=upload["Key"], UploadId=upload["UploadId"]
    )
    return {int(p["PartNumber"]) for p in listed.get("Parts", [])}


@pytest.mark.parametrize(
    ("point", "pattern", "nth"),
    [
        ("created, id not stored", CREATE, 1),
        ("mid-parts", PART, 2),
        ("completed, row not closed", COMPLETE, 1),
    ],
)
def test_sigkill_of_the_daemon_then_restart_stores_the_object_once(
    tmp_path: Path, s3_bucket: Bucket, s3_proxy: FaultProxy, point: str, pattern: str, nth: int
) -> None:
    bucket, proxy = s3_bucket, s3_proxy
    # Versioning makes "exactly once" visible: any second write of the key is a version.
    bucket.client.put_bucket_versioning(
        Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    toml = s3_toml(proxy.url, bucket.name) + TOML
    box = make_box(tmp_path, proxy.url, "", extra=toml)
    config = tmp_path / "fieldbox.toml"
    config.write_text(toml)
    data = blob_bytes(12 * MIB + 7, 13)  # three parts
    asset = box.add(data, "walk.mp4")
    key = box.key(asset.sha256)
    env = s3_env()

    proxy.hold(pattern, nth)
    first = DaemonProc(box.layout.root, config, "bridge", env=env)
    try:
        _until(f"S3's answer to {pattern} #{nth} held", proxy.held.is_set, first)
    finally:
        first.kill()
        first.stop()

    # The kill came where it was meant to: S3 did the work, the box had not recorded it.
    uploads = bucket.multipart_uploads()
    [(state, stored_id, _)] = _rows(box)
    assert state == "pending"
    if point == "created, id not stored":
        assert stored_id is None and [u["Key"] for u in uploads] == [key]
    elif point == "mid-parts":
        assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, stored_id)]
        held = re.search(pattern, proxy.held_request or "")
        assert held is not None
        assert held[1] == "2" and _parts(bucket, uploads[0]) == {1, 2}  # one at a time
    else:
        assert stored_id is not None and uploads == []
        assert bucket.keys(box.key("")) == [key]

    proxy.passthrough()
    before_restart = len(proxy.requests)
    second = DaemonProc(box.layout.root, config, "bridge", env=env)
    try:
        _until("the outbox row closed", lambda: _rows(box)[0][0] == "done", second)
        _until("no multipart upload left", lambda: bucket.multipart_uploads() == [], second)
    finally:
        code = second.stop()
    assert code == 0, second.log_path.read_text()[-3000:]

    assert bucket.keys(box.key("")) == [key]
    versions = bucket.client.list_object_versions(Bucket=bucket.name, Prefix=key)
    assert len(versions.get("Versions", [])) == 1, versions
    body, head = get(bucket, key)
    assert hashlib.sha256(body).hexdigest() == asset.sha256 and body == data
    assert head["ChecksumCRC64NVME"] == crc(data)
    assert head["Metadata"]["asset-id"] == asset.id
    assert _rows(box) == [("done", None, None)]
    after = proxy.requests[before_restart:]
    created_again = any(re.search(CREATE, line) for line in after)
    if point == "mid-parts":
        # The restart carried on with the upload its row named (moto's and SeaweedFS's
        # ListParts report no part checksums, so against them every part is sent again;
        # S3's are kept).
        assert not created_again, after
        sent = [line for line in after if re.search(PART, line) or re.search(COMPLETE, line)]
        assert sent and all(f"uploadId={stored_id}" in line for line in sent), after
    elif point == "completed, row not closed":
        # S3 had the object: the restart saw it and only closed the row.
        assert not created_again and not any(re.search(PART, line) for line in after), after
