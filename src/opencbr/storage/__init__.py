"""Object-store backends behind one small interface (docs/design.md).

Public API::

    from opencbr.storage import ObjectStore, ObjectInfo, StoreCapabilities, LocalStore, S3Store, open_store

    store = open_store("file:///var/lib/opencbr/objects")
    store = open_store("s3://bucket/some/prefix?endpoint_url=http://127.0.0.1:9000&region=us-east-1"
                       "&access_key=AK&secret_key=SK")   # or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY

Nothing above ``storage/`` knows which backend it has.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlparse

from .base import ObjectInfo, ObjectStore, StoreCapabilities
from .errors import BadStoreURL, StoreError
from .local import LocalStore


def __getattr__(name: str):
    # S3Store is loaded lazily so that importing opencbr.storage does not import boto3.
    if name == "S3Store":
        from .s3 import S3Store

        return S3Store
    raise AttributeError(name)


def open_store(url: str) -> ObjectStore:
    """Open a store from a URL.

    - ``file:///abs/path`` -> :class:`LocalStore` rooted there (created if missing).
    - ``s3://bucket/prefix?endpoint_url=...&region=...&access_key=...&secret_key=...`` ->
      :class:`S3Store`. Keys fall back to ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, the endpoint
      to ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, the region to ``AWS_DEFAULT_REGION``/``AWS_REGION``.
    """
    u = urlparse(url)
    if u.scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise BadStoreURL(f"file store URL must be file:///absolute/path, got {url!r}")
        path = unquote(u.path)
        if not path.startswith("/"):
            raise BadStoreURL(f"file store URL must hold an absolute path: {url!r}")
        return LocalStore(path)
    if u.scheme == "s3":
        from .s3 import S3Store

        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        if not u.netloc:
            raise BadStoreURL(f"s3 store URL needs a bucket: {url!r}")
        return S3Store(
            bucket=u.netloc,
            prefix=unquote(u.path).lstrip("/"),
            endpoint_url=q.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
            region=q.get("region") or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1",
            access_key=q.get("access_key") or os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=q.get("secret_key") or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )
    raise BadStoreURL(f"unsupported store URL scheme {u.scheme!r} (use file:// or s3://)")


__all__ = ["ObjectInfo", "ObjectStore", "StoreCapabilities", "LocalStore", "S3Store", "open_store", "StoreError",
           "BadStoreURL"]
