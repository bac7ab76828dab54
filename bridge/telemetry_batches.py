"""The local half of telemetry shipping: which spool files are finished, how they are cut into
batches, and the journal (`{data}/bridge/telemetry.json`) that makes shipping crash-safe.

Which files are finished (the rule follows `store/telemetry.Spool`): a writer names its files
`telemetry/{yyyy-mm-dd}/{hh}-{writer}.{n}.jsonl` by the UTC hour it opened them in, and only
ever appends to the one it opened last. It opens a new file at the first line of a new hour,
when the file reached its size limit (n + 1), or when a restarted process finds the name taken
(n + 1, O_EXCL). So a file is finished when
  * its writer has a later file (a greater (day, hour, n)): the writer moved on for good; or
  * its UTC hour ended more than `FINISH_GRACE_S` ago: the writer's next line opens a new hour.
    The grace covers a line whose time was read just before the hour ended and that is
    written just after it.
Only the newest file of each writer, while its hour lasts, is left alone. A clock that jumped
back makes a writer's file look current until its hour comes round again; it ships then.

The journal holds the `seq` counter, the batch being shipped (its key, the byte ranges it holds
and the sha256 of its uncompressed lines), the offsets of files shipped in part, and the
counters. A batch is fsynced into it before any byte goes to S3, and cleared after the files it
emptied were deleted, so a crash at any point finds the same batch with the same key.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from store.db import replace_file
from store.paths import Layout

FINISH_GRACE_S = 60.0
_NAME = re.compile(r"^(\d{2})-(.+)\.(\d+)\.jsonl$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_READ_STEP = 1024 * 1024


@dataclass(frozen=True)
class SpoolFile:
    """One spool file as found on disk."""

    path: Path
    rel: str
    day: str
    hour: int
    writer: str
    n: int
    size: int

    @property
    def order(self) -> tuple[str, int, int]:
        """Position in its writer's sequence of files."""
        return (self.day, self.hour, self.n)

    def hour_end(self) -> float:
        """Epoch second at which this file's UTC hour ended."""
        start = time.strptime(f"{self.day} {self.hour:02d}", "%Y-%m-%d %H")
        return float(calendar.timegm(start) + 3600)


def scan_spool(root: Path) -> list[SpoolFile]:
    """Every spool file under `root` named the way `Spool` names them, oldest first."""
    out: list[SpoolFile] = []
    if not root.is_dir():
        return out
    for day_dir in root.iterdir():
        if not _DAY.match(day_dir.name) or not day_dir.is_dir():
            continue
        for path in day_dir.iterdir():
            m = _NAME.match(path.name)
            if m is None:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            rel = f"{day_dir.name}/{path.name}"
            out.append(SpoolFile(path, rel, day_dir.name, int(m[1]), m[2], int(m[3]), size))
    out.sort(key=lambda f: (f.day, f.hour, f.writer, f.n))
    return out


def finished_files(files: list[SpoolFile], now: float) -> list[SpoolFile]:
    """The files no writer will append to again (see the module docstring), oldest first."""
    newest: dict[str, tuple[str, int, int]] = {}
    for f in files:
        newest[f.writer] = max(newest.get(f.writer, f.order), f.order)
    return [f for f in files if f.order < newest[f.writer] or f.hour_end() + FINISH_GRACE_S <= now]


class Piece(msgspec.Struct, array_like=True):
    """Bytes [start, end) of one spool file; `last` when they reach its end."""

    rel: str
    start: int
    end: int
    last: bool


class Batch(msgspec.Struct):
    """One planned object: its key and exactly which bytes it holds."""

    key: str
    seq: int
    day: str
    hour: int
    pieces: list[Piece]
    sha256: str
    raw_bytes: int


class ShipState(msgspec.Struct):
    """What survives a restart: the seq counter, partial offsets, the batch in flight, counters."""

    next_seq: int = 0
    offsets: dict[str, int] = msgspec.field(default_factory=dict)
    pending: Batch | None = None
    shipped_objects: int = 0
    shipped_bytes: int = 0
    dropped_files: int = 0
    dropped_bytes: int = 0
    last_shipped_at: float | None = None


KeyFor = Callable[[str, int, int], str]
"""(day, hour, seq) → object key."""


