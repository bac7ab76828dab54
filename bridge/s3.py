"""The S3 client every part of the bridge uses (aiobotocore), its credentials, and its keys.

Credentials, first found wins: `$CREDENTIALS_DIRECTORY/s3` (systemd `LoadCredential=`, an
AWS shared-credentials file), `[bridge.s3] credentials_file`, then botocore's own chain
(`$AWS_ACCESS_KEY_ID`/`$AWS_SECRET_ACCESS_KEY`, `~/.aws/credentials`, ...).
"""

from __future__ import annotations

import configparser
import os
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bridge.config import S3Config

# The client is typed loosely: aiobotocore generates its methods at run time.
S3Client = Any
# PutObject bodies under this size go without `Expect: 100-continue`. botocore asks for it
# on every file-like body, and waiting for S3's "100 Continue" costs a round trip per
# request; a refused small body wastes less than that wait (and a conditional write's 412
# comes only after S3 has read the whole body anyway). Parts keep it: a part sent to an
# upload S3 no longer has should come back as NoSuchUpload, not as a reset connection.
EXPECT_CONTINUE_MIN = 1024 * 1024


class CredentialsError(Exception):
    """A credentials file that exists but cannot be used."""


def read_credentials_file(path: Path) -> tuple[str, str, str | None]:
    """(access key, secret key, session token) from an AWS shared-credentials file."""
    parser = configparser.ConfigParser()
    try:
        parser.read_string(path.read_text())
    except (OSError, configparser.Error) as exc:
        raise CredentialsError(f"cannot read S3 credentials from {path}: {exc}") from exc
    section = "default" if parser.has_section("default") else (parser.sections() or [""])[0]
    if not section or not parser.has_option(section, "aws_access_key_id"):
        raise CredentialsError(f"{path} has no aws_access_key_id in a [default] profile")
    get = parser[section].get
    return (
        get("aws_access_key_id", ""),
        get("aws_secret_access_key", ""),
        get("aws_session_token") or None,
    )


def credentials(cfg: S3Config, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Explicit client keyword arguments for the keys, or {} to use botocore's chain."""
    env = os.environ if env is None else env
    path: Path | None = None
    if env.get("CREDENTIALS_DIRECTORY"):
        systemd = Path(env["CREDENTIALS_DIRECTORY"]) / "s3"
        path = systemd if systemd.is_file() else None
    if path is None and cfg.credentials_file:
        path = Path(cfg.credentials_file)  # configured: a missing file is an error
    if path is None:
        return {}
    access, secret, token = read_credentials_file(path)
    out = {"aws_access_key_id": access, "aws_secret_access_key": secret}
    if token:
        out["aws_session_token"] = token
    return out


def box_id(cfg: S3Config) -> str:
    """This box's name in S3 keys: the configured one, else the host name."""
    return cfg.box_id or socket.gethostname()


def key(cfg: S3Config, *parts: str) -> str:
    """An object key under the configured prefix."""
    return "/".join(p.strip("/") for p in (cfg.prefix, *parts) if p)


def location_key(cfg: S3Config, account: str, geo_prefix: str, location: str, *rest: str) -> str:
    """A key under a location's folder: `{prefix}/{account}/{geo_prefix}/{location}/...`."""
    return key(cfg, account, geo_prefix, location, *rest)


def blob_key(cfg: S3Config, account: str, geo_prefix: str, location: str, sha256: str) -> str:
    """Where a blob lives in S3 (content-addressed, written once)."""
    return location_key(cfg, account, geo_prefix, location, "blobs", sha256)


@asynccontextmanager
async def open_client(cfg: S3Config, *, max_pool: int = 10) -> AsyncIterator[S3Client]:
    """An aiobotocore S3 client for the configured target; closed on exit.

    botocore's own retries are off: the bridge retries whole items with its own backoff,
    so a dead link does not stall one call for minutes.
    """
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        connect_timeout=cfg.connect_timeout_s,
        read_timeout=cfg.read_timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_pool,
        s3={"addressing_style": cfg.addressing_style},
        # Checksums are chosen per call (CRC64NVME on every upload); do not add others.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = get_session()
    async with session.create_client(
        "s3",
        region_name=cfg.region,
        endpoint_url=cfg.endpoint_url or None,
        config=config,
        **credentials(cfg),
    ) as client:
        client.meta.events.register("before-sign.s3.PutObject", _no_continue_for_small_bodies)
        yield client


def _no_continue_for_small_bodies(request: Any, **_: Any) -> None:
    length = request.headers.get("Content-Length")
    if length is not None and int(length) < EXPECT_CONTINUE_MIN:
        del request.headers["Expect"]  # email.message-style headers: no error when absent
