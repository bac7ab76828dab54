"""A revoked key is refused on the very next check, from whichever thread makes it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from store import keys
from store.config import StoreConfig
from store.db import Database

T = TypeVar("T")
THREADS = 8


class Pinned:
    """One long-lived thread, so everything it runs reads through the same connection."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on this thread and return its result."""
        return self.pool.submit(fn).result(timeout=30)


@pytest.fixture
def threads() -> Iterator[list[Pinned]]:
    """Eight pinned threads, shut down after the test."""
    pinned = [Pinned() for _ in range(THREADS)]
    yield pinned
    for p in pinned:
        p.pool.shutdown()


def test_every_thread_refuses_a_revoked_key(tmp_path: Path, threads: list[Pinned]) -> None:
    """Warm every thread's memo, revoke from another connection: each thread's next call fails.

    The threads have served different numbers of requests between writes, so their
    `data_version` counters differ; each round a different thread asks first after the
    revocation.
    """
    cfg = StoreConfig(data_dir=str(tmp_path))
    served = keys.open_keys(str(tmp_path / "keys.db"), cfg)
    cli = keys.open_keys(str(tmp_path / "keys.db"), cfg)  # the CLI's own connection
    try:
        verifier = keys.Verifier(served)
        _, opener = keys.create(cli, "opener", ("field",))
        # A connection's data_version moves by one each time it reads after some commit,
        # so threads that served different numbers of requests hold different counters.
        for step in range(THREADS):
            for t in threads[: step + 1]:
                assert t.call(partial(verifier.verify, opener)) is not None
            keys.create(cli, "spacer", ("field",))
        for first in range(THREADS):
            key, token = keys.create(cli, f"round-{first}", ("field",))
            for t in reversed(threads):
                assert t.call(partial(verifier.verify, token)) == key
            keys.revoke(cli, key.id)
            order = [threads[first], *threads[:first], *threads[first + 1 :]]
            seen = [t.call(partial(verifier.verify, token)) for t in order]
            assert seen == [None] * THREADS, f"round {first}: a thread accepted a revoked key"
    finally:
        cli.close()
        served.close()


def test_revocation_through_the_served_database_is_seen_by_every_thread(
    tmp_path: Path, threads: list[Pinned]
) -> None:
    """A revocation written by the server's own writer (the admin page) also counts at once."""
    db = Database(tmp_path / "keys.db", StoreConfig(data_dir=str(tmp_path)), keys.KEY_MIGRATIONS)
    try:
        verifier = keys.Verifier(db)
        key, token = keys.create(db, "tablet", ("field",))
        assert [t.call(partial(verifier.verify, token)) for t in threads] == [key] * THREADS
        keys.revoke(db, key.id)
        assert [t.call(partial(verifier.verify, token)) for t in threads] == [None] * THREADS
    finally:
        db.close()
