"""Vault tags through the official SDK (CBR v3 API 6.7): add, overwrite, batch create and delete, the
project's tags, the resource-instances filter and count; the rules of the SDK's tag models."""

from __future__ import annotations

import pytest
from huaweicloudsdkcbr.v1 import (
    BatchCreateAndDeleteVaultTagsRequest,
    BulkCreateAndDeleteVaultTagsReq,
    CreateVaultTagsRequest,
    DeleteVaultTagRequest,
    ShowVaultProjectTagRequest,
    ShowVaultResourceInstancesRequest,
    ShowVaultTagRequest,
    Tag,
    TagCreate,
    TagsReq,
    VaultResourceInstancesReq,
    VaultTagsCreateReq,
)
from huaweicloudsdkcbr.v1.model.match import Match
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from tests.api.test_vaults_sdk import create
from tests.support.clients import new_tenant, sdk


def tags_of(c, vault_id):
    return {t.key: t.value for t in c.show_vault_tag(ShowVaultTagRequest(vault_id=vault_id)).tags}


def add(c, vault_id, key, value):
    c.create_vault_tags(CreateVaultTagsRequest(vault_id=vault_id, body=VaultTagsCreateReq(TagCreate(key, value))))


def batch(c, vault_id, action, pairs):
    body = BulkCreateAndDeleteVaultTagsReq(action=action, tags=[Tag(key=k, value=v) for k, v in pairs])
    c.batch_create_and_delete_vault_tags(BatchCreateAndDeleteVaultTagsRequest(vault_id=vault_id, body=body))


def refused(call, status=400) -> str:
    with pytest.raises(ClientRequestException) as e:
        call()
    assert e.value.status_code == status, (e.value.error_code, e.value.error_msg)
    return e.value.error_msg


def test_vault_tags(server):
    c = sdk(server)
    v = create(c, "tags-one", tags=[Tag(key="env", value="prod")]).id
    assert tags_of(c, v) == {"env": "prod"}
    add(c, v, " owner ", " ops ")  # spaces around are dropped
    add(c, v, "env", "staging")  # an existing key takes the new value
    assert tags_of(c, v) == {"env": "staging", "owner": "ops"}
    batch(c, v, "create", [(f"k{i}", "x") for i in range(8)])
    assert len(tags_of(c, v)) == 10
    assert "at most 10" in refused(lambda: add(c, v, "eleventh", "x"))
    batch(c, v, "delete", [("k0", None), ("k0", None), ("absent", None)])  # repeated or absent keys: fine
    assert "k0" not in tags_of(c, v) and len(tags_of(c, v)) == 9
    c.delete_vault_tag(DeleteVaultTagRequest(vault_id=v, key="owner"))
    assert "owner" not in tags_of(c, v)
    refused(lambda: c.delete_vault_tag(DeleteVaultTagRequest(vault_id=v, key="owner")), 404)


@pytest.mark.parametrize("key,value", [("a=b", "x"), ("", "x"), ("k" * 37, "x"), ("ok", "a/b"), ("ok", "v" * 44)])
def test_tag_rules(server, key, value):
    c = sdk(server)
    v = create(c, f"tags-rules-{abs(hash((key, value))) % 10**6}").id
    refused(lambda: add(c, v, key, value))
    assert tags_of(c, v) == {}


def test_batch_refuses_duplicate_keys_and_unknown_actions(server):
    c = sdk(server)
    v = create(c, "tags-batch").id
    assert "more than once" in refused(lambda: batch(c, v, "create", [("a", "1"), ("a", "2")]))
    refused(lambda: batch(c, v, "rename", [("a", "1")]))
    assert tags_of(c, v) == {}


def test_project_tags_and_resource_instances(server):
    c = sdk(server, new_tenant(server, "tags-tenant"))
    a = create(c, "web-a", tags=[Tag(key="app", value="web"), Tag(key="tier", value="1")]).id
    b = create(c, "web-b", tags=[Tag(key="app", value="web-canary")]).id
    d = create(c, "db", tags=[Tag(key="app", value="db")]).id
    u = create(c, "untagged").id
    project = c.show_vault_project_tag(ShowVaultProjectTagRequest()).tags
    assert {(t.key, tuple(t.values)) for t in project} == {("app", ("db", "web", "web-canary")), ("tier", ("1",))}

    def query(**kw):
        body = VaultResourceInstancesReq(**kw)
        return c.show_vault_resource_instances(ShowVaultResourceInstancesRequest(body=body))

    r = query(action="filter", tags=[TagsReq(key="app", values=["web", "db"])])
    assert r.total_count == 2 and {x.resource_id for x in r.resources} == {a, d}
    assert {x.resource_detail.vault.id for x in r.resources} == {a, d}
    assert query(action="filter", tags=[TagsReq(key="app", values=["*web"])]).total_count == 2  # a, b
    assert query(action="filter", tags=[TagsReq(key="app", values=[])]).total_count == 3
    assert {x.resource_id for x in query(action="filter", without_any_tag=True).resources} == {u}
    assert {x.resource_id for x in query(action="filter", not_tags_any=[TagsReq(key="app", values=[])]).resources} == {u}
    assert {x.resource_id for x in query(action="filter", tags_any=[TagsReq(key="tier", values=["1"]),
                                                                     TagsReq(key="app", values=["db"])]).resources} == {a, d}
    named = query(action="filter", matches=[Match(key="resource_name", value="web")])
    assert {x.resource_id for x in named.resources} == {a, b}
    counted = query(action="count", tags=[TagsReq(key="app", values=[])])
    assert counted.total_count == 3 and not counted.resources
    page = query(action="filter", limit="1", offset="1", tags=[TagsReq(key="app", values=[])])
    assert page.total_count == 3 and len(page.resources) == 1
    refused(lambda: query(action="filter", limit="0"))
    refused(lambda: query(action="list"))


def test_tags_of_another_project_are_invisible(server):
    mine = sdk(server, new_tenant(server, "tags-iso-a"))
    other = sdk(server, new_tenant(server, "tags-iso-b"))
    v = create(mine, "private", tags=[Tag(key="secret", value="yes")]).id
    refused(lambda: other.show_vault_tag(ShowVaultTagRequest(vault_id=v)), 404)
    refused(lambda: add(other, v, "x", "y"), 404)
    assert other.show_vault_project_tag(ShowVaultProjectTagRequest()).tags == []
