"""Offsets after a reboot: each in-flight upload's offset comes from its fsynced part file.

The lost-commit state is built on disk as a power loss leaves it (uploads.db behind the part
file, a boot id of another boot in `uploads/boot_id`); recovery then runs for real.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.config import StoreConfig
from store.paths import Layout
from store.upload_recovery import boot_id, recover_after_reboot
from store.uploads import Upload, Uploads

BLOCK = 64 * 1024  # a multiple of every filesystem block size, so holes line up with it


@pytest.fixture
def uploads(tmp_path: Path) -> Iterator[Uploads]:
    """The upload sessions of a fresh data root (its first open wrote this boot's id)."""
    layout = Layout(tmp_path / "data")
    layout.ensure()
    ups = Uploads(layout, StoreConfig())
    try:
        yield ups
    finally:
        ups.close()


def _start(uploads: Uploads, length: int) -> Upload:
    return uploads.create(
        length=length,
        location="loc1",
        filename="clip.bin",
        project=None,
        kind="document",
        mime_type="application/octet-stream",
        declared_sha256=None,
        metadata={},
        ttl_s=3600,
    )


def _acked_then_lost(uploads: Uploads, up: Upload, recorded: int, on_disk: bytes) -> None:
    """Part file fsynced with `on_disk`; uploads.db still says `recorded` (commits lost)."""
    part = uploads.layout.upload_part(up.id)
    with open(part, "r+b") as fh:
        fh.write(on_disk)
        os.fsync(fh.fileno())
    if recorded:
        uploads.commit_offset(up.id, 0, recorded)


def test_first_open_records_this_boot(uploads: Uploads) -> None:
    """The marker holds the kernel's boot id; a second open in the same boot changes nothing."""
    marker = uploads.layout.uploads_dir / "boot_id"
    assert marker.read_text().strip() == boot_id()
    if boot_id() == "unknown":
        pytest.skip("no boot id on this kernel: every open recovers")
    up = _start(uploads, 4 * BLOCK)
    _acked_then_lost(uploads, up, BLOCK, os.urandom(3 * BLOCK))
    assert recover_after_reboot(uploads) == 0
    assert uploads.get(up.id).offset == BLOCK
    # Same boot: the row is exact, so the tail is a cut-off PATCH's and is cut off.
    with uploads.locked_part(uploads.get(up.id)) as fh:
        assert os.fstat(fh.fileno()).st_size == BLOCK


def test_other_boot_takes_the_part_files_size(uploads: Uploads) -> None:
    """After a reboot the offset is the fsynced file's size, durably, and the marker moves."""
    up = _start(uploads, 4 * BLOCK)
    data = os.urandom(3 * BLOCK)
    _acked_then_lost(uploads, up, BLOCK, data)
    assert recover_after_reboot(uploads, current="boot-b") == 1
    assert uploads.get(up.id).offset == 3 * BLOCK
    assert uploads.layout.upload_part(up.id).read_bytes() == data
    assert (uploads.layout.uploads_dir / "boot_id").read_text().strip() == "boot-b"
    assert recover_after_reboot(uploads, current="boot-b") == 0  # once per boot


def test_other_boot_cuts_at_the_first_hole(uploads: Uploads) -> None:
    """A size that ran ahead of the written blocks (a hole) is cut back to the data before it."""
    up = _start(uploads, 8 * BLOCK)
    data = os.urandom(2 * BLOCK)
    _acked_then_lost(uploads, up, 0, data)
    part = uploads.layout.upload_part(up.id)
    os.truncate(part, 6 * BLOCK)  # the size says 6 blocks, only 2 were written
    with open(part, "rb") as fh:
        if os.lseek(fh.fileno(), 2 * BLOCK, os.SEEK_HOLE) != 2 * BLOCK:
            pytest.skip("this filesystem reports no holes")
    assert recover_after_reboot(uploads, current="boot-b") == 1
    assert uploads.get(up.id).offset == 2 * BLOCK
    assert part.read_bytes() == data


def test_unverified_checksum_patch_is_not_counted(uploads: Uploads) -> None:
    """Bytes of a PATCH whose Upload-Checksum was never checked stay out after a reboot."""
    up = _start(uploads, 4 * BLOCK)
    _acked_then_lost(uploads, up, BLOCK, os.urandom(3 * BLOCK))
    uploads.mark_unverified(up.id, BLOCK)
    assert recover_after_reboot(uploads, current="boot-b") == 0
    assert uploads.get(up.id).offset == BLOCK
    # The next offset commit (a verified PATCH) clears the mark.
    uploads.commit_offset(up.id, BLOCK, 2 * BLOCK)
    count = uploads.db.read().execute(
        "SELECT count(*) FROM uploads WHERE unverified_from IS NOT NULL"
    )
    assert count.fetchone()[0] == 0


def test_locked_upload_is_left_to_its_holder(uploads: Uploads) -> None:
    """A part file some request holds is skipped (its process recovered before serving)."""
    up = _start(uploads, 4 * BLOCK)
    _acked_then_lost(uploads, up, 0, os.urandom(BLOCK))
    with open(uploads.layout.upload_part(up.id), "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert recover_after_reboot(uploads, current="boot-b") == 0
    assert uploads.get(up.id).offset == 0


def test_finished_and_empty_sessions_are_untouched(uploads: Uploads) -> None:
    """Complete uploads (finalize's business) and ones with nothing past the row stay put."""
    done = _start(uploads, BLOCK)
    _acked_then_lost(uploads, done, BLOCK, os.urandom(BLOCK))
    idle = _start(uploads, BLOCK)
    assert recover_after_reboot(uploads, current="boot-b") == 0
    assert uploads.get(done.id).offset == BLOCK
    assert uploads.get(idle.id).offset == 0


def test_the_lazy_commit_is_seen_at_once_and_survives_a_reopen(uploads: Uploads) -> None:
    """A commit without the WAL's fsync is read back by a second connection at once."""
    up = _start(uploads, 4 * BLOCK)
    _acked_then_lost(uploads, up, 0, os.urandom(BLOCK))
    uploads.commit_offset(up.id, 0, BLOCK, durable=False)
    other = Uploads(uploads.layout, StoreConfig())
    try:
        assert other.get(up.id).offset == BLOCK
    finally:
        other.close()
