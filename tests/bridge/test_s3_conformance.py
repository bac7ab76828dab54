"""What the bridge relies on from an S3 server, checked on each real server the tests run.

Every request here is one the bridge sends (bridge/blobsend.py, multipart.py, transfer.py,
daemon.py), with the same arguments. Where a server does not do what S3 does, its case is
a strict xfail whose reason says exactly what it does instead: the test fails loudly the
day the server starts conforming, and docs/bridge.md ("What the bridge needs from an S3
server") lists the same findings.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bridge.transfer import combine, crc_b64, crc_of
from tests.bridge.conftest import SERVERS
from tests.bridge.s3server import ACCESS_KEY, REGION, SECRET_KEY, Bucket
from tests.bridge.uploadbox import MIB, blob_bytes

Client = Any


def servers(**differs: str) -> list[Any]:
    """`s3_server` params: each server, a strict xfail with its reason where it differs."""
    # raises=AssertionError: only the difference named counts, not a broken connection.
    return [
        pytest.param(s, id=s, marks=pytest.mark.xfail(
            strict=True, raises=AssertionError, reason=differs[s]))
        if s in differs
        else pytest.param(s, id=s)
        for s in SERVERS
    ]  # fmt: skip


def client_for(bucket: Bucket) -> Client:
    """A boto3 client configured as the bridge's is: checksums only where we ask for them."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=bucket.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=16,
        ),
    )


def refused(call: Callable[[], Any]) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a call that must fail; AssertionError if it succeeds."""
    try:
        call()
    except ClientError as exc:
        meta = exc.response.get("ResponseMetadata", {})
        return int(meta.get("HTTPStatusCode", 0)), str(exc.response["Error"].get("Code"))
    raise AssertionError("the server accepted the request")


def put(s3: Client, bucket: Bucket, key: str, data: bytes, crc: str | None = None) -> Any:
    """The bridge's small-blob PutObject: CRC64NVME given, and `If-None-Match: *`."""
    return s3.put_object(
        Bucket=bucket.name, Key=key, Body=data, ChecksumAlgorithm="CRC64NVME",
        ChecksumCRC64NVME=crc or crc_b64(crc_of(data)), IfNoneMatch="*",
        ContentType="application/octet-stream",
        Metadata={"asset-id": "site1.0001", "filename": "walk%20one.mp4"},
    )  # fmt: skip


def head(s3: Client, bucket: Bucket, key: str) -> tuple[int, str | None]:
    """(size, CRC64NVME) as the bridge's verifying HeadObject reads them."""
    r = s3.head_object(Bucket=bucket.name, Key=key, ChecksumMode="ENABLED")
    return int(r["ContentLength"]), r.get("ChecksumCRC64NVME")


def body(s3: Client, bucket: Bucket, key: str) -> bytes:
    """An object's bytes."""
    data: bytes = s3.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    return data


def multipart(
    s3: Client, bucket: Bucket, key: str, parts: list[bytes], full: str | None = None
) -> Any:
    """The bridge's large-blob upload: FULL_OBJECT CRC64NVME, checksummed parts, and a
    CompleteMultipartUpload with the full-object checksum and `If-None-Match: *`."""
    upload_id = s3.create_multipart_upload(
        Bucket=bucket.name, Key=key, ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
    )["UploadId"]
    listing, whole = [], 0
    for number, data in enumerate(parts, 1):
        crc = crc_of(data)
        whole = combine(whole, crc, len(data))
        r = s3.upload_part(
            Bucket=bucket.name, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
            ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=crc_b64(crc),
        )  # fmt: skip
        listing.append({"PartNumber": number, "ETag": r["ETag"], "ChecksumCRC64NVME": crc_b64(crc)})
    return s3.complete_multipart_upload(
        Bucket=bucket.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listing},
        ChecksumCRC64NVME=full or crc_b64(whole), ChecksumType="FULL_OBJECT",
        MpuObjectSize=sum(map(len, parts)), IfNoneMatch="*",
    )  # fmt: skip


@pytest.mark.parametrize("s3_server", servers(), indirect=True)
def test_conditional_put_stores_once_and_refuses_an_existing_key(s3_bucket: Bucket) -> None:
    s3 = client_for(s3_bucket)
    data = blob_bytes(100_000, 1)
    put(s3, s3_bucket, "blobs/a", data)
    assert head(s3, s3_bucket, "blobs/a") == (len(data), crc_b64(crc_of(data)))
    meta = s3.head_object(Bucket=s3_bucket.name, Key="blobs/a")
    assert meta["Metadata"] == {"asset-id": "site1.0001", "filename": "walk%20one.mp4"}
    assert meta["ContentType"] == "application/octet-stream"

    other = blob_bytes(100_000, 2)
    assert refused(lambda: put(s3, s3_bucket, "blobs/a", other)) == (412, "PreconditionFailed")
    assert body(s3, s3_bucket, "blobs/a") == data
    assert head(s3, s3_bucket, "blobs/a") == (len(data), crc_b64(crc_of(data)))


