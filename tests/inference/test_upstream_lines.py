"""How the gateway's own HTTP client reads a streamed answer: whole lines, however the
upstream's packets and chunked-encoding frames cut them, those in together at once."""

from __future__ import annotations

import asyncio

from inference.backends.upstream import Upstream

_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _read_all(packets: list[bytes]) -> list[list[bytes]]:
    """Serve `packets` (a pause after each) to one request; the batches `lines` gave."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for packet in packets:
            writer.write(packet)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream(f"http://127.0.0.1:{port}", {})
    batches: list[list[bytes]] = []
    try:
        async with await upstream.request("POST", "/v1/chat/completions", b"{}", 10) as resp:
            while lines := await resp.lines(5):
                batches.append(lines)
    finally:
        await upstream.close()
        server.close()
        await server.wait_closed()
    return batches


def test_lines_cut_anywhere_come_back_whole_and_in_order() -> None:
    """A line cut inside a frame and across packets, CRLF endings, blank lines between
    events and a last line with no newline: every line whole, in order, none empty, and
    the two lines that arrived in one packet in one batch."""
    packets = [
        _HEAD + _frame(b'data: {"a"'),
        _frame(b': 1}\r\n\r\ndata: {"b": 2}\n\ndata: {"c"'),
        _frame(b": 3}\n") + _frame(b"\n"),
        _frame(b"data: [DONE]") + b"0\r\n\r\n",
    ]
    batches = asyncio.run(_read_all(packets))
    assert batches == [
        [b'data: {"a": 1}', b'data: {"b": 2}'],
        [b'data: {"c": 3}'],
        [b"data: [DONE]"],
    ]
