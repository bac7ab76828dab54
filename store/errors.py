"""Errors the store raises; the API maps each to one HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class InvalidName(StoreError):
    """A client-supplied id, key or digest is malformed or unsafe."""


class NotFound(StoreError):
    """The addressed location, document, asset or upload does not exist."""


class Conflict(StoreError):
    """The thing being created already exists."""


class PreconditionFailed(StoreError):
    """An If-Match / If-None-Match precondition did not hold; nothing was changed."""


class InvalidDocument(StoreError):
    """A document body is not valid JSON or is too large."""


class DiskFull(StoreError):
    """The filesystem ran out of space; nothing was half-written."""


class ChecksumMismatch(StoreError):
    """Bytes did not match the checksum the client declared."""


class QueueFull(StoreError):
    """The job queue is at its limit; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