@pytest.mark.parametrize("s3_server", servers(), indirect=True)
def test_racing_conditional_puts_leave_exactly_one_winner(s3_bucket: Bucket) -> None:
    # `fieldbox sync now` beside the daemon: both may PUT the same key at once.
    s3 = client_for(s3_bucket)
    datas = [blob_bytes(20_000, 10 + i) for i in range(6)]

    def one(i: int) -> int:
        try:
            put(s3, s3_bucket, "blobs/race", datas[i])
            return 200
        except ClientError as exc:
            return int(exc.response["ResponseMetadata"]["HTTPStatusCode"])

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(one, range(6)))
    assert sorted(statuses) == [200] + [412] * 5
    assert body(s3, s3_bucket, "blobs/race") == datas[statuses.index(200)]


@pytest.mark.parametrize(
    "s3_server",
    servers(moto="moto 5.2 stores a PutObject whose x-amz-checksum-crc64nvme does not match "
                 "the body (200), and HEAD then reports the CRC of the bytes it got"),
    indirect=True,
)  # fmt: skip
def test_a_put_whose_checksum_does_not_match_is_refused(s3_bucket: Bucket) -> None:
    s3 = client_for(s3_bucket)
    data = blob_bytes(50_000, 3)
    wrong = crc_b64(crc_of(b"not these bytes"))
    status, code = refused(lambda: put(s3, s3_bucket, "blobs/bad", data, crc=wrong))
    assert (status, code) in ((400, "BadDigest"), (400, "InvalidRequest"))
    assert refused(lambda: s3.head_object(Bucket=s3_bucket.name, Key="blobs/bad"))[0] == 404


@pytest.mark.parametrize("s3_server", servers(), indirect=True)
def test_multipart_full_object_crc64nvme_is_what_head_reports(s3_bucket: Bucket) -> None:
    s3 = client_for(s3_bucket)
    parts = [blob_bytes(5 * MIB, 4), blob_bytes(1234, 5)]
    multipart(s3, s3_bucket, "blobs/big", parts)
    whole = b"".join(parts)
    assert head(s3, s3_bucket, "blobs/big") == (len(whole), crc_b64(crc_of(whole)))
    r = s3.head_object(Bucket=s3_bucket.name, Key="blobs/big", ChecksumMode="ENABLED")
    assert r.get("ChecksumType") == "FULL_OBJECT"
    assert body(s3, s3_bucket, "blobs/big") == whole


@pytest.mark.parametrize("s3_server", servers(), indirect=True)
def test_conditional_complete_refuses_an_existing_key_and_keeps_it(s3_bucket: Bucket) -> None:
    s3 = client_for(s3_bucket)
    first = blob_bytes(70_000, 6)
    put(s3, s3_bucket, "blobs/c", first)
    status = refused(lambda: multipart(s3, s3_bucket, "blobs/c", [blob_bytes(9000, 7)]))
    assert status == (412, "PreconditionFailed")
    assert body(s3, s3_bucket, "blobs/c") == first
    assert head(s3, s3_bucket, "blobs/c") == (len(first), crc_b64(crc_of(first)))


@pytest.mark.parametrize(
    "s3_server",
    servers(moto="moto 5.2 completes an upload whose full-object x-amz-checksum-crc64nvme "
                 "does not match its parts (200) and stores the object"),
    indirect=True,
)  # fmt: skip
def test_a_complete_whose_full_object_checksum_does_not_match_is_refused(
    s3_bucket: Bucket,
) -> None:
    s3 = client_for(s3_bucket)
    wrong = crc_b64(crc_of(b"not these bytes"))
    status, code = refused(lambda: multipart(s3, s3_bucket, "blobs/d", [b"abc"], full=wrong))
    assert status == 400 and code in ("BadDigest", "InvalidRequest")
    assert refused(lambda: s3.head_object(Bucket=s3_bucket.name, Key="blobs/d"))[0] == 404


