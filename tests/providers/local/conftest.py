"""What the local provider's tests share: a place with resource roots and a directory outside them,
and both ways of resolving a path below a root."""

from __future__ import annotations

import os

import pytest

from opencbr.system import beneath


@pytest.fixture(params=["openat2", "openat-walk"])
def resolver(request, monkeypatch):
    """Both ways of resolving: the kernel's openat2, and one openat(O_NOFOLLOW) per component."""
    monkeypatch.setattr(beneath, "_openat2_missing", request.param == "openat-walk")
    return request.param


@pytest.fixture()
def place(tmp_path):
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    (roots / "a" / "fs").mkdir(parents=True)
    outside.mkdir()
    (roots / "a" / "bd.img").write_bytes(os.urandom(64 * 1024))
    (outside / "secret.img").write_bytes(b"SECRET" * 10000)
    (outside / "fs").mkdir()
    return roots, outside
