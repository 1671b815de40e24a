"""Every operation of the official SDK's ``CbrClient``, called once against a running OpenCBR, and a table
of what each answered.

The operations are found by reading the client class (each public method with an ``_<name>_http_info``
builder is one operation), never from a list kept here, so an SDK upgrade that adds operations shows up as
rows without a call plan ("no plan" is a row marked ``missing``). Each call is made with a minimal valid
request built from the SDK's own request and body models (a body field the model does not have fails
here, before anything is sent). The calls build their own little world as they go (a disk, a vault with
a backup, a policy, tags, ...) and tear it down at the end (the deletes are the last calls).

Each row is classed as

* ``implemented``: a 2xx answer;
* ``documented 4xx``: a 4xx whose body is a CBR error (``error_code`` of this service and an
  ``error_msg``), which names the reason (unknown id, not supported in a self-hosted installation, ...);
* ``missing``: a 404/405 for the route itself (``APIGW.0101``/``APIGW.0102``), a body that is not a CBR
  error, a 5xx, a connection failure, or no call plan.

Run it against a service (the configuration of ``cbr``, see ``opencbr.cli.client``; it needs the
operator's credentials, as it registers a disk at a path in ``--workdir``)::

    PYTHONPATH=src .venv/bin/python -m tools.sdk_coverage [--workdir DIR] [--json]

It exits 1 when any operation is ``missing``. ``tests/api/test_sdk_coverage.py`` runs it against the test
server.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import huaweicloudsdkcbr.v1 as sdk
import huaweicloudsdkcbr.v1.model as sdk_models
from huaweicloudsdkcbr.v1 import CbrClient
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import SdkException, ServiceResponseException
from huaweicloudsdkcore.http.http_config import HttpConfig

from opencbr.cli.client import ApiClient, ClientConfig

IMPLEMENTED, DOCUMENTED_4XX, MISSING = "implemented", "documented 4xx", "missing"
#: Error codes of the gateway itself: no such route, method not allowed.
ROUTE_MISSING_CODES = ("APIGW.0101", "APIGW.0102")
#: An id that names nothing (for operations on objects this run cannot make, such as agents).
NOBODY = "00000000-0000-4000-8000-000000000000"
DISK = "OS::Cinder::Volume"


# ------------------------------------------------------------------------------------ the SDK's operations
def sdk_operations(client_class: type = CbrClient) -> list[str]:
    """The public operations of the SDK's client class: every method with an ``_<name>_http_info``."""
    return sorted(name for name, fn in inspect.getmembers(client_class, callable)
                  if not name.startswith("_") and hasattr(client_class, f"_{name}_http_info"))


def http_route(op: str, client_class: type = CbrClient) -> tuple[str, str]:
    """The HTTP method and path template of an operation, as the SDK sends it."""
    info = getattr(client_class, f"_{op}_http_info")
    src = inspect.getsource(info)
    method = src.split('"method": "', 1)[1].split('"', 1)[0]
    path = src.split('"resource_path": "', 1)[1].split('"', 1)[0]
    return method, path


def request_class(op: str) -> type:
    return getattr(sdk, "".join(part.capitalize() for part in op.split("_")) + "Request")


_PRIMITIVES = {"str", "int", "float", "bool", "object", "date", "datetime"}


def model_from_dict(type_name: str, value: Any) -> Any:
    """An SDK model (or a list or dict of them) from plain JSON data, field for field: a key the model
    does not declare raises ``TypeError``."""
    if value is None or type_name in _PRIMITIVES or type_name.startswith("dict("):
        return value
    if type_name.startswith("list["):
        return [model_from_dict(type_name[5:-1], v) for v in value]
    cls = getattr(sdk_models, type_name)
    unknown = set(value) - set(cls.openapi_types)
    if unknown:
        raise TypeError(f"{type_name} has no field {sorted(unknown)}")
    return cls(**{k: model_from_dict(cls.openapi_types[k], v) for k, v in value.items()})


def build_request(op: str, params: dict[str, Any], body: Any = None):
    """The SDK request object of ``op``: path and query parameters as given, the body through its model."""
    cls = request_class(op)
    kwargs = dict(params)
    if body is not None:
        kwargs["body"] = model_from_dict(cls.openapi_types["body"], body)
    return cls(**kwargs)