@pytest.mark.parametrize(
    "s3_server",
    servers(moto="moto 5.2 answers 500 InternalError, not 404 NoSuchUpload, to an UploadPart "
                 "for an aborted upload"),
    indirect=True,
)  # fmt: skip
def test_listed_uploads_and_abort(s3_bucket: Bucket) -> None:
    s3 = client_for(s3_bucket)
    key = "fieldbox/acme/eu/site1/blobs/" + "ab" * 32
    upload_id = s3.create_multipart_upload(
        Bucket=s3_bucket.name, Key=key, ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
    )["UploadId"]
    s3.create_multipart_upload(Bucket=s3_bucket.name, Key="elsewhere/x")
    listed = s3.list_multipart_uploads(Bucket=s3_bucket.name, Prefix="fieldbox/")
    assert [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])] == [(key, upload_id)]
    part = s3.upload_part(
        Bucket=s3_bucket.name, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 100,
        ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=crc_b64(crc_of(b"x" * 100)),
    )  # fmt: skip
    parts = s3.list_parts(Bucket=s3_bucket.name, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [(1, 100, part["ETag"])]

    s3.abort_multipart_upload(Bucket=s3_bucket.name, Key=key, UploadId=upload_id)
    listed = s3.list_multipart_uploads(Bucket=s3_bucket.name, Prefix="fieldbox/")
    assert listed.get("Uploads", []) == []
    gone = refused(lambda: s3.list_parts(Bucket=s3_bucket.name, Key=key, UploadId=upload_id))
    assert gone == (404, "NoSuchUpload")
    late = lambda: s3.upload_part(  # noqa: E731
        Bucket=s3_bucket.name, Key=key, UploadId=upload_id, PartNumber=2, Body=b"late"
    )
    assert refused(late) == (404, "NoSuchUpload")


@pytest.mark.parametrize(
    "s3_server",
    servers(
        moto="moto 5.2's ListParts reports no ChecksumCRC64NVME per part",
        seaweedfs="SeaweedFS 4.48's ListParts reports no ChecksumCRC64NVME per part",
    ),
    indirect=True,
)
def test_list_parts_reports_each_parts_checksum(s3_bucket: Bucket) -> None:
    # Not required: without it a resumed upload sends every part again (correct, slower).
    s3 = client_for(s3_bucket)
    upload_id = s3.create_multipart_upload(
        Bucket=s3_bucket.name, Key="blobs/e", ChecksumAlgorithm="CRC64NVME",
        ChecksumType="FULL_OBJECT",
    )["UploadId"]  # fmt: skip
    crc = crc_b64(crc_of(b"y" * 100))
    s3.upload_part(
        Bucket=s3_bucket.name, Key="blobs/e", UploadId=upload_id, PartNumber=1, Body=b"y" * 100,
        ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=crc,
    )  # fmt: skip
    parts = s3.list_parts(Bucket=s3_bucket.name, Key="blobs/e", UploadId=upload_id)["Parts"]
    s3.abort_multipart_upload(Bucket=s3_bucket.name, Key="blobs/e", UploadId=upload_id)
    assert [p.get("ChecksumCRC64NVME") for p in parts] == [crc]


@pytest.mark.parametrize("s3_server", servers(), indirect=True)
def test_missing_keys_and_buckets_are_404(s3_bucket: Bucket) -> None:
    s3 = client_for(s3_bucket)
    assert refused(lambda: s3.head_object(Bucket=s3_bucket.name, Key="blobs/none"))[0] == 404
    assert refused(lambda: s3.head_bucket(Bucket=s3_bucket.name + "-none"))[0] == 404
    s3.head_bucket(Bucket=s3_bucket.name)


@pytest.mark.parametrize(
    "s3_server",
    servers(moto="moto 5.2 stores an UploadPart whose x-amz-checksum-crc64nvme does not match "
                 "the body (200)"),
    indirect=True,
)  # fmt: skip
def test_a_part_whose_checksum_does_not_match_is_refused(s3_bucket: Bucket) -> None:
    s3 = client_for(s3_bucket)
    upload_id = s3.create_multipart_upload(
        Bucket=s3_bucket.name, Key="blobs/f", ChecksumAlgorithm="CRC64NVME",
        ChecksumType="FULL_OBJECT",
    )["UploadId"]  # fmt: skip
    wrong = crc_b64(crc_of(b"not these bytes"))
    try:
        status, code = refused(lambda: s3.upload_part(
            Bucket=s3_bucket.name, Key="blobs/f", UploadId=upload_id, PartNumber=1,
            Body=b"z" * 100, ChecksumAlgorithm="CRC64NVME", ChecksumCRC64NVME=wrong,
        ))  # fmt: skip
        parts = s3.list_parts(Bucket=s3_bucket.name, Key="blobs/f", UploadId=upload_id)
    finally:
        s3.abort_multipart_upload(Bucket=s3_bucket.name, Key="blobs/f", UploadId=upload_id)
    assert status == 400 and code in ("BadDigest", "InvalidRequest")
    assert parts.get("Parts", []) == []
