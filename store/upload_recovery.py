"""Upload offsets after a reboot: the fsynced part files are the record, not uploads.db.

A PATCH fsyncs its part file and then commits the new offset without fsyncing the WAL
(`Uploads.commit_offset(durable=False)`): one fsync per PATCH instead of two. The 204 goes
out after both, so every acknowledged byte is in an fsynced part file. What a commit
without fsync survives depends on how the machine stopped:

- A killed or crashed process, the machine still up: the commit reached the OS's page
  cache, so uploads.db holds exactly the last fsynced offset. Nothing to recover; bytes of
  a PATCH that was cut off are cut off the part file (`locked_session`), as before.
- A power loss or an OS crash: the last commits may be gone, so uploads.db may hold less
  than was acknowledged. The part file holds at least every acknowledged byte.

Which case it was is told by the kernel's boot id, kept in `uploads/boot_id` by the first
process that opened the sessions in each boot. When it differs, each in-flight upload
takes its part file's size as the offset (a durable commit), cut at the first hole after
the recorded offset: a filesystem may give a file its size before every block of it was
written, and such a block reads back as a hole. Bytes past the last acknowledged offset
can survive this way too (a PATCH in flight when the power went); they are the bytes that
client sent for those offsets, and a tus server may hold more than it acknowledged. A
PATCH with Upload-Checksum is the exception: its bytes count only once verified, so it
marks its start durably (`Uploads.mark_unverified`) and recovery keeps the recorded offset.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from store.db import replace_file

if TYPE_CHECKING:
    from store.uploads import Uploads

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# Where the kernel has no boot id (macOS): never equal, so every open recovers, which is
# safe (see `_recover_one`), only slower.
_UNKNOWN = "unknown"


def boot_id() -> str:
    """This boot's id from the kernel, or 'unknown' where there is none."""
    try:
        return _BOOT_ID.read_text().strip() or _UNKNOWN
    except OSError:
        return _UNKNOWN


def recover_after_reboot(uploads: Uploads, current: str | None = None) -> int:
    """After a reboot, set each in-flight offset from its part file; return how many moved."""
    current = boot_id() if current is None else current
    marker = uploads.layout.uploads_boot_id
    try:
        if marker.read_text().strip() == current and current != _UNKNOWN:
            return 0
    except OSError:
        pass  # a new data root, or one from before offsets were committed lazily
    rows = (
        uploads.db.read()
        .execute(
            "SELECT id, offset FROM uploads "
            "WHERE offset < length AND asset_id IS NULL AND unverified_from IS NULL"
        )
        .fetchall()
    )
    moved = sum(_recover_one(uploads, str(upload_id), int(offset)) for upload_id, offset in rows)
    if moved:
        structlog.get_logger("fieldbox.uploads").info("upload_offsets_recovered", count=moved)
    # Written last: a crash during recovery recovers again on the next open.
    replace_file(marker, current + "\n", durable=True)
    return moved


def _recover_one(uploads: Uploads, upload_id: str, recorded: int) -> bool:
    try:
        fh = open(uploads.layout.upload_part(upload_id), "r+b", buffering=0)  # noqa: SIM115
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A request of this boot holds it, so its process opened the sessions, and
            # so recovered them, before serving: this one is done.
            return False
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        if size <= recorded:
            return False
        try:
            end = min(size, os.lseek(fd, recorded, os.SEEK_HOLE))
        except OSError:
            end = size  # no SEEK_HOLE here: the size is all there is to go by
        # Same boot (no boot id): the bytes are in the page cache, this makes them durable.
        os.fsync(fd)
        row = (
            uploads.db.read()
            .execute(
                "SELECT offset, length, unverified_from FROM uploads WHERE id = ?", (upload_id,)
            )
            .fetchone()
        )
        if row is None or int(row[0]) != recorded or row[2] is not None or end <= recorded:
            return False
        end = min(end, int(row[1]))
        if end < size:
            fh.truncate(end)
            os.fsync(fd)
        uploads.commit_offset(upload_id, recorded, end)
        return True
