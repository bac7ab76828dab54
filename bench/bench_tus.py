"""tus ingest: fieldbox next to the reference tus server (@tus/server 2.x + @tus/file-store).

The same lean client (bench/workloads.py `tus_upload`: POST, then PATCHes) uploads to a real
`fieldbox serve api` and to @tus/server on node's http server (bench/tus_peer.mjs), each on a
free loopback port, in alternating order per round. Rows: 16 MiB PATCHes of a 256 MiB body,
and 64 KiB PATCHes (the size phone clients send on bad links) of a smaller body. Each row
prints MB/s for both, the median of the per-round paired ratios, and server CPU-seconds per
GiB ingested (utime + stime of the server process from /proc). @tus/file-store neither
fsyncs nor hashes; fieldbox answers 204 only after the bytes are fsynced and hashed.
The raw loopback copy (the ceiling row, no target) is `bench/bench_api.py`'s.
Exit 0 when a target is missed (a measurement); non-zero on errors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import ApiServer, BenchError, machine_facts
from workloads import LOCATION, MIB, tus_upload

PEER_SCRIPT = Path(__file__).with_name("tus_peer.mjs")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One PATCH size: per-round MB/s and CPU seconds for both servers."""

    name: str
    body: int
    chunk: int
    fieldbox_mbs: list[float] = field(default_factory=list)
    peer_mbs: list[float] = field(default_factory=list)
    fieldbox_cpu: list[float] = field(default_factory=list)
    peer_cpu: list[float] = field(default_factory=list)

    def ratio(self) -> float:
        """Median of the per-round fieldbox / peer ratios."""
        pairs = zip(self.fieldbox_mbs, self.peer_mbs, strict=True)
        return statistics.median(f / p for f, p in pairs)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def timed(server: ApiServer, data: bytes, chunk: int, endpoint: str) -> tuple[float, float]:
    """MB/s and server CPU seconds of one whole upload."""
    assert server.proc is not None
    before = cpu_seconds(server.proc.pid)
    elapsed = tus_upload(server, data, chunk, "bench.bin", endpoint)
    return len(data) / elapsed / 1e6, cpu_seconds(server.proc.pid) - before


def check_peer_file(directory: Path, size: int) -> None:
    """The peer really stored the whole body (a file of that size beside its .json)."""
    sizes = [p.stat().st_size for p in directory.iterdir() if p.suffix != ".json"]
    if sizes != [size]:
        raise BenchError(f"@tus/server stored {sizes}, expected one file of {size} bytes")
    for p in directory.iterdir():
        p.unlink()


def run(rows: list[Row], rounds: int, run_dir: Path, peer_dir: Path) -> None:
    """Start both servers, upload every row `rounds` times in alternating order."""
    fieldbox = ApiServer(run_dir / "fieldbox")
    files = run_dir / "peer-files"
    files.mkdir(parents=True)
    command = ["node", str(PEER_SCRIPT), str(peer_dir.resolve()), "{host}", "{port}", str(files)]
    peer = ApiServer(run_dir / "peer", command=command)
    try:
        fieldbox.data_dir.mkdir(parents=True)
        fieldbox.create_key()
        fieldbox.start()
        fieldbox.create_location(LOCATION)
        peer.start()
        for row in rows:
            body = bytearray(os.urandom(row.body))
            for r in range(rounds):
                order = [fieldbox, peer] if r % 2 == 0 else [peer, fieldbox]
                # A new blob each round, as bench_api.py does: no dedup shortcut on round 2.
                body[:8] = r.to_bytes(8, "big")
                data = bytes(body)
                for server in order:
                    os.sync()
                    if server is fieldbox:
                        mbs, cpu = timed(fieldbox, data, row.chunk, "/v1/uploads")
                        row.fieldbox_mbs.append(mbs)
                        row.fieldbox_cpu.append(cpu)
                    else:
                        mbs, cpu = timed(peer, data, row.chunk, "/files")
                        check_peer_file(files, row.body)
                        row.peer_mbs.append(mbs)
                        row.peer_cpu.append(cpu)
                print(
                    f"  {row.name} round {r + 1}: fieldbox {row.fieldbox_mbs[-1]:.0f} MB/s, "
                    f"@tus/server {row.peer_mbs[-1]:.0f} MB/s",
                    file=sys.stderr,
                )
    finally:
        fieldbox.stop()
        peer.stop()


def report(rows: list[Row]) -> None:
    """The table, per-round figures and the target lines."""
    print("tus ingest, MB/s (median of rounds); CPU s/GiB = server utime+stime per GiB")
    print("@tus/file-store neither fsyncs nor hashes; fieldbox fsyncs and sha256s every byte")
    head = f"{'row':28} {'@tus/server':>12} {'fieldbox':>9} {'ratio':>6}"
    print(f"{head} {'CPU s/GiB peer':>15} {'fieldbox':>9}   target")
    for row in rows:
        gib = row.body / 2**30
        verdict = "PASS" if row.ratio() >= 1.0 else "MISS"
        print(
            f"{row.name:28} {statistics.median(row.peer_mbs):12.0f} "
            f"{statistics.median(row.fieldbox_mbs):9.0f} {row.ratio():6.2f} "
            f"{statistics.median(row.peer_cpu) / gib:15.2f} "
            f"{statistics.median(row.fieldbox_cpu) / gib:9.2f}   >= 1.00  {verdict}"
        )
    for row in rows:
        both = zip(row.peer_mbs, row.fieldbox_mbs, strict=True)
        pairs = ", ".join(f"{p:.0f}/{f:.0f}" for p, f in both)
        print(f"  {row.name}: @tus/server/fieldbox MB/s per round: {pairs}")


def main() -> int:
    """Parse arguments, run, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer-dir", type=Path, default=Path(".bench-tus"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 rounds, smaller bodies")
    args = ap.parse_args()
    if not (args.peer_dir / "node_modules" / "@tus" / "server").is_dir():
        print(f"@tus/server is not installed in {args.peer_dir}: run `make bench-tus`")
        return 2
    big, small, rounds = (256 * MIB, 32 * MIB, args.rounds)
    if args.quick:
        big, small, rounds = (64 * MIB, 8 * MIB, 2)
    rows = [
        Row(f"16 MiB PATCHes, {big // MIB} MiB", big, 16 * MIB),
        Row(f"64 KiB PATCHes, {small // MIB} MiB", small, 64 * 1024),
    ]
    run_dir = Path(tempfile.mkdtemp(prefix="bench-tus-", dir=Path.cwd()))
    try:
        for line in machine_facts(run_dir):
            print(line)
        run(rows, rounds, run_dir, args.peer_dir)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for log in sorted(run_dir.glob("*-server.log")):
            print(f"--- {log.name}\n{log.read_text()[-2000:]}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
