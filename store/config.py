"""The `[store]` config section: where data lives and how durably it is written."""

from __future__ import annotations

from typing import Annotated

import msgspec


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings for everything the box keeps on disk."""

    data_dir: str = ""
    """Data root. `$FIELDBOX_DATA` overrides it; empty means /var/lib/fieldbox when that
    exists and is writable (an installed box), else ./var (a checkout)."""

    busy_timeout_ms: Annotated[int, msgspec.Meta(ge=5000)] = 10_000
    """How long a writer waits for another process's write lock before giving up (>= 5000)."""

    wal_autocheckpoint_pages: Annotated[int, msgspec.Meta(ge=1)] = 1000
    """WAL pages after which a commit runs a passive checkpoint."""

    wal_max_bytes: Annotated[int, msgspec.Meta(ge=1 << 20)] = 64 * 1024 * 1024
    """When the WAL grows past this, a writer forces a RESTART checkpoint so it cannot grow
    without bound while readers keep starting."""

    min_free_disk_mb: Annotated[int, msgspec.Meta(ge=0)] = 256
    """`/ready` fails and new uploads are refused with 507 below this much free disk."""
