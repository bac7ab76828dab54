"""Upload sessions and their finalisation into blobs and assets."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from store import assets, blobs, ingest
from store.config import StoreConfig
from store.errors import ChecksumMismatch, Conflict, InvalidName, NotFound
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from store.uploads import Upload, Uploads


@dataclass
class Box:
    """The stores of one data root."""

    layout: Layout
    locs: Locations
    uploads: Uploads
    outbox: Outbox


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    """A data root with one location, `loc1`."""
    layout = Layout(tmp_path / "data")
    layout.ensure()
    cfg = StoreConfig()
    locs = Locations(layout, cfg)
    locs.create(Location(id="loc1", account="acme", geo_prefix="u4pr", name="site"))
    ups = Uploads(layout, cfg)
    outbox = Outbox(str(layout.outbox_db), cfg)
    try:
        yield Box(layout, locs, ups, outbox)
    finally:
        outbox.close()
        ups.close()
        locs.close()


def _start(box: Box, length: int, *, sha256: str | None = None, ttl_s: float = 3600) -> Upload:
    return box.uploads.create(
        length=length,
        location="loc1",
        filename="clip.mp4",
        project="p1",
        kind="video",
        mime_type="video/mp4",
        declared_sha256=sha256,
        metadata={"filename": "clip.mp4", "location": "loc1"},
        ttl_s=ttl_s,
    )


def _write(box: Box, up: Upload, data: bytes) -> Upload:
    with box.uploads.locked_part(up) as fh:
        start = fh.tell()
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    box.uploads.commit_offset(up.id, start, start + len(data))
    return box.uploads.get(up.id)


def test_create_makes_empty_part_and_session(box: Box) -> None:
    """A new session has offset 0, an empty part file, and reads back as created."""
    up = _start(box, 10)
    part = box.layout.upload_part(up.id)
    assert part.is_file() and part.stat().st_size == 0
    got = box.uploads.get(up.id)
    assert got == up
    assert got.offset == 0 and not got.complete
    assert got.expires_at == pytest.approx(got.created_at + 3600)


def test_sessions_survive_reopening(box: Box) -> None:
    """Offsets are durable: a second Uploads on the same root sees the acknowledged offset."""
    up = _write(box, _start(box, 10), b"hello")
    other = Uploads(box.layout, StoreConfig())
    try:
        assert other.get(up.id).offset == 5
    finally:
        other.close()


def test_append_moves_offset_and_completes(box: Box) -> None:
    """Two appends reach the declared length and the part file holds the bytes in order."""
    up = _start(box, 10)
    up = _write(box, up, b"hello")
    assert up.offset == 5 and not up.complete
    up = _write(box, up, b"world")
    assert up.complete
    assert box.layout.upload_part(up.id).read_bytes() == b"helloworld"
    assert [u.id for u in box.uploads.pending_finalize()] == [up.id]


def test_unacknowledged_bytes_are_cut_off(box: Box) -> None:
    """Bytes written past the committed offset (a crash mid-write) are dropped on next open."""
    up = _write(box, _start(box, 10), b"abc")
    with open(box.layout.upload_part(up.id), "ab") as fh:
        fh.write(b"garbage")
    with box.uploads.locked_part(up) as fh:
        assert fh.tell() == 3
        fh.write(b"def")
    box.uploads.commit_offset(up.id, 3, 6)
    assert box.layout.upload_part(up.id).read_bytes() == b"abcdef"


def test_part_is_locked_against_a_second_writer(box: Box) -> None:
    """While one request holds the part file, a second gets Conflict instead of interleaving."""
    up = _start(box, 10)
    with box.uploads.locked_part(up), pytest.raises(Conflict):  # noqa: SIM117
        with box.uploads.locked_part(up):
            pass
    with box.uploads.locked_part(up):  # released again afterwards
        pass


def test_commit_offset_from_a_stale_offset_conflicts(box: Box) -> None:
    """Committing from an offset the session already moved past fails and changes nothing."""
    up = _write(box, _start(box, 10), b"abc")
    with pytest.raises(Conflict):
        box.uploads.commit_offset(up.id, 0, 5)
    assert box.uploads.get(up.id).offset == 3


def test_delete_forgets_session_and_part(box: Box) -> None:
    """Deleting a session removes its row and its part file."""
    up = _write(box, _start(box, 10), b"abc")
    box.uploads.delete(up.id)
    assert not box.layout.upload_part(up.id).exists()
    with pytest.raises(NotFound):
        box.uploads.get(up.id)


@pytest.mark.parametrize("bad", ["..", "a/b", "../../etc/passwd", "", "-x"])
def test_unsafe_upload_ids_are_refused(box: Box, bad: str) -> None:
    """Upload ids from clients never become paths unchecked."""
    with pytest.raises(InvalidName):
        box.uploads.get(bad)


def test_expire_removes_old_sessions_but_keeps_complete_unfinalized(box: Box) -> None:
    """Expiry deletes stale unfinished sessions and orphan parts, not finished-but-unfiled ones."""
    stale = _write(box, _start(box, 10, ttl_s=1), b"abc")
    done = _write(box, _start(box, 3, ttl_s=1), b"xyz")
    fresh = _start(box, 10, ttl_s=3600)
    orphan = box.layout.uploads_dir / ("f" * 32 + ".part")
    orphan.write_bytes(b"lost")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    young_orphan = box.layout.uploads_dir / ("e" * 32 + ".part")
    young_orphan.write_bytes(b"new")

    removed = box.uploads.expire(now=time.time() + 10)

    assert removed == 1
    with pytest.raises(NotFound):
        box.uploads.get(stale.id)
    assert not box.layout.upload_part(stale.id).exists()
    assert box.uploads.get(done.id).complete
    assert box.uploads.get(fresh.id).offset == 0
    assert not orphan.exists()
    assert young_orphan.exists()


def test_finalize_stores_blob_and_asset_once(box: Box) -> None:
    """A complete upload becomes one blob and one asset; repeating finalize changes nothing."""
    data = b"helloworld"
    up = _write(box, _start(box, len(data)), data)
    asset = ingest.finalize(box.layout, box.locs, box.uploads, box.outbox, up)
    sha = hashlib.sha256(data).hexdigest()
    assert asset.sha256 == sha
    assert asset.size == len(data)
    assert (asset.project, asset.kind, asset.filename) == ("p1", "video", "clip.mp4")
    assert assets.location_of(asset.id) == "loc1"
    loc = box.locs.get("loc1")
    assert blobs.blob_path(box.layout, loc, sha).read_bytes() == data
    assert not box.layout.upload_part(up.id).exists()
    assert box.uploads.get(up.id).asset_id == asset.id
    again = ingest.finalize(box.layout, box.locs, box.uploads, box.outbox, box.uploads.get(up.id))
    assert again.id == asset.id
    assert box.uploads.pending_finalize() == []
    # The bridge owes S3 this blob: one outbox row, named for the asset.
    [owed] = box.outbox.pending()
    assert (owed.asset_id, owed.sha256, owed.size) == (asset.id, sha, len(data))
    assert (owed.account, owed.geo_prefix, owed.location) == ("acme", "u4pr", "loc1")


def test_finalize_refuses_a_declared_digest_mismatch(box: Box) -> None:
    """A whole-file sha256 unlike the declared one stores nothing and discards the upload."""
    up = _write(box, _start(box, 3, sha256="0" * 64), b"abc")
    with pytest.raises(ChecksumMismatch):
        ingest.finalize(box.layout, box.locs, box.uploads, box.outbox, up)
    with pytest.raises(NotFound):
        box.uploads.get(up.id)
    loc = box.locs.get("loc1")
    assert not blobs.blob_path(box.layout, loc, hashlib.sha256(b"abc").hexdigest()).exists()
    assert assets.by_upload(box.locs.db("loc1"), "loc1", up.id) is None


def test_finalize_accepts_a_matching_declared_digest(box: Box) -> None:
    """A declared sha256 that matches the bytes is accepted."""
    sha = hashlib.sha256(b"abc").hexdigest()
    up = _write(box, _start(box, 3, sha256=sha), b"abc")
    assert ingest.finalize(box.layout, box.locs, box.uploads, box.outbox, up).sha256 == sha


def test_resume_all_finishes_interrupted_uploads(box: Box) -> None:
    """Uploads that got every byte but no asset (a crash in between) are finished on startup."""
    up = _write(box, _start(box, 4), b"data")
    assert ingest.resume_all(box.layout, box.locs, box.uploads, box.outbox) == 1
    asset_id = box.uploads.get(up.id).asset_id
    assert asset_id is not None
    asset = assets.get(box.locs.db("loc1"), "loc1", asset_id)
    assert asset.size == 4
    assert ingest.resume_all(box.layout, box.locs, box.uploads, box.outbox) == 0


def test_same_bytes_share_one_blob(box: Box) -> None:
    """Two uploads of the same bytes become two assets that point at one immutable blob."""
    first = ingest.finalize(
        box.layout, box.locs, box.uploads, box.outbox, _write(box, _start(box, 3), b"abc")
    )
    second = ingest.finalize(
        box.layout, box.locs, box.uploads, box.outbox, _write(box, _start(box, 3), b"abc")
    )
    assert first.id != second.id
    assert first.sha256 == second.sha256
    loc = box.locs.get("loc1")
    path = blobs.blob_path(box.layout, loc, first.sha256)
    assert path.read_bytes() == b"abc"
    assert list(path.parent.iterdir()) == [path]


def test_a_crash_after_the_asset_reruns_the_hook_on_resume(box: Box) -> None:
    """The on-created hook (capture jobs) runs before the upload is marked done: a crash in
    the hook leaves the upload to resume, which runs the hook again for the same asset."""
    up = _write(box, _start(box, 4), b"data")

    def crash(asset: assets.Asset) -> None:
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        ingest.finalize(box.layout, box.locs, box.uploads, box.outbox, up, on_created=crash)
    seen: list[assets.Asset] = []
    assert ingest.resume_all(box.layout, box.locs, box.uploads, box.outbox, seen.append) == 1
    [asset_id] = [a.id for a in seen]
    assert box.uploads.get(up.id).asset_id == asset_id
    assert len(box.outbox.pending()) == 1  # one asset, one row: the resume made no second


def test_expire_skips_a_session_whose_lock_is_held(box: Box) -> None:
    """The sweeper takes the upload's lock: a request holding it keeps its session and bytes."""
    up = _write(box, _start(box, 10, ttl_s=1), b"abc")
    later = time.time() + 10
    with box.uploads.locked_part(up) as fh:
        assert box.uploads.expire(now=later) == 0
        fh.write(b"def")  # the request still owns a live part file
    assert box.uploads.get(up.id).offset == 3
    assert box.layout.upload_part(up.id).read_bytes() == b"abcdef"
    assert box.uploads.expire(now=later) == 1  # released: now it goes
    with pytest.raises(NotFound):
        box.uploads.get(up.id)
    assert not box.layout.upload_part(up.id).exists()


def test_expiry_moves_with_each_committed_byte(box: Box) -> None:
    """commit_offset sets the expiry to its time plus the ttl fixed at creation."""
    up = _start(box, 10, ttl_s=60)
    with box.uploads.locked_part(up) as fh:
        fh.write(b"abc")
        os.fsync(fh.fileno())
    box.uploads.commit_offset(up.id, 0, 3, now=up.created_at + 50)
    moved = box.uploads.get(up.id)
    assert moved.expires_at == pytest.approx(up.created_at + 110)
    assert box.uploads.expire(now=up.created_at + 100) == 0
    assert box.uploads.get(up.id).offset == 3
    assert box.uploads.expire(now=up.created_at + 111) == 1
