"""Drop-folder ingest: files copied into `[bridge.drop_folder] path` become assets.

A file is taken once it is *stable*: its size, mtime and inode have not changed for `stable_s`,
measured from when the bridge first saw them, so a copy that pauses for less than `stable_s`
is never taken half-written. Events from watchfiles wake the scan at once; a rescan every few
seconds finds files that were there at start-up and those whose events were missed (network
file systems send none). Sub-folders are walked; names starting with `.` or `~`, ending in
`.part`, `.tmp`, `.partial` or `.crdownload`, `Thumbs.db`, `desktop.ini`, hidden folders and
anything not a regular file (symlinks included) are skipped.

A stable file becomes an asset of `location` (kind `kind`, mime type guessed from the name)
through `store.ingest.add_file`, then moves to `ingested/` under the same relative path
(` (1)`, ` (2)`, ... when the name is taken). A file that cannot be read or stored goes to
`failed/` with `<name>.error.txt` beside it; moving it back retries it. A missing location or a
full disk is the box's problem, not the file's: the file stays and is retried.

No duplicate after a crash (the rule): the asset made from a dropped file carries
`metadata.drop_key`, the sha256 of (relative path, size, mtime_ns, content sha256). Before
`add_file` the location is searched for an asset with that content sha256 and that drop key;
if one exists, a crash came between `add_file` and the move (or the identical file was dropped
again with the same name and mtime), and the file is only moved. The asset row itself is the
journal, so there is no second record that a crash could leave out of step with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from watchfiles import Change, awatch

from bridge.config import BridgeConfig
from store.errors import DiskFull, NotFound
from store.ingest import add_file
from store.locations import Location, Locations
from store.mediatype import check_filename
from store.outbox import Outbox
from store.paths import Layout

INGESTED = "ingested"
FAILED = "failed"
_SKIP_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")
_SKIP_NAMES = {"thumbs.db", "desktop.ini"}
_HASH_CHUNK = 1024 * 1024

Signature = tuple[int, int, int]
"""(size, mtime_ns, inode): a file that keeps all three is not being written."""


def skipped(name: str) -> bool:
    """True for hidden, temporary and system names that are never ingested."""
    lower = name.lower()
    return name.startswith((".", "~")) or lower.endswith(_SKIP_SUFFIXES) or lower in _SKIP_NAMES


def free_path(path: Path) -> Path:
    """`path`, or `name (n).ext` beside it when the name is taken."""
    n = 1
    candidate = path
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        n += 1
    return candidate


@dataclass
class _Seen:
    sig: Signature
    since: float


class _Hold(Exception):
    """The box cannot take files now (no location, disk full); keep them and retry."""


class DropFolder:
    """Watches the drop folder and turns stable files into assets."""

    def __init__(
        self,
        cfg: BridgeConfig,
        layout: Layout,
        locs: Locations,
        outbox: Outbox,
        *,
        rescan_s: float = 10.0,
    ) -> None:
        self.cfg = cfg.drop_folder
        self.layout = layout
        self.locs = locs
        self.outbox = outbox
        self.root = Path(self.cfg.path).expanduser().absolute()
        self.rescan_s = rescan_s
        self.log = structlog.get_logger("fieldbox.bridge")
        self._seen: dict[str, _Seen] = {}
        self._hold_until = 0.0
        self._watching = False
        self.ingested = 0
        self.failed = 0
        # Scans begun and finished, and names the last one passed over (temp, hidden,
        # partial): what shows the folder was looked at when nothing was taken.
        self.scans_begun = 0
        self.scans = 0
        self.skipped_names = 0
        self.last_ingested: str | None = None
        self.last_error: str | None = None

    # --- finding files ------------------------------------------------------------------

    def _candidates(self) -> dict[str, Signature]:
        out: dict[str, Signature] = {}
        passed_over = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            top = Path(dirpath) == self.root
            dirnames[:] = [
                d
                for d in dirnames
                if not d.startswith(".") and not (top and d in (INGESTED, FAILED))
            ]
            for name in filenames:
                if skipped(name):
                    passed_over += 1
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    rel = path.relative_to(self.root).as_posix()
                    out[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
        self.skipped_names = passed_over
        return out

    def _watch_filter(self, change: Change, path: str) -> bool:
        rel = Path(path).relative_to(self.root).parts if path.startswith(str(self.root)) else ()
        return not rel or rel[0] not in (INGESTED, FAILED)

    async def _watch(self, halt: asyncio.Event, wake: asyncio.Event) -> None:
        try:
            self._watching = True
            async for _ in awatch(
                self.root, stop_event=halt, watch_filter=self._watch_filter, debounce=200
            ):
                wake.set()
        except Exception as exc:  # inotify limits, odd mounts: the rescan still finds files
            self.log.warning("drop_folder_watch_failed", path=str(self.root), error=str(exc))
        finally:
            self._watching = False

    # --- one file -----------------------------------------------------------------------

    def _digest(self, path: Path) -> tuple[str, Signature]:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
            st = os.fstat(fh.fileno())
        return h.hexdigest(), (st.st_size, st.st_mtime_ns, st.st_ino)

    def _already(self, loc: Location, sha: str, drop_key: str) -> str | None:
        # Assets have an index on sha256; the drop key is in their metadata.
        rows = (
            self.locs.db(loc.id)
            .read()
            .execute("SELECT id, metadata FROM assets WHERE sha256 = ?", (sha,))
            .fetchall()
        )
        for asset_id, metadata in rows:
            if json.loads(metadata or "{}").get("drop_key") == drop_key:
                return str(asset_id)
        return None

    def _ingest(self, rel: str, sig: Signature) -> bool:
        """Make the file an asset and move it; False if it changed meanwhile (try again later)."""
        path = self.root / rel
        try:
            loc = self.locs.get(self.cfg.location)
        except NotFound as exc:
            raise _Hold(f"location {self.cfg.location!r} does not exist") from exc
        # A name from disk reaches Content-Disposition and S3 metadata: one with a control
        # character fails (to `failed/`, with the reason) rather than become an asset.
        check_filename(path.name)
        sha, now_sig = self._digest(path)
        if now_sig != sig:
            return False
        size, mtime_ns, _ = sig
        drop_key = hashlib.sha256(f"{rel}\0{size}\0{mtime_ns}\0{sha}".encode()).hexdigest()
        asset_id = self._already(loc, sha, drop_key)
        if asset_id is None:
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            try:
                asset = add_file(
                    self.layout,
                    self.locs,
                    self.outbox,
                    loc.id,
                    path,
                    kind=self.cfg.kind,
                    filename=path.name,
                    mime_type=mime,
                    metadata={"source": "drop-folder", "drop_path": rel, "drop_key": drop_key},
                )
            except DiskFull as exc:
                raise _Hold(str(exc)) from exc
            asset_id = asset.id
            if asset.sha256 != sha:
                # Written to after `stable_s` of quiet: this asset holds a copy taken mid-write,
                # and the file is left to become another asset once it is quiet again.
                self.log.warning("drop_file_changed_during_ingest", file=rel, asset=asset_id)
                return False
        dest = free_path(self.root / INGESTED / rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, dest)
        self.ingested += 1
        self.last_ingested = rel
        self.log.info("drop_file_ingested", file=rel, asset=asset_id, moved_to=str(dest))
        return True

    def _fail(self, rel: str, error: str) -> None:
        dest = free_path(self.root / FAILED / rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.root / rel, dest)
            note = dest.with_name(dest.name + ".error.txt")
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
            note.write_text(f"{stamp}\n{rel} could not be ingested:\n{error}\n")
        self.failed += 1
        self.log.error("drop_file_failed", file=rel, error=error, moved_to=str(dest))

    # --- the loop -----------------------------------------------------------------------

    async def scan_once(self, stop: asyncio.Event | None = None) -> int:
        """Look at every file once, ingest those stable for `stable_s`; return how many."""
        self.scans_begun += 1
        done = await self._scan(stop)
        self.scans += 1
        return done

    async def _scan(self, stop: asyncio.Event | None) -> int:
        found = await asyncio.to_thread(self._candidates)
        now = time.monotonic()
        for rel in list(self._seen):
            if rel not in found:
                del self._seen[rel]
        for rel, sig in found.items():
            seen = self._seen.get(rel)
            if seen is None or seen.sig != sig:
                self._seen[rel] = _Seen(sig, now)
        if now < self._hold_until:
            return 0
        done = 0
        for rel, seen in list(self._seen.items()):
            if stop is not None and stop.is_set():
                break
            if now - seen.since < self.cfg.stable_s:
                continue
            try:
                ok = await asyncio.to_thread(self._ingest, rel, seen.sig)
            except _Hold as exc:
                if str(exc) != self.last_error:
                    self.log.warning("drop_folder_held", reason=str(exc))
                self.last_error = str(exc)
                self._hold_until = now + self.rescan_s
                return done
            except FileNotFoundError:
                ok = False  # gone before we got to it: nothing to do
            except Exception as exc:
                await asyncio.to_thread(self._fail, rel, f"{type(exc).__name__}: {exc}")
                self.last_error = f"{rel}: {exc}"
                ok = True
            if ok:
                self._seen.pop(rel, None)
                done += 1
            else:
                self._seen[rel] = _Seen(seen.sig, time.monotonic())  # start its quiet over
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Watch and rescan the folder, ingesting stable files, until `stop` is set."""
        for sub in ("", INGESTED, FAILED):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # awatch sets its stop event when cancelled; a private one keeps that from stopping
        # the whole bridge.
        halt = asyncio.Event()
        wake = asyncio.Event()
        watcher = asyncio.create_task(self._watch(halt, wake))
        self.log.info("drop_folder_watching", path=str(self.root), location=self.cfg.location)
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    await self.scan_once(stop)
                except OSError as exc:  # the share went away: say so and keep trying
                    self.last_error = f"cannot scan {self.root}: {exc}"
                    self.log.warning("drop_folder_scan_failed", error=self.last_error)
                pending = self._seen and time.monotonic() >= self._hold_until
                delay = min(self.rescan_s, self.cfg.stable_s / 4) if pending else self.rescan_s
                waits = [asyncio.ensure_future(e.wait()) for e in (stop, wake)]
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            halt.set()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def status(self) -> dict[str, Any]:
        """What /health shows about the drop folder."""
        return {
            "path": str(self.root),
            "location": self.cfg.location,
            "watching": self._watching,
            "waiting": len(self._seen),
            "ingested": self.ingested,
            "failed": self.failed,
            "scans": self.scans,
            "skipped": self.skipped_names,
            "last_ingested": self.last_ingested,
            "last_error": self.last_error,
        }
