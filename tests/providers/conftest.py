"""The providers the contract tests (test_contract.py) run against, each with a *kit*: the provider, set
up to confine tenants to one place, and the hands to put things in that place behind its back (as a
tenant or an operator would). A second provider adds its kit to ``KITS``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from opencbr.providers.base import Provider
from opencbr.providers.local.provider import LocalProvider


class LocalKit:
    """The local provider over a temporary directory: ``place/inside`` is its only root."""

    def __init__(self, place: Path):
        self.inside, self.outside = place / "inside", place / "outside"
        self.inside.mkdir()
        self.outside.mkdir()
        self.provider: Provider = LocalProvider(roots=(str(self.inside),))

    def path(self, rel: str) -> str:
        return str(self.inside / rel)

    def outside_path(self, rel: str) -> str:
        return str(self.outside / rel)

    def write(self, rel: str, data: bytes) -> None:
        """A disk image (or any file) with ``data``."""
        (self.inside / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.inside / rel).write_bytes(data)

    def mkdir(self, rel: str) -> None:
        (self.inside / rel).mkdir(parents=True)

    def read(self, rel: str) -> bytes:
        return (self.inside / rel).read_bytes()

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.inside / rel)

    def replace(self, rel: str) -> None:
        """Another object of the same kind at the path (a copy put in place of the original)."""
        target = self.inside / rel
        copy = target.with_name(target.name + ".copy")
        if target.is_dir():
            shutil.copytree(target, copy)
            shutil.rmtree(target)
        else:
            shutil.copyfile(target, copy)
            target.unlink()
        copy.rename(target)


KITS = {"local": LocalKit}


@pytest.fixture(params=sorted(KITS))
def kit(request, tmp_path):
    return KITS[request.param](tmp_path)
