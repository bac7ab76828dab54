"""The drop folder, run for real (`DropFolder.run` in an event loop, watchfiles on a temp
folder) against real stores: stable files become one asset each and move to `ingested/`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import bridge.dropfolder
import store.ingest
from bridge.dropfolder import DropFolder, skipped
from store import blobs
from store.locations import Location, Locations
from store.outbox import Outbox
from store.paths import Layout
from tests.conftest import make_config

STABLE_S = 1.0


@dataclass
class Box:
    """A data root with location `site1` and a drop folder pointing at it."""

    drop: Path
    layout: Layout
    locs: Locations
    outbox: Outbox
    folder: Callable[[], DropFolder]

    def assets(self) -> list[dict[str, Any]]:
        """Every asset of site1 as a dict."""
        rows = (
            self.locs.db("site1")
            .read()
            .execute("SELECT id, filename, mime_type, size, sha256, kind, metadata FROM assets")
        )
        names = ("id", "filename", "mime_type", "size", "sha256", "kind", "metadata")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def blob(self, sha: str) -> bytes:
        """The stored bytes of a digest."""
        return blobs.blob_path(self.layout, self.locs.get("site1"), sha).read_bytes()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    """A fresh box; its drop folder is `tmp_path/drop`."""
    drop = tmp_path / "drop"
    toml = (
        "[bridge.drop_folder]\n"
        f'path = "{drop}"\nlocation = "site1"\nkind = "capture"\nstable_s = {STABLE_S}\n'
    )
    cfg = make_config(tmp_path / "data", toml)
    layout = Layout(cfg.data_dir)
    layout.ensure()
    locs = Locations(layout, cfg.store)
    locs.create(Location(id="site1", account="acme", geo_prefix="eu", name="Site 1"))
    outbox = Outbox(str(layout.outbox_db), cfg.store)

    def folder() -> DropFolder:
        return DropFolder(cfg.bridge, layout, locs, outbox, rescan_s=0.5)

    drop.mkdir()
    yield Box(drop, layout, locs, outbox, folder)
    outbox.close()
    locs.close()


async def _running(
    folder: DropFolder, body: Callable[[], Awaitable[None]], stop_within: float = 5.0
) -> None:
    """Run the drop folder while `body` runs; then stop it and wait (loosely) for it to end."""
    stop = asyncio.Event()
    task = asyncio.create_task(folder.run(stop))
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=stop_within)


async def _until(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _a_scan_from_now(folder: DropFolder) -> None:
    """Wait until a scan that began after this call has finished."""
    begun = folder.scans_begun
    await _until("a scan", lambda: folder.scans > begun)


def test_a_file_growing_in_steps_becomes_one_asset_after_it_stops(box: Box) -> None:
    """Written in six steps with pauses well under stable_s: nothing is ingested while it
    grows; then exactly one asset with the full content, and the file is in `ingested/`."""
    parts = [os.urandom(50_000) for _ in range(6)]
    target = box.drop / "clip.mp4"
    folder = box.folder()

    async def body() -> None:
        with open(target, "wb") as fh:
            for part in parts:
                fh.write(part)
                fh.flush()
                await _a_scan_from_now(folder)  # it looked at the file as it is, and left it
                assert box.assets() == [], "ingested while still growing"
                assert folder.status()["watching"] and folder.status()["waiting"] == 1
        await _until("the move to ingested/", lambda: (box.drop / "ingested/clip.mp4").exists())

    asyncio.run(_running(folder, body))

    full = b"".join(parts)
    [asset] = box.assets()
    assert asset["sha256"] == hashlib.sha256(full).hexdigest() and asset["size"] == len(full)
    assert box.blob(asset["sha256"]) == full
    assert (asset["filename"], asset["mime_type"], asset["kind"]) == (
        "clip.mp4",
        "video/mp4",
        "capture",
    )
    assert json.loads(asset["metadata"])["drop_path"] == "clip.mp4"
    assert not target.exists()
    assert [i.asset_id for i in box.outbox.pending()] == [asset["id"]]
    assert folder.status()["ingested"] == 1


def test_files_present_at_start_are_ingested_and_temp_names_are_skipped(box: Box) -> None:
    """A file there before start-up (and one in a sub-folder) is ingested; a name already in
    `ingested/` gets ` (1)`; hidden, partial, temp and `~` names stay where they are."""
    (box.drop / "photo.jpg").write_bytes(b"first photo")
    (box.drop / "card" / "DCIM").mkdir(parents=True)
    (box.drop / "card" / "DCIM" / "img1.jpg").write_bytes(b"nested photo")
    (box.drop / "ingested").mkdir()
    (box.drop / "ingested" / "photo.jpg").write_bytes(b"an earlier photo")
    temps = [".hidden.jpg", "copying.part", "upload.TMP", "~lock.docx", "Thumbs.db"]
    for name in temps:
        (box.drop / name).write_bytes(b"skip me")
    assert all(skipped(n) for n in temps) and not skipped("photo.jpg")

    folder = box.folder()

    async def body() -> None:
        await _until("two assets", lambda: len(box.assets()) == 2)
        # The temp names were there, as old as the two files, in the scan that took those;
        # one scan more, and they were passed over by name each time.
        await _a_scan_from_now(folder)
        assert folder.status()["skipped"] == len(temps)

    asyncio.run(_running(folder, body))

    assert sorted(a["filename"] for a in box.assets()) == ["img1.jpg", "photo.jpg"]
    assert (box.drop / "ingested" / "photo (1).jpg").read_bytes() == b"first photo"
    assert (box.drop / "ingested" / "photo.jpg").read_bytes() == b"an earlier photo"
    assert (box.drop / "ingested" / "card" / "DCIM" / "img1.jpg").exists()
    assert all((box.drop / name).exists() for name in temps)


class Crash(BaseException):
    """The process dies here (not an error the drop folder would handle)."""


def test_a_crash_between_the_asset_and_the_move_makes_no_duplicate(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after add_file and before the move: the restart finds the asset by its
    drop key and only moves the file."""
    (box.drop / "scan.pdf").write_bytes(b"%PDF-1.7 a scan")
    real_free_path = bridge.dropfolder.free_path

    def crash_on_move(path: Path) -> Path:
        if "ingested" in path.parts:
            raise Crash
        return real_free_path(path)

    async def until_crash() -> None:
        await asyncio.wait_for(box.folder().run(asyncio.Event()), timeout=15)

    monkeypatch.setattr(bridge.dropfolder, "free_path", crash_on_move)
    with pytest.raises(Crash):
        asyncio.run(until_crash())
    assert len(box.assets()) == 1 and (box.drop / "scan.pdf").exists()

    monkeypatch.setattr(bridge.dropfolder, "free_path", real_free_path)

    async def body() -> None:
        await _until("the move", lambda: (box.drop / "ingested" / "scan.pdf").exists())

    asyncio.run(_running(box.folder(), body))
    assert len(box.assets()) == 1


def test_a_file_that_cannot_be_stored_goes_to_failed_with_the_reason(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error storing one file moves it to `failed/` with `.error.txt`; the next file is fine."""

    def add_file(*args: Any, **kw: Any) -> Any:
        if kw["filename"] == "bad.jpg":
            raise ValueError("the store said no")
        return store.ingest.add_file(*args, **kw)

    monkeypatch.setattr("bridge.dropfolder.add_file", add_file)
    (box.drop / "bad.jpg").write_bytes(b"bad")
    (box.drop / "good.jpg").write_bytes(b"good")
    folder = box.folder()

    async def body() -> None:
        await _until("bad.jpg in failed/", lambda: (box.drop / "failed" / "bad.jpg").exists())
        await _until("good.jpg ingested", lambda: (box.drop / "ingested" / "good.jpg").exists())

    asyncio.run(_running(folder, body))

    note = (box.drop / "failed" / "bad.jpg.error.txt").read_text()
    assert "the store said no" in note
    assert [a["filename"] for a in box.assets()] == ["good.jpg"]
    assert folder.status()["failed"] == 1 and "the store said no" in folder.status()["last_error"]
