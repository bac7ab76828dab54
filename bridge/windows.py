"""Sync windows: when blob uploads may run and how fast, as pure functions of the clock.

A window is a wall-clock span in the bridge's time zone (`[bridge] timezone`, the host's
local zone when empty). `start` is inside the window and `end` is not, so back-to-back
windows (`19:00-23:00`, `23:00-06:00`) leave no gap and never both apply. An `end` earlier
than `start` runs past midnight. When windows overlap, the first one listed in the config is
the one that applies (its bandwidth cap wins); the order is the operator's to choose.

Windows hold back only blob uploads from the outbox; Litestream replication and telemetry
ship at any time. No windows at all means uploads may run at any time at
`[bridge.upload] bandwidth_bytes_per_s`.

Times are compared on the wall clock of the configured zone, so a window keeps its local
hours across daylight-saving changes (a `01:00-03:00` window is one hour long on the night
the clocks spring forward).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from bridge.config import BridgeConfig, SyncWindow

# How many days of boundaries `next_change` looks through; two covers every window, since
# each one opens or closes at least once a day.
_LOOKAHEAD_DAYS = 2


def _clock(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


def _zone(cfg: BridgeConfig) -> tzinfo | None:
    # None stands for the host's local zone, resolved by `astimezone()` at each use so a
    # DST change of the host is followed.
    return ZoneInfo(cfg.timezone) if cfg.timezone else None


def localize(cfg: BridgeConfig, now: datetime) -> datetime:
    """`now` as an aware time in the bridge's zone (a naive `now` is read as that zone's)."""
    zone = _zone(cfg)
    if now.tzinfo is None:
        return now.replace(tzinfo=zone) if zone is not None else now.astimezone()
    return now.astimezone(zone) if zone is not None else now.astimezone()


def is_open(window: SyncWindow, wall: time) -> bool:
    """True when the wall-clock time `wall` is inside `window` (start in, end out)."""
    start, end = _clock(window.start), _clock(window.end)
    wall = wall.replace(tzinfo=None)
    if start < end:
        return start <= wall < end
    if start > end:  # past midnight: the evening part or the morning part
        return wall >= start or wall < end
    return False  # start == end is refused by check-config; treat it as never open


def window_open(windows: list[SyncWindow], now: datetime) -> SyncWindow | None:
    """The window open at `now`'s wall-clock time (first listed wins), or None."""
    wall = now.time()
    for window in windows:
        if is_open(window, wall):
            return window
    return None


def upload_allowed(cfg: BridgeConfig, now: datetime) -> bool:
    """True when blob uploads may run at `now`: inside a window, or no windows configured."""
    if not cfg.windows:
        return True
    return window_open(cfg.windows, localize(cfg, now)) is not None


def bandwidth_now(cfg: BridgeConfig, now: datetime) -> int:
    """Upload cap in bytes per second at `now` (0: none): the open window's, else the default."""
    window = window_open(cfg.windows, localize(cfg, now)) if cfg.windows else None
    if window is not None:
        return window.bandwidth_bytes_per_s
    return cfg.upload.bandwidth_bytes_per_s


def _at(day: date, hhmm: str, zone: tzinfo | None) -> datetime:
    moment = datetime.combine(day, _clock(hhmm))
    return moment.replace(tzinfo=zone) if zone is not None else moment.astimezone()


def boundaries(cfg: BridgeConfig, now: datetime, days: int = _LOOKAHEAD_DAYS) -> list[datetime]:
    """Every window start and end after `now`, over the next `days` days, in order."""
    local = localize(cfg, now)
    zone = _zone(cfg)
    out: set[datetime] = set()
    for offset in range(days + 1):
        day = local.date() + timedelta(days=offset)
        for window in cfg.windows:
            for hhmm in (window.start, window.end):
                moment = _at(day, hhmm, zone)
                if moment > local:
                    out.add(moment)
    return sorted(out)


def next_change(cfg: BridgeConfig, now: datetime) -> datetime | None:
    """The next time the open window changes (opens, closes, or another takes over), or None."""
    if not cfg.windows:
        return None
    current = window_open(cfg.windows, localize(cfg, now))
    for moment in boundaries(cfg, now):
        if window_open(cfg.windows, localize(cfg, moment)) != current:
            return moment
    return None