class Journal:
    """The spool and its shipping journal; every method but `load` needs `exclusive()` held."""

    def __init__(
        self, layout: Layout, key_for: KeyFor, clock: Callable[[], float], log: Any
    ) -> None:
        self.root = layout.telemetry_dir
        self.path = layout.telemetry_journal
        self.lock_path = layout.telemetry_lock
        self.key_for = key_for
        self.clock = clock
        self.log = log
        self.state = ShipState()

    def load(self) -> ShipState:
        """Read the journal (a fresh one when there is none or it is damaged)."""
        try:
            self.state = msgspec.json.decode(self.path.read_bytes(), type=ShipState)
        except FileNotFoundError:
            self.state = ShipState()
        except (OSError, msgspec.DecodeError) as exc:
            # Written atomically, so this is damage from outside; shipping goes on, and a
            # seq used before is caught by IfNoneMatch.
            self.log.error("telemetry_state_unreadable", path=str(self.path), error=str(exc))
            self.state = ShipState()
        return self.state

    def save(self) -> None:
        """Write the journal atomically and durably."""
        replace_file(self.path, msgspec.json.encode(self.state), durable=True)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Hold the spool for one round (True), or learn that another holder has it (False)."""
        # An flock per round: it excludes the nightly cap job (another thread) and a second
        # bridge on the same data root (a mistake) alike; the loser skips its round.
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            self.load()
            yield True
        finally:
            os.close(fd)

    def _read(self, rel: str, start: int, end: int) -> bytes | None:
        try:
            with open(self.root / rel, "rb") as fh:
                fh.seek(start)
                data = fh.read(end - start)
        except FileNotFoundError:
            return None
        return data if len(data) == end - start else None

    def _line_end(self, f: SpoolFile, start: int) -> int:
        # One line longer than max_object_bytes: the object holds that whole line.
        pos = start
        with open(f.path, "rb") as fh:
            fh.seek(start)
            while chunk := fh.read(_READ_STEP):
                nl = chunk.find(b"\n")
                if nl >= 0:
                    return pos + nl + 1
                pos += len(chunk)
        return f.size

    def body(self, pieces: list[Piece]) -> bytes | None:
        """The uncompressed object: the pieces end to end (None if a file lost bytes)."""
        out = bytearray()
        for p in pieces:
            data = self._read(p.rel, p.start, p.end)
            if data is None:
                return None
            out += data
            if p.last and data and not data.endswith(b"\n"):
                out += b"\n"  # a line cut by power loss must not run into the next file
        return bytes(out)

    def plan(self, limit: int) -> tuple[Batch, bytes] | None:
        """The next batch, journaled before it is returned; None when nothing is finished.

        A batch holds the oldest finished hour's files, in order, up to `limit` bytes; the
        file that does not fit is cut after its last whole line and goes on in the next batch.
        """
        st = self.state
        files = scan_spool(self.root)
        present = {f.rel for f in files}
        st.offsets = {rel: off for rel, off in st.offsets.items() if rel in present}
        todo = finished_files(files, self.clock())
        if not todo:
            return None
        hour = [f for f in todo if (f.day, f.hour) == (todo[0].day, todo[0].hour)]
        pieces: list[Piece] = []
        used = 0
        for f in hour:
            start = st.offsets.get(f.rel, 0)
            if f.size - start <= limit - used:
                pieces.append(Piece(f.rel, start, f.size, True))
                used += f.size - start
                continue
            room = self._read(f.rel, start, start + (limit - used)) or b""
            end = start + room.rfind(b"\n") + 1
            if end == start:
                if pieces:
                    break  # this file starts the next object
                end = self._line_end(f, start)
            pieces.append(Piece(f.rel, start, end, end == f.size))
            break
        body = self.body(pieces)
        if body is None:
            return None  # a file vanished under us; plan again next round
        day, hh = hour[0].day, hour[0].hour
        seq = st.next_seq
        st.next_seq += 1
        sha = hashlib.sha256(body).hexdigest()
        st.pending = Batch(self.key_for(day, hh, seq), seq, day, hh, pieces, sha, len(body))
        self.save()
        return st.pending, body

    def finish(self, batch: Batch) -> int:
        """S3 holds the batch: delete the files it emptied, advance offsets, clear it."""
        st = self.state
        pruned = 0
        for p in batch.pieces:
            if p.last:
                (self.root / p.rel).unlink(missing_ok=True)
                st.offsets.pop(p.rel, None)
                pruned += 1
            else:
                st.offsets[p.rel] = p.end
        st.pending = None
        if batch.raw_bytes:
            st.shipped_objects += 1
            st.shipped_bytes += batch.raw_bytes
            st.last_shipped_at = self.clock()
        self.save()
        self._prune_dirs()
        return pruned

    def forget(self) -> None:
        """Drop the journaled batch (S3 never got it and its files changed): plan afresh."""
        self.state.pending = None
        self.save()

    def rekey(self, batch: Batch) -> None:
        """Give the batch the next seq (its key holds someone else's object) and journal it."""
        batch.seq = self.state.next_seq
        self.state.next_seq += 1
        batch.key = self.key_for(batch.day, batch.hour, batch.seq)
        self.state.pending = batch
        self.save()

    def drop_oldest(self, cap: int) -> tuple[int, int]:
        """Delete the oldest finished files until the spool is at most `cap` bytes.

        The batch being shipped is kept (it is at most one object's worth), and so are the
        files writers may still append to. Returns (files dropped, spool bytes left).
        """
        files = scan_spool(self.root)
        total = sum(f.size for f in files)
        st = self.state
        keep = {p.rel for p in st.pending.pieces} if st.pending else set()
        dropped = 0
        for f in finished_files(files, self.clock()):
            if total <= cap:
                break
            if f.rel in keep:
                continue
            f.path.unlink(missing_ok=True)
            total -= f.size
            dropped += 1
            st.dropped_files += 1
            st.dropped_bytes += f.size - st.offsets.pop(f.rel, 0)  # lines never shipped
        if dropped:
            self.save()
            self._prune_dirs()
        return dropped, total

    def _prune_dirs(self) -> None:
        # Only days long over: a writer makes a day's folder just before opening a file in it.
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(self.clock() - 3600 - FINISH_GRACE_S))
        for day_dir in self.root.glob("*"):
            if _DAY.match(day_dir.name) and day_dir.name < cutoff:
                with contextlib.suppress(OSError):
                    day_dir.rmdir()
