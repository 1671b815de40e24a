"""cli/messages.py: what to do about a resource that cannot be used, by the service's reason."""

from __future__ import annotations

import pytest

from opencbr.cli.messages import _remedy

ID = "0b6f3c2e-5a1d-4c8e-9f00-123456789abc"


@pytest.mark.parametrize("reason, advice", [
    ("agent web1 (a-1) is offline (last answer: 2026-12-07 08:00:00 UTC): connection refused",
     "start the agent on its host"),
    ("agent web1 (a-1) is not enrolled: run opencbr-agent register on its host", "start the agent on its host"),
    ("agent web1 (a-1) was unregistered", "enrol the host again"),
    ("agent web1 (a-1) was uninstalled", "enrol the host again"),
    ("path /srv/www was removed from agent web1 (a-1)", "add the path again"),
    ("the disk image /srv/a.img is missing or cannot be read", "put it back"),
])
def test_the_remedy_fits_the_reason(reason, advice):
    """An offline agent is started, not removed from the inventory (that advice would lose the resource's
    vault); the remove command, where given, names the id (a name with a space needed quoting)."""
    said = _remedy(reason, "disk", ID)
    assert said.startswith(advice), said
    assert "remove" not in said or f"cbr disk remove {ID}" in said
    assert ("cbr disk remove" in said) == (advice != "start the agent on its host")
