"""A response's head leaves with the first piece of its body, in one system call; a head
whose body is late still leaves in the same turn of the event loop."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from appliance.httplimits import _HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"


class Recorder:
    """A transport that records each write (each would be one system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _through(transport: Recorder) -> _HeadWithBody:
    return _HeadWithBody(cast(Any, transport))


def test_head_and_first_body_piece_are_one_write_and_later_pieces_their_own() -> None:
    async def main() -> list[bytes]:
        real = Recorder()
        transport = _through(real)
        transport.write(HEAD)
        transport.write(b"5\r\nhello\r\n")
        transport.write(b"0\r\n\r\n")
        await asyncio.sleep(0)  # the turn ends: nothing more may come out
        return real.writes

    assert asyncio.run(main()) == [HEAD + b"5\r\nhello\r\n", b"0\r\n\r\n"]


def test_a_head_without_a_body_yet_goes_out_when_the_loop_turn_ends() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        real = Recorder()
        transport = _through(real)
        transport.write(HEAD)
        held = list(real.writes)
        await asyncio.sleep(0)
        return held, real.writes

    held, after = asyncio.run(main())
    assert held == []
    assert after == [HEAD]


def test_close_writes_a_held_head_first_and_other_calls_reach_the_real_transport() -> None:
    async def main() -> Recorder:
        real = Recorder()
        transport = _through(real)
        transport.write(HEAD)
        transport.close()
        assert transport.is_closing()
        return real

    real = asyncio.run(main())
    assert real.writes == [HEAD]
    assert real.closed
