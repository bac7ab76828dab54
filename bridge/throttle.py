"""An asyncio token bucket that caps upload bandwidth, shared by every upload in a process.

Sync windows change the cap while uploads run (`set_rate`, callable from any thread); waiters
re-reserve at the new rate at once instead of sleeping out a delay the old rate gave them.
"""

from __future__ import annotations

import asyncio
import time

# Bytes a fresh bucket may send at once, as seconds of the rate: small enough that
# bytes/elapsed stays near the cap, large enough that one chunk does not always wait.
_BURST_S = 0.25
_MIN_CHUNK = 16 * 1024
_MAX_CHUNK = 1024 * 1024


class Throttle:
    """A bandwidth cap in bytes per second across everything that shares it; 0 is no cap."""

    def __init__(self, rate: int = 0, burst_s: float = _BURST_S) -> None:
        self._rate = max(0, int(rate))
        self._burst_s = burst_s
        self._next = 0.0  # monotonic time by which every byte reserved so far is paid for
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self.bytes = 0

    @property
    def rate(self) -> int:
        """The current cap in bytes per second (0: none)."""
        return self._rate

    def set_rate(self, rate: int) -> None:
        """Change the cap (0 lifts it); safe to call from any thread."""
        rate = max(0, int(rate))
        if rate == self._rate:
            return
        self._rate = rate
        self._next = time.monotonic()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake()
        else:
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def chunk_size(self) -> int:
        """How many bytes to send per `acquire`: about an eighth of a second at the cap."""
        if self._rate <= 0:
            return _MAX_CHUNK
        return max(_MIN_CHUNK, min(_MAX_CHUNK, self._rate // 8))

    async def acquire(self, n: int) -> None:
        """Wait until `n` more bytes may be sent under the cap."""
        self.bytes += n
        while True:
            rate = self._rate
            if rate <= 0 or n <= 0:
                return
            now = time.monotonic()
            self._next = max(self._next, now - self._burst_s) + n / rate
            delay = self._next - now
            if delay <= 0:
                return
            if self._changed is None:
                self._loop = asyncio.get_running_loop()
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), delay)
                # The rate changed while we waited: reserve again under the new one.
            except TimeoutError:
                return
