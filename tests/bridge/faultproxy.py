"""A loopback TCP proxy that puts faults between a client and one upstream server.

It runs its own asyncio loop in a thread, so synchronous tests and code under test on
another loop can both use it. Faults switch at run time and apply at once, to connections
already open as well as new ones:

    proxy = FaultProxy("127.0.0.1", upstream_port).start()
    client_url = proxy.url
    proxy.latency(0.02)        # pass-through, every byte arrives 20 ms later, each way
    proxy.bandwidth(256_000)   # pass-through, client->server capped at 256 kB/s in all
    proxy.reset()              # every open connection gets an RST; new ones are reset at once
    proxy.down()               # nothing listens on the port (connection refused); open ones RST
    proxy.blackhole()          # accepts, never forwards or answers: a half-open link
    proxy.passthrough()        # back to normal (latency and bandwidth limits cleared)
    proxy.hold("^POST .*[?]uploads ")  # the 1st such request reaches the server in full;
    proxy.held.wait(30)        #   its answer never comes back (the client waits), until
    proxy.stop()               #   the client dies: a crash at a precise point, no patching

Latency and bandwidth together are a link: a delay line that holds each chunk for the
one-way delay without slowing the stream behind it, and one uplink rate shared by every
connection, as a field office's single uplink is (not a cap per connection).

`bytes_up` / `bytes_down` count what was forwarded each way, `connections` what was accepted,
`requests` the HTTP request lines seen (in the order their requests were fully forwarded).

As a process of its own (the benchmarks use it so, to keep it off their GIL):
    python -m tests.bridge.faultproxy --upstream 9000 --port 9001 --latency 0.02 \
        --bandwidth 8000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal

Mode = Literal["pass", "reset", "down", "blackhole"]
_CHUNK = 64 * 1024


class FaultProxy:
    """A TCP proxy from a free loopback port to `host:port`, with switchable faults."""

    def __init__(self, host: str, port: int, listen_port: int | None = None) -> None:
        self.upstream = (host, port)
        self.port = listen_port or _free_port()
        self.mode: Mode = "pass"
        self.latency_s = 0.0
        self.bytes_per_s = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self.requests: list[str] = []
        self.held = threading.Event()  # set once the held request's answer arrived
        self.held_request: str | None = None
        self._hold: tuple[re.Pattern[str], int] | None = None
        self._hold_seen = 0
        self._uplink_free = 0.0  # loop time when the shared uplink has sent all it was given
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`: the endpoint clients use instead of the upstream's."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Start the loop thread and listen; returns self."""
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        """Close every connection and the listener, and end the thread."""
        self._run(self._shutdown(close_listener=True))
        self._run(self._cancel_tasks())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def passthrough(self) -> None:
        """Forward everything unchanged (clears latency, bandwidth and hold; listens again)."""
        self.latency_s, self.bytes_per_s = 0.0, 0
        self._hold = None
        self._set("pass")

    def latency(self, seconds: float) -> None:
        """Pass-through with every byte delivered `seconds` late, each way (RTT: twice that)."""
        self.latency_s = seconds
        self._set("pass")

    def bandwidth(self, bytes_per_s: int) -> None:
        """Pass-through with client->server bytes of all connections together capped at
        `bytes_per_s` (0: no cap)."""
        self.bytes_per_s = bytes_per_s
        self._set("pass")

    def reset(self) -> None:
        """Send an RST on every open connection and on each new one."""
        self._set("reset")

    def down(self) -> None:
        """Stop listening (new connections are refused) and RST the open ones."""
        self._set("down")

    def blackhole(self) -> None:
        """Accept connections and swallow what arrives; never forward, never answer."""
        self._set("blackhole")

    def hold(self, pattern: str, nth: int = 1) -> None:
        """Forward the `nth` request whose request line matches `pattern` (a regex, searched
        in e.g. `PUT /bkt/key?partNumber=2&uploadId=x HTTP/1.1`) in full, then keep its
        answer (and anything after it on that connection) from the client; `held` is set
        when the answer arrives. Other requests pass."""
        self._hold_seen, self.held_request = 0, None
        self.held.clear()
        self._hold = (re.compile(pattern), nth)

    def _finished(self, line: str) -> bool:
        """A request was forwarded in full; True when its answer is to be held."""
        self.requests.append(line)
        if self._hold is None or not self._hold[0].search(line):
            return False
        self._hold_seen += 1
        if self._hold_seen != self._hold[1]:
            return False
        self._hold, self.held_request = None, line
        return True

    def _set(self, mode: Mode) -> None:
        self._run(self._switch(mode))

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _switch(self, mode: Mode) -> None:
        self.mode = mode
        if mode in ("reset", "down"):
            await self._shutdown(close_listener=mode == "down")
        if mode != "down" and self._server is None:
            await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _shutdown(self, close_listener: bool) -> None:
        if close_listener and self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            _rst(writer)
        self._writers.clear()

    async def _cancel_tasks(self) -> None:
        # The connections were just reset, so their tasks end on their own; cancelling a
        # connection's own task makes asyncio log it as an error, so only stragglers are.
        tasks = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        if tasks:
            _, stragglers = await asyncio.wait(tasks, timeout=2)
            for task in stragglers:
                task.cancel()
            await asyncio.gather(*stragglers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "reset":
            _rst(writer)
            return
        self._writers.add(writer)
        try:
            if self.mode == "blackhole":
                await self._swallow(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                _rst(writer)
                return
            self._writers.add(up_writer)
            exchange = _Exchange()
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, upstream=True, exchange=exchange),
                    self._pump(up_reader, writer, upstream=False, exchange=exchange),
                )
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(_CHUNK):
                pass

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: bool,
        exchange: _Exchange | None = None,
    ) -> None:
        # Reading is paced by the uplink (the bottleneck queue); delivery waits out the delay
        # in a task of its own, so the delay never lowers throughput.
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(line, writer, upstream))
        try:
            while data := await reader.read(_CHUNK):
                if self.mode == "blackhole":
                    await self._swallow(reader)  # a link that died mid-conversation
                    return
                if deliver.done():
                    await deliver  # it failed: the far side is gone (raises)
                if exchange is not None and upstream:
                    # Marked before the request's last bytes go on, so its answer cannot
                    # slip through ahead of the mark.
                    exchange.hold = exchange.hold or any(
                        [self._finished(line) for line in exchange.feed(data)]
                    )
                elif exchange is not None and exchange.hold:
                    self.held.set()
                    await self._swallow(reader)  # the client never hears back
                    return
                leaves = loop.time()
                if upstream and self.bytes_per_s:
                    leaves = max(leaves, self._uplink_free) + len(data) / self.bytes_per_s
                    self._uplink_free = leaves
                    await asyncio.sleep(leaves - loop.time())
                line.put_nowait((leaves + self.latency_s, data))
            line.put_nowait(None)
            await deliver
        except OSError:
            _rst(writer)
        finally:
            deliver.cancel()

    async def _deliver(
        self,
        line: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        upstream: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await line.get()) is not None:
            due, data = item
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            writer.write(data)
            await writer.drain()
            if upstream:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
        if writer.can_write_eof():
            writer.write_eof()


