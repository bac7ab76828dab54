"""Per-backend admission: a concurrency limit with a bounded wait queue, and a circuit breaker."""

from __future__ import annotations

import asyncio
import math
import time


class Saturated(Exception):
    """The backend is at its limit and its wait queue is full (or the wait ran out): a 429."""

    def __init__(self, backend: str, retry_after: int) -> None:
        super().__init__(f"backend {backend!r} is busy; retry in {retry_after} s")
        self.backend = backend
        self.retry_after = retry_after


class Deferred(Exception):
    """A background call (RFC 9218 `Priority: u=7`) while chat or completion calls run, or
    ran moments ago: a 503 with `Retry-After`, so the box's cores go to the crews first."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"background work waits while chat requests run; retry in {retry_after} s")
        self.retry_after = retry_after


class Limiter:
    """At most `concurrency` calls at once; up to `max_queue` more wait, each at most
    `queue_timeout_s`; anyone past that is turned away at once (backpressure, not collapse)."""

    def __init__(self, name: str, concurrency: int, max_queue: int, queue_timeout_s: float) -> None:
        self.name = name
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.active = 0
        self.waiting = 0
        self._sem = asyncio.Semaphore(concurrency)
        self._avg_s = 1.0  # running estimate of call time, for Retry-After

    def retry_after(self) -> int:
        """Seconds a refused caller should wait: the queue ahead of it, drained at our pace."""
        ahead = self.waiting + 1
        return max(1, min(60, math.ceil(self._avg_s * ahead / self.concurrency)))

    async def acquire(self) -> None:
        """Take a place (one of `concurrency`) or raise Saturated."""
        if self.active < self.concurrency and not self.waiting:
            await self._sem.acquire()  # free right now: does not block
            self.active += 1
            return
        if self.waiting >= self.max_queue:
            raise Saturated(self.name, self.retry_after())
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), self.queue_timeout_s)
        except TimeoutError:
            raise Saturated(self.name, self.retry_after()) from None
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self, seconds: float | None = None) -> None:
        """Give the place back; `seconds` (the call's duration) feeds the estimate."""
        self.active -= 1
        self._sem.release()
        if seconds is not None:
            self._avg_s = 0.8 * self._avg_s + 0.2 * seconds


class Breaker:
    """Opens after `failures` consecutive failures; stays open `cooldown_s`, then lets one
    trial call through (half-open): success closes it, failure opens it again."""

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.consecutive = 0
        self.open_until = 0.0
        self._trial = False

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open`."""
        if self.consecutive < self.failures:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "half-open"

    def allows(self) -> bool:
        """May a call go to this backend now?"""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        """A call (or probe) worked: close."""
        self.consecutive = 0
        self._trial = False

    def abandon(self) -> None:
        """A call `allows` let through never reached the backend: free the trial again."""
        self._trial = False

    def failure(self) -> None:
        """A call failed; past the threshold, (re)open."""
        self.consecutive += 1
        self._trial = False
        if self.consecutive >= self.failures:
            self.open_until = time.monotonic() + self.cooldown_s
