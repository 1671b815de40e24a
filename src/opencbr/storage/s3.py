"""``S3Store``: an object store in an S3 bucket under a key prefix (any S3-compatible server).

- put_if_absent uses a conditional PUT (``If-None-Match: *``), which S3, MinIO, Ceph RGW and moto
  honour atomically; a 412 answer means someone else created the key first.
- Every S3 PUT is durable when it returns, so ``sync`` is ignored and :meth:`flush` is a no-op.
- The boto3 *client* is thread-safe; we size its connection pool for the engine's writer threads.
"""

from __future__ import annotations

from typing import Iterator

from .base import ObjectInfo, ObjectStore, StoreCapabilities


class S3Store(ObjectStore):
    """Objects ``<prefix><key>`` in ``bucket``. Creates the bucket if it does not exist."""

    # remote (no local root), and its boto3 client's connection pool must not be shared with a fork
    capabilities = StoreCapabilities(local_root=None, fork_safe=False)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        create_bucket: bool = True,
        max_connections: int = 16,
    ):
        import boto3  # imported lazily: a process on a local store does not pay for botocore
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        cfg = Config(
            max_pool_connections=max_connections,
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=cfg,
        )
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
            kwargs = {"Bucket": self.bucket}
            if self.region and self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self._client.create_bucket(**kwargs)
            except ClientError as e2:
                if e2.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def _k(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key {key!r}")
        return self.prefix + key

    def put_if_absent(self, key: str, data, *, sync: bool = True) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._k(key), Body=bytes(data), IfNoneMatch="*")
        except ClientError as e:
            err = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 412 or err.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def put(self, key: str, data, *, sync: bool = True) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._k(key), Body=bytes(data))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        from botocore.exceptions import ClientError

        kwargs = {"Bucket": self.bucket, "Key": self._k(key)}
        if start is not None or end is not None:
            s = start or 0
            if end is not None:
                if end <= s:
                    if self.head(key) is None:
                        raise KeyError(key)
                    return b""
                kwargs["Range"] = f"bytes={s}-{end - 1}"
            else:
                kwargs["Range"] = f"bytes={s}-"
        try:
            resp = self._client.get_object(**kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise KeyError(key) from None
            if code == "InvalidRange":  # start at/after the end of the object
                return b""
            raise
        with resp["Body"] as body:
            return body.read()

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(key, int(resp["ContentLength"]), resp["LastModified"].timestamp())

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self._client.get_paginator("list_objects_v2")
        n = len(self.prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", ()):
                yield obj["Key"][n:], int(obj["Size"])

    def delete(self, key: str) -> None:
        # S3 DeleteObject already succeeds for missing keys.
        self._client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def close(self) -> None:
        self._client.close()

    def url(self) -> str:
        from urllib.parse import urlencode

        q = {}
        if self.endpoint_url:
            q["endpoint_url"] = self.endpoint_url
        if self.region:
            q["region"] = self.region
        return f"s3://{self.bucket}/{self.prefix}" + (f"?{urlencode(q)}" if q else "")

    def __repr__(self) -> str:
        return f"S3Store({self.bucket!r}, {self.prefix!r}, endpoint_url={self.endpoint_url!r})"
