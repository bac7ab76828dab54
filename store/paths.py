"""The on-disk layout under the data root, and validation of every client-supplied name in it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from store.errors import InvalidName

# Ids that become path components: no dots, no slashes, no leading dash, bounded length.
# Each is applied with fullmatch: `$` would also match before a trailing "\n".
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# Document collections and keys live only in SQLite, but are URL parts too: allow a
# few more characters, never a slash, never "..".
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@=+-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_id(kind: str, value: str) -> str:
    """Return `value` if it is a safe id (location, account, geo prefix, project), else raise."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidName(
            f"invalid {kind} {value!r}: use 1-128 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_key(kind: str, value: str) -> str:
    """Return `value` if it is a safe document collection or key, else raise."""
    if not isinstance(value, str) or not _KEY.fullmatch(value) or ".." in value:
        raise InvalidName(
            f"invalid {kind} {value!r}: use 1-255 letters, digits or _ . : @ = + -, "
            "no '..' and no '/'"
        )
    return value


def is_decimal(value: str) -> bool:
    """Whether `value` is one or more ASCII digits (`str.isdigit` also takes '²' or '٣')."""
    return value.isascii() and value.isdigit()


def check_label(kind: str, value: str) -> str:
    """Return `value` if it is a usable free-text label (a project name), else raise.

    Labels only ever reach SQLite as parameters, never a path, so spaces are fine.
    """
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 200
        or value != value.strip()
        or value in (".", "..")
        or any(ord(c) < 32 or c in "/\\\x7f" for c in value)
    ):
        raise InvalidName(
            f"invalid {kind} {value!r}: 1-200 characters, not '.' or '..', no slashes, "
            "control characters or surrounding spaces"
        )
    return value


def check_sha256(value: str) -> str:
    """Return `value` if it is a lowercase hex sha256 digest, else raise."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidName(f"invalid sha256 {value!r}: expected 64 lowercase hex digits")
    return value


@dataclass(frozen=True)
class Layout:
    """Paths of everything under one data root (see DESIGN.md, 'Data on disk')."""

    root: Path

    @property
    def locations_dir(self) -> Path:
        """Directory holding one folder per location."""
        return self.root / "locations"

    @property
    def locations_create_lock(self) -> Path:
        """The flock that serialises location creation across processes."""
        return self.locations_dir / ".create.lock"

    def location_dir(self, account: str, geo_prefix: str, location: str) -> Path:
        """Folder of one location's database."""
        return self.locations_dir / account / geo_prefix / location

    def location_db(self, account: str, geo_prefix: str, location: str) -> Path:
        """Path of one location's SQLite database."""
        return self.location_dir(account, geo_prefix, location) / "location.db"

    @property
    def blobs_dir(self) -> Path:
        """The content-addressed blob store, one folder per location."""
        return self.root / "blobs"

    def blob_path(self, account: str, geo_prefix: str, location: str, sha256: str) -> Path:
        """Path of a content-addressed blob."""
        check_sha256(sha256)
        return self.blobs_dir / account / geo_prefix / location / sha256[:2] / sha256

    @property
    def uploads_dir(self) -> Path:
        """Folder of in-flight resumable uploads."""
        return self.root / "uploads"

    def upload_part(self, upload_id: str) -> Path:
        """Partial file of one resumable upload."""
        return self.uploads_dir / f"{check_id('upload id', upload_id)}.part"

    @property
    def uploads_boot_id(self) -> Path:
        """The kernel boot id the upload sessions were last recovered in."""
        return self.uploads_dir / "boot_id"

    @property
    def uploads_db(self) -> Path:
        """Database of resumable-upload sessions."""
        return self.root / "uploads.db"

    @property
    def api_lock(self) -> Path:
        """The flock one api holds on the data root for its whole life."""
        return self.root / "api.lock"

    @property
    def keys_db(self) -> Path:
        """Database of API keys (hashed)."""
        return self.root / "keys.db"

    @property
    def queue_db(self) -> Path:
        """Database of the job queue: jobs and job events."""
        return self.root / "queue.db"

    @property
    def outbox_db(self) -> Path:
        """Database of what the bridge still owes S3."""
        return self.root / "outbox.db"

    @property
    def jobs_dir(self) -> Path:
        """Work folders of jobs: `{job_id}/...`, stage checkpoints."""
        return self.root / "jobs"

    def job_dir(self, job_id: str) -> Path:
        """One job's work folder: stage outputs and checkpoints."""
        return self.jobs_dir / job_id

    @property
    def workers_dir(self) -> Path:
        """Worker processes' status files, read by the api."""
        return self.root / "workers"

    def worker_status(self, worker_id: str) -> Path:
        """One worker process's status file."""
        return self.workers_dir / f"{worker_id}.json"

    @property
    def drain_flag(self) -> Path:
        """The box's drain flag: while it exists, workers claim no new jobs."""
        return self.root / "drain"

    @property
    def bridge_dir(self) -> Path:
        """The bridge daemon's own state."""
        return self.root / "bridge"

    @property
    def bridge_status(self) -> Path:
        """The bridge's last status, for the api's /health and `fieldbox sync status`."""
        return self.bridge_dir / "status.json"

    @property
    def litestream_config(self) -> Path:
        """The `litestream.yml` the bridge writes and runs Litestream with."""
        return self.bridge_dir / "litestream.yml"

    @property
    def litestream_log(self) -> Path:
        """Litestream's stdout and stderr."""
        return self.bridge_dir / "litestream.log"

    @property
    def uploader_lock(self) -> Path:
        """Byte-range locks, one byte per outbox row, held while a row uploads."""
        return self.bridge_dir / "uploader.lock"

    @property
    def drill_verdict(self) -> Path:
        """The last restore drill's verdict."""
        return self.bridge_dir / "drill.json"

    @property
    def telemetry_journal(self) -> Path:
        """The telemetry shipper's journal: batches in flight and the next key's seq."""
        return self.bridge_dir / "telemetry.json"

    @property
    def telemetry_lock(self) -> Path:
        """The flock a telemetry shipping round holds on the spool."""
        return self.bridge_dir / "telemetry.lock"

    @property
    def ask_gateway_token(self) -> Path:
        """The api's own gateway key (scope `gateway`), for the answers `ask` writes (0600)."""
        return self.root / "api" / "gateway.token"

    @property
    def up_status(self) -> Path:
        """`fieldbox up`'s status: its children and their restarts."""
        return self.root / "up" / "status.json"

    @property
    def up_log(self) -> Path:
        """Every child's log lines under `fieldbox up`, teed into one file."""
        return self.root / "logs" / "up.log"

    @property
    def telemetry_dir(self) -> Path:
        """The telemetry spool (JSON lines, shipped by the bridge)."""
        return self.root / "telemetry"

    @property
    def models_dir(self) -> Path:
        """The model registry: `{slot}/{version}/` and `{slot}/_latest.json`."""
        return self.root / "models"

    @property
    def tmp_dir(self) -> Path:
        """Scratch space on the same filesystem, so renames out of it are atomic."""
        return self.root / "tmp"

    def ensure(self) -> None:
        """Create the top-level folders."""
        for d in (self.root, self.locations_dir, self.uploads_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