# ------------------------------------------------------------------------------------ results
@dataclass
class Row:
    op: str
    method: str
    path: str
    status: int
    outcome: str
    detail: str


def classify(status: int, code: str, message: str) -> str:
    if 200 <= status < 300:
        return IMPLEMENTED
    if 400 <= status < 500 and code and message and code not in ROUTE_MISSING_CODES and code != str(status):
        return DOCUMENTED_4XX
    return MISSING


@dataclass
class World:
    """The ids the calls make and use, filled in as they go."""

    project_id: str
    region: str
    disk_ids: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    #: The operations a client of another project calls (a recipient answers a share: guide 4.2).
    clients: dict[str, CbrClient] = field(default_factory=dict)

    def __getitem__(self, key: str) -> str:
        return self.ids.get(key, NOBODY)


# ------------------------------------------------------------------------------------ the call plan
# Each operation: (parameters, body) from the world, and what to remember from the answer. The order is
# the order of the calls: creations first, reads, updates, then deletions.
Plan = Callable[[World], tuple[dict[str, Any], Any]]


def _vault_body(w: World, name: str) -> dict:
    return {"vault": {"name": name, "resources": [{"id": w.disk_ids[0], "type": DISK}],
                      "billing": {"consistent_level": "crash_consistent", "object_type": "disk",
                                  "protect_type": "backup", "size": 10}}}