class _Exchange:
    """One connection's HTTP/1.1 requests, followed through their bytes (Content-Length
    bodies; requests on a connection come one after another, as aiohttp sends them)."""

    def __init__(self) -> None:
        self.hold = False  # the answer now due on this connection is kept from the client
        self._head = b""
        self._line = ""
        self._body_left = 0
        self._lost = False  # a body whose end cannot be told (chunked): stop following

    def feed(self, data: bytes) -> list[str]:
        """The request lines of the requests these client bytes finish."""
        done: list[str] = []
        while data and not self._lost:
            if self._body_left:
                take = min(self._body_left, len(data))
                self._body_left -= take
                data = data[take:]
                if not self._body_left:
                    done.append(self._line)
                continue
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return done
            head, data = self._head[:end].decode("latin-1"), self._head[end + 4 :]
            self._head = b""
            lines = head.split("\r\n")
            fields = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
            }
            self._lost = "chunked" in fields.get("transfer-encoding", "")
            self._line = lines[0]
            self._body_left = int(fields.get("content-length", "0") or 0)
            if not self._body_left:
                done.append(self._line)
        return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rst(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER with a zero timeout turns close() into an RST, as a dropped link looks.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def main(argv: list[str] | None = None) -> int:
    """Run one proxy to 127.0.0.1:`--upstream` with a fixed link until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description="A loopback link proxy")
    parser.add_argument("--upstream", type=int, required=True, help="upstream port")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--latency", type=float, default=0.0, help="one-way delay, s")
    parser.add_argument("--bandwidth", type=int, default=0, help="uplink bytes/s (0: none)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    proxy = FaultProxy("127.0.0.1", args.upstream, listen_port=args.port).start()
    proxy.latency(args.latency)
    proxy.bandwidth(args.bandwidth)
    print(f"listening on {proxy.url}", flush=True)
    stop.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
