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


# ------------------------------------------------------------------ the English word is not the field
@pytest.mark.parametrize("message, said", [
    ("the vault has no resources to back up; associate resources first",
     "the vault has no resources to back up; associate resources first"),
    ("agent web1 (a-1) was unregistered; enrol the host again and protect its new resources; or remove it",
     "agent web1 (a-1) was unregistered; enrol the host again and protect its new resources; or remove it"),
    ("replication vaults hold replicas, not resources; nothing can be migrated",
     "replication vaults hold replicas, not resources; nothing can be migrated"),
    ("resources must be a list of resource ids", "--resource must be a list of resource ids"),
    ("resources[0].id is not a resource of this project", "--resource is not a resource of this project"),
])
def test_only_the_resources_field_becomes_the_option(message, said):
    """``for_cli`` turned every "resources" into ``--resource``: "the vault has no --resource to back up;
    associate --resource first", "protect its new --resource" (found trying the agent docs, 2026-12-07)."""
    from opencbr.cli.messages import for_cli
    assert for_cli(message) == said


# ------------------------------------------------------- a file-system backup an agent read, restored
class _Inventory:
    def __init__(self, resource: dict | None):
        self.resource = resource

    def get(self, path: str) -> dict:
        from opencbr.cli.client import ClientError
        if self.resource is None:
            raise ClientError("not found", code="BackupService.6005")
        assert path == f"/inventory/file-systems/{ID}"
        return {"resource": self.resource}


@pytest.mark.parametrize("resource, hint", [
    ({"id": ID, "agent_id": "1017236f-eab3-48b3-b91b-88617cee74dd"},
     "--name NAME --agent 1017236f-eab3-48b3-b91b-88617cee74dd --path DIRECTORY (a directory on that agent's host)"),
    ({"id": ID, "agent_id": None}, "--name NAME --agent AGENT --path DIRECTORY (a directory on that agent's host)"),
    ({"id": ID, "host": "vm"}, "--name NAME --path DIRECTORY"),
    (None, "--name NAME --path DIRECTORY"),
])
def test_restoring_an_agents_file_system_backup_names_the_agent(resource, hint):
    """``cbr backup restore FS_BACKUP`` said to run ``cbr fs create-from-backup B --name NAME --path DIR``;
    without ``--agent`` that makes the directory on the service's machine, so a host's backup restored as
    told landed on the backup server. The hint names the agent the backup was read on."""
    from opencbr.cli.client import ClientError
    from opencbr.cli.messages import explain_restore_error
    e = ClientError("a file-system backup cannot be restored to the original file system",
                    code="BackupService.6429")
    said = explain_restore_error(_Inventory(resource), e, {"id": "b-1", "name": "bk1", "resource_id": ID}, None)
    assert said.message.endswith(f"cbr fs create-from-backup bk1 {hint}"), said.message
