"""Sync windows as a table: open or not, and at what cap, across midnight, at the edges, and in
a configured time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.config import BridgeConfig, SyncWindow
from bridge.windows import bandwidth_now, next_change, upload_allowed, window_open
from tests.conftest import make_config

OSLO = ZoneInfo("Europe/Oslo")
NIGHT = SyncWindow(start="19:00", end="06:00", bandwidth_bytes_per_s=5_000_000)
LUNCH = SyncWindow(start="12:00", end="13:00", bandwidth_bytes_per_s=1_000)
OVERLAP = SyncWindow(start="05:00", end="07:00", bandwidth_bytes_per_s=7)


def _cfg(toml: str) -> BridgeConfig:
    return make_config(Path("/nonexistent"), toml).bridge


def _windows_toml(*windows: SyncWindow) -> str:
    return "".join(
        f'[[bridge.windows]]\nstart = "{w.start}"\nend = "{w.end}"\n'
        f"bandwidth_bytes_per_s = {w.bandwidth_bytes_per_s}\n"
        for w in windows
    )


def _at(hh: int, mm: int, ss: int = 0, tz: ZoneInfo | None = None) -> datetime:
    return datetime(2026, 6, 10, hh, mm, ss, tzinfo=tz)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (_at(18, 59, 59), None),
        (_at(19, 0), NIGHT),  # start is inside
        (_at(23, 59, 59), NIGHT),
        (_at(0, 0), NIGHT),  # past midnight
        (_at(5, 59, 59), NIGHT),
        (_at(6, 0), None),  # end is outside
        (_at(11, 59), None),
        (_at(12, 0), LUNCH),
        (_at(12, 59, 59), LUNCH),
        (_at(13, 0), None),
    ],
)
def test_window_open(now: datetime, expected: SyncWindow | None) -> None:
    """Start in, end out; a window whose end is before its start runs past midnight."""
    assert window_open([NIGHT, LUNCH], now) == expected
    assert window_open([NIGHT, LUNCH], now.replace(tzinfo=OSLO)) == expected  # wall clock


def test_overlapping_windows_first_listed_wins() -> None:
    """Where two windows overlap, the one listed first applies."""
    assert window_open([NIGHT, OVERLAP], _at(5, 30)) == NIGHT
    assert window_open([OVERLAP, NIGHT], _at(5, 30)) == OVERLAP
    assert window_open([NIGHT, OVERLAP], _at(6, 30)) == OVERLAP


@pytest.mark.parametrize(
    ("windows", "now", "allowed", "bandwidth"),
    [
        ((), _at(3, 0), True, 250),  # no windows: always, at the default cap
        ((NIGHT,), _at(3, 0), True, 5_000_000),
        ((NIGHT,), _at(9, 0), False, 250),
        ((NIGHT, LUNCH), _at(12, 30), True, 1_000),
        ((NIGHT, LUNCH), _at(13, 0), False, 250),
    ],
)
def test_upload_allowed_and_bandwidth_now(
    windows: tuple[SyncWindow, ...], now: datetime, allowed: bool, bandwidth: int
) -> None:
    """Allowed inside a window (or with none), at the window's cap, else the default one."""
    cfg = _cfg(
        '[bridge]\ntimezone = "Europe/Oslo"\n'
        + _windows_toml(*windows)
        + "[bridge.upload]\nbandwidth_bytes_per_s = 250\n"
    )
    local = now.replace(tzinfo=OSLO)
    assert upload_allowed(cfg, local) is allowed
    assert bandwidth_now(cfg, local) == bandwidth
    assert upload_allowed(cfg, now) is allowed  # naive: read in the configured zone


@pytest.mark.parametrize(
    ("utc", "allowed"),
    [
        (datetime(2026, 6, 10, 16, 59, tzinfo=UTC), False),  # 18:59 in Oslo (CEST)
        (datetime(2026, 6, 10, 17, 0, tzinfo=UTC), True),  # 19:00 in Oslo
        (datetime(2026, 6, 11, 3, 59, tzinfo=UTC), True),  # 05:59 in Oslo
        (datetime(2026, 6, 11, 4, 0, tzinfo=UTC), False),  # 06:00 in Oslo
        (datetime(2026, 1, 10, 17, 59, tzinfo=UTC), False),  # 18:59 in Oslo (CET)
        (datetime(2026, 1, 10, 18, 0, tzinfo=UTC), True),
    ],
)
def test_an_aware_time_is_read_in_the_configured_zone(utc: datetime, allowed: bool) -> None:
    """The window is Oslo wall-clock time, summer and winter, whatever zone `now` comes in."""
    cfg = _cfg('[bridge]\ntimezone = "Europe/Oslo"\n' + _windows_toml(NIGHT))
    assert upload_allowed(cfg, utc) is allowed


@pytest.mark.parametrize(
    ("now", "change"),
    [
        (_at(9, 0, tz=OSLO), _at(12, 0, tz=OSLO)),  # closed: the next opening
        (_at(12, 30, tz=OSLO), _at(13, 0, tz=OSLO)),  # open: its end
        (_at(13, 0, tz=OSLO), _at(19, 0, tz=OSLO)),  # exactly at a boundary: the next one
        (_at(23, 0, tz=OSLO), datetime(2026, 6, 11, 6, 0, tzinfo=OSLO)),  # across midnight
    ],
)
def test_next_change(now: datetime, change: datetime) -> None:
    """The next instant the open window changes."""
    cfg = _cfg('[bridge]\ntimezone = "Europe/Oslo"\n' + _windows_toml(NIGHT, LUNCH))
    assert next_change(cfg, now) == change


def test_next_change_without_windows_and_in_local_time() -> None:
    """No windows: nothing ever changes. No time zone: the host's local zone."""
    assert next_change(_cfg(""), _at(9, 0, tz=OSLO)) is None
    cfg = _cfg(_windows_toml(LUNCH))
    nxt = next_change(cfg, datetime(2026, 6, 10, 9, 0))
    assert nxt is not None and (nxt.hour, nxt.minute) == (12, 0)
    assert nxt.utcoffset() == datetime(2026, 6, 10, 12, 0).astimezone().utcoffset()