_POLICY = {"policy": {"name": "coverage-policy", "operation_type": "backup", "enabled": True,
                      "operation_definition": {"max_backups": 5},
                      "trigger": {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"]}}}}

PLANS: dict[str, Plan] = {
    # creations (the world)
    "create_vault": lambda w: ({}, _vault_body(w, "coverage-vault")),
    "create_post_paid_vault": lambda w: ({}, {"vault": {
        "name": "coverage-order", "resources": [],
        "billing": {"consistent_level": "crash_consistent", "object_type": "disk", "protect_type": "backup",
                    "size": 10, "charging_mode": "post_paid"}}}),
    "create_policy": lambda w: ({}, _POLICY),
    "associate_vault_policy": lambda w: ({"vault_id": w["vault"]}, {"policy_id": w["policy"]}),
    "create_checkpoint": lambda w: ({}, {"checkpoint": {"vault_id": w["vault"],
                                                        "parameters": {"description": "coverage"}}}),
    "create_vault_tags": lambda w: ({"vault_id": w["vault"]}, {"tag": {"key": "owner", "value": "ops"}}),
    "batch_create_and_delete_vault_tags": lambda w: ({"vault_id": w["vault"]}, {
        "action": "create", "tags": [{"key": "env", "value": "test"}]}),
    "add_vault_resource": lambda w: ({"vault_id": w["vault"]}, {"resources": [{"id": w.disk_ids[1], "type": DISK}]}),
    "create_organization_policy": lambda w: ({}, {"policy": {
        "name": "coverage-org", "operation_type": "backup", "policy_name": "coverage-org-policy",
        "policy_enabled": True, "policy_operation_definition": {"max_backups": 5},
        "policy_trigger": {"properties": {"pattern": ["FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"]}},
        "effective_scope": w["account_name"]}}),  # the caller's own account (whoami's account_id)
    "register_agent": lambda w: ({}, {"agent": {"agent_id": NOBODY, "host_name": "coverage-host",
                                                "host_ip": "127.0.0.1", "host_os": "linux"}}),
    "add_member": lambda w: ({"backup_id": w["backup"]}, {"members": [w["peer_project"]]}),
    # reads
    "list_vault": lambda w: ({"limit": 10}, None),
    "show_vault": lambda w: ({"vault_id": w["vault"]}, None),
    "show_summary": lambda w: ({}, None),
    "list_external_vault": lambda w: ({"external_project_id": w.project_id, "region_id": w.region, "limit": 10}, None),
    "list_protectable": lambda w: ({"protectable_type": DISK, "limit": 10}, None),
    "show_protectable": lambda w: ({"protectable_type": DISK, "instance_id": w.disk_ids[0]}, None),
    "list_backups": lambda w: ({"vault_id": w["vault"]}, None),
    "show_backup": lambda w: ({"backup_id": w["backup"]}, None),
    "show_checkpoint": lambda w: ({"checkpoint_id": w["checkpoint"]}, None),
    "show_metadata": lambda w: ({"backup_id": w["backup"]}, None),
    "list_policies": lambda w: ({}, None),
    "show_policy": lambda w: ({"policy_id": w["policy"]}, None),
    "list_op_logs": lambda w: ({"limit": 10}, None),
    "show_op_log": lambda w: ({"operation_log_id": w["operation_log"]}, None),
    "show_storage_usage": lambda w: ({}, None),
    "show_replication_capabilities": lambda w: ({}, None),
    "list_features": lambda w: ({}, None),
    "show_feature": lambda w: ({"feature_key": "replication.enable"}, None),
    "show_vault_tag": lambda w: ({"vault_id": w["vault"]}, None),
    "show_vault_project_tag": lambda w: ({}, None),
    "show_vault_resource_instances": lambda w: ({}, {"action": "filter", "limit": "10", "offset": "0",
                                                     "tags": [{"key": "env", "values": ["test"]}]}),
    "list_agent": lambda w: ({}, None),
    "show_agent": lambda w: ({"agent_id": NOBODY}, None),
    "check_agent": lambda w: ({}, {"agent_status": [{"resource_id": w.disk_ids[0], "resource_type": DISK}]}),
    "show_members_detail": lambda w: ({"backup_id": w["backup"]}, None),
    "show_member_detail": lambda w: ({"backup_id": w["backup"], "member_id": w["peer_project"]}, None),
    "list_organization_policies": lambda w: ({"operation_type": "backup"}, None),
    "show_organization_policy": lambda w: ({"organization_policy_id": w["organization_policy"]}, None),
    "list_organization_policy_detail": lambda w: ({"organization_policy_id": w["organization_policy"]}, None),
    "list_projects": lambda w: ({}, None),
    "list_domain_projects": lambda w: ({"domain_name": w["account_name"]}, None),
    "show_domain": lambda w: ({"source_project_id": w.project_id}, None),
    "show_migrate_status": lambda w: ({"all_regions": False}, None),
    # updates and actions
    "update_vault": lambda w: ({"vault_id": w["vault"]}, {"vault": {"threshold": 90}}),
    "batch_update_vault": lambda w: ({}, {"vault": {"threshold": 80, "smn_notify": True}}),
    "set_vault_resource": lambda w: ({"vault_id": w["vault"]}, {"resource_ids": [w.disk_ids[0]], "action": "suspend"}),
    "update_expiration_time": lambda w: ({"vault_id": w["vault"]}, {"expect_expiration_date": "2099-12-31",
                                                                    "time_zone": "UTC+00:00"}),
    "update_backup": lambda w: ({"backup_id": w["backup"]}, {"backup": {"name": "coverage-backup"}}),
    "update_policy": lambda w: ({"policy_id": w["policy"]}, {"policy": {"name": "coverage-policy-2"}}),
    "restore_backup": lambda w: ({"backup_id": w["backup"]}, {"restore": {"volume_id": w.disk_ids[0]}}),
    "copy_backup": lambda w: ({"backup_id": w["backup"]}, {"replicate": {
        "destination_project_id": w.project_id, "destination_region": w.region,
        "destination_vault_id": w["order_vault"]}}),
    "copy_checkpoint": lambda w: ({}, {"replicate": {
        "vault_id": w["vault"], "destination_project_id": w.project_id, "destination_region": w.region,
        "destination_vault_id": w["order_vault"]}}),
    "import_backup": lambda w: ({}, {"sync": [{"backup_id": NOBODY, "backup_name": "imported",
                                               "bucket_name": "bucket", "image_path": "path",
                                               "resource_id": w.disk_ids[0], "resource_name": "disk",
                                               "resource_type": DISK, "created_at": 1700000000}]}),
    "import_checkpoint": lambda w: ({}, {"sync": {"vault_id": w["vault"], "auto_trigger": False}}),
    "migrate_vault_resource": lambda w: ({"vault_id": w["vault"]}, {"destination_vault_id": w["order_vault"],
                                                                    "resource_ids": [w.disk_ids[1]]}),
    "update_member_status": lambda w: ({"backup_id": w["backup"], "member_id": w["peer_project"]},
                                       {"status": "rejected"}),  # (called by the peer project: World.clients)
    "add_agent_path": lambda w: ({"agent_id": NOBODY}, {"add_path": ["/tmp"]}),
    "remove_agent_path": lambda w: ({"agent_id": NOBODY}, {"remove_path": ["/tmp"]}),
    "update_agent": lambda w: ({"agent_id": NOBODY}, {"agent": {"status": "uninstall"}}),
    "update_organization_policy": lambda w: ({"organization_policy_id": w["organization_policy"]},
                                             {"policy": {"name": "coverage-org-2"}}),
    "change_vault_charge_mode": lambda w: ({}, {"charging_mode": "pre_paid", "period_type": "month",
                                                "period_num": 1, "vault_ids": [w["vault"]]}),
    "change_order": lambda w: ({}, {"resource_id": w["vault"], "product_info": {"product_id": "p1"}}),
    "update_order": lambda w: ({"order_id": NOBODY}, {"cloud_service_console_url": "https://example.invalid"}),
    "migrate_domain": lambda w: ({}, {"all_regions": False, "reservation": 1.0}),
    # deletions, last
    "delete_vault_tag": lambda w: ({"vault_id": w["vault"], "key": "owner"}, None),
    "delete_member": lambda w: ({"backup_id": w["backup"], "member_id": w["peer_project"]}, None),
    # (migrate_vault_resource moved the disk into the second vault)
    "remove_vault_resource": lambda w: ({"vault_id": w["order_vault"]}, {"resource_ids": [w.disk_ids[1]]}),
    "disassociate_vault_policy": lambda w: ({"vault_id": w["vault"]}, {"policy_id": w["policy"]}),
    "unregister_agent": lambda w: ({"agent_id": NOBODY}, None),
    "delete_organization_policy": lambda w: ({"organization_policy_id": w["organization_policy"]}, None),
    "delete_backup": lambda w: ({"backup_id": w["backup"]}, None),
    "delete_policy": lambda w: ({"policy_id": w["policy"]}, None),
    "delete_vault": lambda w: ({"vault_id": w["vault"]}, None),
}


def _remember(op: str, answer: Any, w: World, client: CbrClient) -> None:
    """Take the ids later calls need from an answer; wait where the next calls need a finished task."""
    if op == "create_vault":
        w.ids["vault"] = answer.vault.id
    elif op == "create_post_paid_vault":
        w.ids["order_vault"] = answer.orders[0].resource_id
    elif op == "create_policy":
        w.ids["policy"] = answer.policy.id
    elif op == "create_checkpoint":
        w.ids["checkpoint"] = answer.checkpoint.id
        made = client.list_backups(sdk.ListBackupsRequest(checkpoint_id=answer.checkpoint.id)).backups
        w.ids["backup"] = made[0].id
        _wait_backup(client, w.ids["backup"])
    elif op == "create_organization_policy":
        w.ids["organization_policy"] = answer.policy.id
    elif op == "list_op_logs" and answer.operation_logs:
        w.ids["operation_log"] = answer.operation_logs[0].id
    elif op == "restore_backup":
        _wait_backup(client, w.ids["backup"])


def _wait_backup(client: CbrClient, backup_id: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.show_backup(sdk.ShowBackupRequest(backup_id=backup_id)).backup.status
        if status in ("available", "error"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"backup {backup_id} did not finish in {timeout} s")


# ------------------------------------------------------------------------------------ the run
def sdk_client(endpoint: str, project_id: str, ak: str, sk: str) -> CbrClient:
    cfg = HttpConfig.get_default_config()
    cfg.ignore_ssl_verification = True
    cfg.timeout = (5, 60)
    return (CbrClient.new_builder().with_http_config(cfg)
            .with_credentials(BasicCredentials(ak, sk, project_id)).with_endpoint(endpoint).build())


def _prepare_world(cfg: ClientConfig, workdir: str) -> World:
    """Two small disks of the caller's own (the inventory is OpenCBR's extension, not in the SDK)."""
    api = ApiClient(cfg)
    me = api.get("/iam/whoami")
    w = World(project_id=cfg.project_id, region=me.get("region") or "local-1")
    w.ids["account_name"] = me.get("account_id") or NOBODY
    tag = uuid.uuid4().hex[:8]
    for i in range(2):
        path = os.path.join(workdir, f"coverage-{tag}-{i}.img")
        with open(path, "wb") as f:
            f.write(os.urandom(64 * 1024))
            f.truncate(1 << 20)
        w.disk_ids.append(api.post("/inventory/disks", {"name": f"coverage-{tag}-{i}", "path": path})["disk"]["id"])
    # A second project of the caller's account, for sharing: the backup is shared with it and it answers.
    try:
        peer = api.post("/iam/projects", {"name": f"coverage-peer-{tag}"})["project"]["id"]
    except Exception:  # noqa: BLE001 - a caller who may not add projects: the share names nobody (a 404)
        peer = NOBODY
    w.ids["peer_project"] = peer
    w.clients["update_member_status"] = sdk_client(cfg.endpoint, peer, cfg.ak, cfg.sk)
    return w


def call(client: CbrClient, op: str, w: World) -> Row:
    method, path = http_route(op)
    plan = PLANS.get(op)
    if plan is None:
        return Row(op, method, path, 0, MISSING, "no call plan in tools/sdk_coverage.py for this operation")
    params, body = plan(w)
    client = w.clients.get(op, client)
    try:
        answer = getattr(client, op)(build_request(op, params, body))
    except ServiceResponseException as e:
        return Row(op, method, path, e.status_code, classify(e.status_code, e.error_code or "", e.error_msg or ""),
                   f"{e.error_code}: {e.error_msg}"[:200])
    except SdkException as e:
        return Row(op, method, path, 0, MISSING, f"{type(e).__name__}: {e}"[:200])
    except (ValueError, TypeError, KeyError) as e:  # the SDK could not read the answer into its model
        return Row(op, method, path, 0, MISSING, f"the SDK cannot read the answer: {e}"[:200])
    status = getattr(answer, "status_code", 200) or 200
    try:
        _remember(op, answer, w, client)
    except (ServiceResponseException, SdkException, RuntimeError, AttributeError, IndexError) as e:
        return Row(op, method, path, status, classify(status, "", ""), f"but the follow-up failed: {e}"[:200])
    return Row(op, method, path, status, classify(status, "", ""), "")


def run(cfg: ClientConfig, workdir: str) -> list[Row]:
    """Call every SDK operation once (in the plan's order; operations without a plan last)."""
    client = sdk_client(cfg.endpoint, cfg.project_id, cfg.ak, cfg.sk)
    w = _prepare_world(cfg, workdir)
    ops = sdk_operations()
    ordered = [op for op in PLANS if op in ops] + [op for op in ops if op not in PLANS]
    rows = [call(client, op, w) for op in ordered]
    return sorted(rows, key=lambda r: r.op)


def table(rows: list[Row]) -> str:
    width = max(len(r.op) for r in rows)
    lines = [f"{'operation':<{width}}  {'status':>6}  {'outcome':<14}  detail", "-" * (width + 40)]
    for r in rows:
        lines.append(f"{r.op:<{width}}  {r.status or '-':>6}  {r.outcome:<14}  {r.detail}")
    counts = {k: sum(1 for r in rows if r.outcome == k) for k in (IMPLEMENTED, DOCUMENTED_4XX, MISSING)}
    lines.append("-" * (width + 40))
    lines.append(f"{len(rows)} operations: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="where the run's two small disk images are written (default: a new "
                                      "temporary directory, left in place: the resources are registered)")
    ap.add_argument("--json", action="store_true", help="one JSON object per operation instead of the table")
    args = ap.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="opencbr-coverage-")
    rows = run(ClientConfig.load(), workdir)
    if args.json:
        for r in rows:
            print(json.dumps(r.__dict__))
    else:
        print(table(rows))
    return 1 if any(r.outcome == MISSING for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
