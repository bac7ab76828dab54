"""The bridge bench's figures: runs per round, paired ratios, targets, and the one table.

Each round runs every uploader once over fresh files (order alternating between rounds);
a row's ratio is the median over rounds of the bridge's rate over the baseline's in that
same round, so a slow moment of the shared machine hits both sides of a ratio alike.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

# The bridge, then boto3's TransferManager as `upload_file` runs it (CRC32, nothing checked
# after), with the bridge's checksum, and with that checksum plus a HeadObject per file
# comparing size and CRC64NVME: the same verification the bridge does before it marks a
# blob done.
UPLOADERS = ("bridge", "TM", "TM+CRC64", "TM+CRC64+HEAD")
SAME_WORK = "TM+CRC64+HEAD"


@dataclass
class Run:
    """One uploader's run over a set: wall seconds, and the CPU seconds of that run."""

    wall: float
    client_cpu: float = 0.0  # this process: the uploader
    server_cpu: float = 0.0  # the S3 server's process


@dataclass
class Timing:
    """One set of files on one server in one scenario: every uploader's run, per round."""

    server: str
    scenario: str
    label: str
    nbytes: int
    rounds: list[dict[str, Run]] = field(default_factory=list)

    def mbs(self, name: str) -> float:
        """Median MB/s of one uploader over the rounds."""
        return statistics.median(self.nbytes / r[name].wall / 1e6 for r in self.rounds)

    def ratio(self, base: str) -> float:
        """Median over rounds of the bridge's rate over `base`'s in the same round."""
        return statistics.median(r[base].wall / r["bridge"].wall for r in self.rounds)

    def server_cpu(self, name: str) -> float:
        """Median server CPU seconds spent on one uploader's requests."""
        return statistics.median(r[name].server_cpu for r in self.rounds)


def total(rows: list[Timing]) -> Timing:
    """The 'all' row: each round's walls and CPU added up across the sets."""
    n = min(len(r.rounds) for r in rows)
    rounds = [
        {
            name: Run(
                sum(r.rounds[i][name].wall for r in rows),
                sum(r.rounds[i][name].client_cpu for r in rows),
                sum(r.rounds[i][name].server_cpu for r in rows),
            )
            for name in UPLOADERS
        }
        for i in range(n)
    ]
    return Timing(rows[0].server, rows[0].scenario, "all", sum(r.nbytes for r in rows), rounds)


# Issue 15's target for every row: at least the rate of TransferManager doing the same
# verification. (On moto loopback it is the only fair baseline: moto's CPU per request caps
# any client that sends the verifying HEAD; the plain TM ratio is printed beside it.)
TARGET = 1.0


def verdict(t: Timing) -> str:
    """PASS or MISS against the target."""
    return "PASS" if t.ratio(SAME_WORK) >= TARGET else "MISS"


def print_table(rows: list[Timing], title: str) -> list[tuple[str, str]]:
    """Print one table (a row per server x scenario x set, with 'all' rows); return
    (row name, verdict) pairs."""
    print(f"\n{title}")
    head = "".join(f" {n:>13} {'ratio':>5}" for n in UPLOADERS[1:])
    print(f"{'server':9} {'scenario':8} {'blobs':13} {'bridge':>7}{head}  "
          f"{'srv CPU s':>11}  target              verdict")  # fmt: skip
    verdicts: list[tuple[str, str]] = []
    groups = list(dict.fromkeys((r.server, r.scenario) for r in rows))
    for server, scenario in groups:
        mine = [r for r in rows if (r.server, r.scenario) == (server, scenario)]
        for t in [*mine, total(mine)] if len(mine) > 1 else mine:
            cells = "".join(f" {t.mbs(n):>13.1f} {t.ratio(n):>5.0%}" for n in UPLOADERS[1:])
            cpu = f"{t.server_cpu('bridge'):.2f}/{t.server_cpu(SAME_WORK):.2f}"
            v = verdict(t)
            print(f"{server:9} {scenario:8} {t.label:13} {t.mbs('bridge'):>7.1f}{cells}  "
                  f"{cpu:>11}  >= {TARGET:.1f}x same work  {v}")  # fmt: skip
            verdicts.append((f"{server} {scenario} {t.label}", v))
    print(
        f"(MB/s: median over rounds; ratio: median of per-round bridge/baseline rates; "
        f"srv CPU s: the server process's CPU for the bridge's / {SAME_WORK}'s requests)"
    )
    return verdicts
