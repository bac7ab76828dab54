"""The sync outbox: what the bridge owes S3, its retries, and what `sync status` reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.config import StoreConfig
from store.outbox import Outbox


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """An empty outbox.db."""
    box = Outbox(str(tmp_path / "outbox.db"), StoreConfig())
    yield box
    box.close()


def _add(outbox: Outbox, asset_id: str, size: int = 10) -> None:
    outbox.add(
        asset_id=asset_id,
        account="acme",
        geo_prefix="u4pr",
        location="loc1",
        sha256="a" * 64,
        size=size,
        kind="photo",
        filename="f.jpg",
        mime_type="image/jpeg",
    )


def test_add_is_idempotent_per_asset(outbox: Outbox) -> None:
    """Adding the same asset twice owes S3 one upload."""
    _add(outbox, "loc1.a")
    _add(outbox, "loc1.a")
    assert [i.asset_id for i in outbox.pending()] == ["loc1.a"]


def test_failures_wait_for_their_retry_time_and_done_rows_leave_the_backlog(
    outbox: Outbox,
) -> None:
    """A failed item is not due before its retry time; done items leave the backlog, and
    the last error and last success are remembered for `sync status`."""
    _add(outbox, "loc1.a", 10)
    _add(outbox, "loc1.b", 30)
    first, second = outbox.due(now=100.0)
    outbox.mark_failed(first.id, "connection refused", retry_at=200.0)
    assert [i.asset_id for i in outbox.due(now=150.0)] == ["loc1.b"]
    assert {i.asset_id for i in outbox.due(now=250.0)} == {"loc1.a", "loc1.b"}
    assert outbox.get(first.id).attempts == 1
    backlog = outbox.backlog()
    assert (backlog.items, backlog.bytes) == (2, 40)
    assert backlog.last_error == "connection refused" and backlog.last_success_at is None
    outbox.mark_done(second.id)
    backlog = outbox.backlog()
    assert (backlog.items, backlog.bytes) == (1, 10)
    assert backlog.last_success_at is not None
    assert outbox.retry_all_now() == 1
    assert [i.asset_id for i in outbox.due(now=0.0)] == ["loc1.a"]


def test_multipart_upload_id_is_kept_until_done_and_done_rows_are_pruned(
    outbox: Outbox,
) -> None:
    """The multipart upload in flight survives a restart (it is in the row); done rows are
    deleted only after the grace period."""
    _add(outbox, "loc1.a")
    [item] = outbox.pending()
    outbox.set_multipart(item.id, "upload-123")
    assert outbox.get(item.id).multipart_upload_id == "upload-123"
    outbox.mark_done(item.id)
    assert outbox.get(item.id).multipart_upload_id is None
    assert outbox.prune_done(older_than_s=3600) == 0
    assert outbox.prune_done(older_than_s=0, now=outbox.get(item.id).done_at + 1) == 1  # type: ignore[operator]
