"""Which errors mean storage ran out, and what the task or the API then says (issue 11 item 7). The
full file system itself is exercised in tests/api/test_storage_full.py; a PostgreSQL server whose disk is
full cannot be made here, so its error is checked as psycopg raises it, inside SQLAlchemy's wrapper."""

from __future__ import annotations

import errno
import sqlite3

import psycopg.errors
import sqlalchemy.exc

from opencbr.config import load_settings
from opencbr.services import tasks
from opencbr.services.context import open_context


def context(tmp_path):
    return open_context(load_settings(env={}, data_dir=str(tmp_path)))


def test_storage_full_errors_name_what_ran_out(tmp_path):
    ctx = context(tmp_path)
    try:
        pg = sqlalchemy.exc.OperationalError("INSERT ...", {}, psycopg.errors.DiskFull("could not extend file"))
        lite = sqlalchemy.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))
        for e in (pg, lite):
            err = tasks.error_of(ctx, e)
            assert err.code == "BackupService.6012" and err.status == 503 and "catalog" in err.message
        named = OSError(errno.ENOSPC, "No space left on device", f"{tmp_path}/objects/vaults/v/data/ab/abc")
        err = tasks.error_of(ctx, named)
        assert err.code == "BackupService.6012" and f"the object store at {tmp_path}/objects" in err.message
        try:  # raised while handling another: the chain is followed
            try:
                raise OSError(errno.EDQUOT, "Disk quota exceeded")
            except OSError as inner:
                raise RuntimeError("upload failed") from inner
        except RuntimeError as outer:
            assert tasks.error_of(ctx, outer).code == "BackupService.6012"
        other = tasks.error_of(ctx, OSError(errno.EIO, "Input/output error"))
        assert other.code == "BackupService.9999" and "OSError" in other.message
    finally:
        ctx.close()
