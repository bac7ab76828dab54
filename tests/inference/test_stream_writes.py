"""How a streamed answer leaves the gateway: what is in at once goes out in one write,
nothing waits for a batch, and a client that leaves cuts the upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from inference.controllers.completions import _stream
from inference.service import StreamState

Message = dict[str, Any]


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def _run(receive: Any, chunks: AsyncGenerator[list[dict[str, Any]], None]) -> list[bytes]:
    bodies: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    async def main() -> None:
        await asyncio.wait_for(
            _stream("/v1/chat/completions", receive, send, StreamState(), chunks), 10
        )

    asyncio.run(main())
    return bodies


def test_events_in_at_once_leave_in_one_write() -> None:
    """1 and 2 were in together and go out before the wait (nothing waits to be batched);
    then 3 and 4, whose reads were both in, 5 and 6 that came in together, and [DONE]."""

    async def chunks() -> AsyncGenerator[list[dict[str, Any]], None]:
        yield [{"n": 1}]
        yield [{"n": 2}]
        await asyncio.sleep(0.05)
        yield [{"n": 3}]
        yield [{"n": 4}]
        yield [{"n": 5}, {"n": 6}]

    assert _run(_never, chunks()) == [
        b'data: {"n":1}\n\ndata: {"n":2}\n\n',
        b'data: {"n":3}\n\ndata: {"n":4}\n\ndata: {"n":5}\n\ndata: {"n":6}\n\ndata: [DONE]\n\n',
    ]


def test_a_stream_far_ahead_of_its_writes_still_goes_out_in_pieces() -> None:
    """600 events all in at once: written 256 at a time, not held until the end."""

    async def chunks() -> AsyncGenerator[list[dict[str, Any]], None]:
        for n in range(600):
            yield [{"n": n}]

    bodies = _run(_never, chunks())
    assert [body.count(b"data: ") for body in bodies] == [256, 256, 89]
    assert bodies[-1].endswith(b'data: {"n":599}\n\ndata: [DONE]\n\n')


def test_a_client_that_leaves_cuts_the_stream_where_it_waits() -> None:
    """The client disconnects while the upstream is silent: the stream ends at once (not after
    the upstream's next piece), no [DONE] is sent, and the upstream side is closed."""
    closed: list[str] = []

    async def chunks() -> AsyncGenerator[list[dict[str, Any]], None]:
        try:
            yield [{"n": 1}]
            await asyncio.sleep(30)
            yield [{"n": 2}]
        finally:
            closed.append("upstream closed")

    async def leaves() -> Message:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    assert _run(leaves, chunks()) == [b'data: {"n":1}\n\n']
    assert closed == ["upstream closed"]


def test_a_client_that_leaves_while_a_write_is_stuck_still_closes_the_upstream() -> None:
    """The client stops reading (the write of event 2 blocks) while the upstream is silent,
    then disconnects: the stream ends and the upstream side is closed, though its next
    piece was already being waited for when the write began."""
    closed: list[str] = []
    bodies: list[bytes] = []

    async def chunks() -> AsyncGenerator[list[dict[str, Any]], None]:
        try:
            yield [{"n": 1}]
            await asyncio.sleep(0.01)
            yield [{"n": 2}]
            await asyncio.sleep(30)
            yield [{"n": 3}]
        finally:
            closed.append("upstream closed")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            if len(bodies) == 2:
                await asyncio.sleep(30)  # a client that stopped reading

    async def leaves() -> Message:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def main() -> None:
        await asyncio.wait_for(
            _stream("/v1/chat/completions", leaves, send, StreamState(), chunks()), 10
        )

    asyncio.run(main())
    assert bodies == [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n']
    assert closed == ["upstream closed"]
