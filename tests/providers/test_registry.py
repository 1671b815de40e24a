"""A resource's provider is the one its ``provider`` column names; the installation's providers are
configured from its settings, explicitly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from opencbr.domain import resource as R
from opencbr.providers import registry
from opencbr.providers.agent import AgentProvider
from opencbr.providers.local.provider import LocalProvider


@dataclass
class Row:
    provider: str
    type: str = R.DISK
    path: str = "/nonexistent/disk.img"


def test_the_provider_column_chooses_and_an_unknown_provider_is_named(tmp_path):
    installed = registry.installed(resource_roots=(str(tmp_path),))
    local = installed.for_resource(Row("local"))
    assert isinstance(local, LocalProvider) and local is installed.default and local is installed.get("local")
    assert local.roots == (str(tmp_path),)
    assert isinstance(installed.for_resource(Row("agent")), AgentProvider)
    assert installed.for_resource(Row("agent")).capabilities.reads_on_host
    with pytest.raises(LookupError, match="'nfs'.*installed: agent, local"):
        installed.for_resource(Row("nfs"))


def test_presence_needs_no_configured_provider(tmp_path):
    (tmp_path / "disk.img").write_bytes(b"\0" * 4096)
    (tmp_path / "fs").mkdir()
    assert registry.present(Row("local", R.DISK, str(tmp_path / "disk.img")))
    assert registry.present(Row("local", R.FILE_SYSTEM, str(tmp_path / "fs")))
    assert not registry.present(Row("local", R.DISK, str(tmp_path / "fs" / "gone.img")))
    assert not registry.present(Row("local", R.FILE_SYSTEM, str(tmp_path / "disk.img")))
