"""Tenants cannot reach paths of the service's machine they were not given: without ``resource_roots``
only the operator's account names paths; with them, every tenant stays below them. A path belongs to
one project (nothing at, above or below another project's resource), is checked again at every use
(a disk or directory swapped for a symlink, or for another object, is refused and never followed),
and a refused caller learns nothing about what exists."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import pytest

from opencbr.cli.client import ClientError
from tests.support.clients import api, new_tenant, task_ok, wait_task
from tests.support.databases import BACKENDS, make_catalog_url, release_catalog_url
from tests.support.disks import make_image, mutate, sha256
from tests.support.server import ServerProcess


@pytest.fixture()
def no_roots(tmp_path):
    srv = ServerProcess(str(tmp_path / "srv"), f"sqlite:///{tmp_path}/srv/catalog.db",
                        extra_env={"OPENCBR_RESOURCE_ROOTS": ""}).start()
    yield srv
    srv.stop()


def test_without_roots_only_the_operator_names_paths(no_roots, tmp_path):
    img = tmp_path / "d.img"
    img.write_bytes(b"\0" * 65536)
    operator = api(no_roots)
    assert operator.post("/inventory/disks", {"name": "ok", "path": str(img)})["disk"]["id"]
    tenant = api(no_roots, new_tenant(no_roots, "outsider"))
    for body, route in (({"name": "x", "path": "/etc/shadow"}, "/inventory/disks"),
                        ({"name": "x", "path": str(tmp_path)}, "/inventory/file-systems")):
        with pytest.raises(ClientError) as e:
            tenant.post(route, body)
        assert e.value.status == 403 and "resource_roots" in e.value.message


def test_with_roots_everyone_stays_below_them(server, tmp_path):
    tenant = api(server, new_tenant(server, f"rooted-{server.backend}"))
    with pytest.raises(ClientError) as e:
        tenant.post("/inventory/disks", {"name": "x", "path": "/etc/passwd"})
    assert e.value.status == 400 and "outside" in e.value.message
    img = tmp_path / "ok.img"
    img.write_bytes(b"\0" * 65536)
    assert tenant.post("/inventory/disks", {"name": "ok", "path": str(img)})["disk"]["id"]


# ------------------------------------------------------------------------------------ one path, one project
@pytest.fixture(scope="module", params=BACKENDS)
def rooted(request, tmp_path_factory):
    """A server whose tenants live below ``<tmp>/roots``, with two tenants A and B; ``<tmp>/outside``
    is beyond the roots (what a swapped path would lead to)."""
    d = tmp_path_factory.mktemp(f"rooted-{request.param}")
    roots, outside = d / "roots", d / "outside"
    roots.mkdir()
    outside.mkdir()
    url = make_catalog_url(request.param, str(d))
    srv = ServerProcess(str(d / "srv"), url, extra_env={"OPENCBR_RESOURCE_ROOTS": str(roots)}).start()
    srv.roots, srv.outside = roots, outside
    srv.a, srv.b = api(srv, new_tenant(srv, "tenant-a")), api(srv, new_tenant(srv, "tenant-b"))
    yield srv
    srv.stop()
    release_catalog_url(url)


def _refused(call, status: int, *words: str) -> ClientError:
    with pytest.raises(ClientError) as e:
        call()
    assert e.value.status == status and all(w in e.value.message for w in words), (e.value.status, e.value.message)
    return e.value


def _fresh(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir(parents=True)
    return d


def _backed_up(client, kind: str, resource: dict, name: str) -> dict:
    """A vault holding ``resource`` and a first backup of it (asserted available)."""
    object_type, rtype = ("turbo", "OS::Sfs::Turbo") if kind == "fs" else ("disk", "OS::Cinder::Volume")
    v = client.post("/vaults", {"vault": {"name": name, "billing": {"object_type": object_type, "size": 10,
                                                                     "consistent_level": "crash_consistent",
                                                                     "protect_type": "backup"},
                                          "resources": [{"id": resource["id"], "type": rtype}]}})["vault"]
    return _backup(client, v)


def _backup(client, vault: dict) -> dict:
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})
    b = client.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    b["log"] = wait_task(client, b["task_id"])
    b.update(client.get(f"/backups/{b['id']}")["backup"])
    b["vault"] = vault
    return b


def test_a_path_at_above_or_below_another_projects_resource_is_refused(rooted):
    base = _fresh(rooted.roots, "overlap")
    fs = _fresh(base, "a/fs")
    (fs / "secret.txt").write_bytes(b"A's secret\n" * 100)
    _fresh(fs, "sub")
    img = make_image(base / "a" / "bd.img", 256 * 1024)
    _fresh(base, "a/fsx")
    rooted.a.post("/inventory/file-systems", {"name": "a-fs", "path": str(fs)})
    rooted.a.post("/inventory/disks", {"name": "a-disk", "path": img})
    for route, path in (("/inventory/file-systems", rooted.roots),  # an ancestor
                        ("/inventory/file-systems", base / "a"),
                        ("/inventory/file-systems", fs),  # the same
                        ("/inventory/file-systems", f"{base}//a/./fs/../fs/sub/"),  # a descendant, spelt oddly
                        ("/inventory/disks", fs / "secret.txt"),  # a file inside, as a disk
                        ("/inventory/disks", img)):
        _refused(partial(rooted.b.post, route, {"name": "grab", "path": str(path)}), 409, "another project")
    # a sibling whose name only starts the same is not inside: /a/fsx is not /a/fs
    assert rooted.b.post("/inventory/file-systems", {"name": "b-fsx", "path": str(base / "a" / "fsx")})
    # within one project, resources may nest (its own data either way), but one path is one resource
    assert rooted.a.post("/inventory/file-systems", {"name": "a-sub", "path": str(fs / "sub")})
    _refused(lambda: rooted.a.post("/inventory/file-systems", {"name": "again", "path": str(fs)}), 409,
             "already registered")


def test_restore_targets_inside_another_projects_resource_are_refused(rooted):
    base = _fresh(rooted.roots, "targets")
    a_fs = _fresh(base, "a/fs")
    b_fs = _fresh(base, "b/fs")
    (b_fs / "note.txt").write_bytes(b"B's note\n")
    rooted.a.post("/inventory/file-systems", {"name": "t-a-fs", "path": str(a_fs)})
    fs = rooted.b.post("/inventory/file-systems", {"name": "t-b-fs", "path": str(b_fs)})["file_system"]
    b_disk = rooted.b.post("/inventory/disks", {"name": "t-b-disk",
                                                "path": make_image(base / "b" / "bd.img", 256 * 1024)})["disk"]
    fsb = _backed_up(rooted.b, "fs", fs, "t-b-fs")
    diskb = _backed_up(rooted.b, "disk", b_disk, "t-b-disk")
    assert fsb["status"] == diskb["status"] == "available"
    _refused(lambda: rooted.b.post(f"/backups/{fsb['id']}/restore-files",
                                   {"paths": ["/note.txt"], "destination_path": str(a_fs / "drop")}), 409)
    _refused(lambda: rooted.b.post(f"/backups/{fsb['id']}/restore-files",
                                   {"paths": ["/note.txt"], "destination_path": str(a_fs)}), 409)
    _refused(lambda: rooted.b.post(f"/backups/{fsb['id']}/create-file-system",
                                   {"name": "planted", "path": str(a_fs / "planted")}), 409)
    _refused(lambda: rooted.b.post(f"/backups/{diskb['id']}/create-disk",
                                   {"name": "planted", "path": str(a_fs / "planted.img")}), 409)
    assert os.listdir(a_fs) == []
    # into its own directories, B restores as before
    out = base / "b" / "out"
    task_ok(rooted.b, rooted.b.post(f"/backups/{fsb['id']}/restore-files",
                                    {"paths": ["/note.txt"], "destination_path": str(out)})["operation_log_id"])
    assert (out / "note.txt").read_bytes() == b"B's note\n"


def _swap_for_symlink(path: Path, target: Path) -> None:
    path.rename(path.with_name(path.name + ".orig"))
    path.symlink_to(target)


def _assert_refused_backup(client, vault: dict, resource_route: str, *words: str) -> dict:
    b = _backup(client, vault)
    assert b["status"] == "error" and b["log"]["status"] == "failed", b
    assert b["log"]["error_info"]["code"] == "BackupService.6112", b["log"]["error_info"]
    assert all(w in b["log"]["error_info"]["message"] for w in words), b["log"]["error_info"]
    res = client.get(resource_route)["resource"]
    assert res["status"] == "error" and all(w in res["status_reason"] for w in words), res
    with pytest.raises(ClientError) as e, client.stream(f"/backups/{b['id']}/export"):
        pass
    assert e.value.status == 409  # nothing was stored to export
    return b


def test_a_disk_swapped_for_a_symlink_is_neither_read_nor_written(rooted):
    base = _fresh(rooted.roots, "swap-disk")
    img = Path(make_image(base / "bd.img", 512 * 1024, seed=5))
    secret = rooted.outside / "swap-disk-secret.img"
    secret.write_bytes(b"OUTSIDE-SECRET-" * 40000)
    before = sha256(secret)
    disk = rooted.b.post("/inventory/disks", {"name": "swap-disk", "path": str(img)})["disk"]
    first = _backed_up(rooted.b, "disk", disk, "swap-disk")
    assert first["status"] == "available"
    _swap_for_symlink(img, secret)
    _assert_refused_backup(rooted.b, first["vault"], f"/inventory/disks/{disk['id']}", "symbolic link")
    # restoring the good backup onto the swapped disk writes nothing there
    _refused(lambda: rooted.b.post(f"/backups/{first['id']}/restore", {"restore": {"volume_id": disk["id"]}}), 409)
    assert sha256(secret) == before


def _fs_and_decoy(rooted, name: str, fs_rel: str) -> tuple[Path, Path, dict, dict]:
    """B's file system at ``<roots>/<name>/<fs_rel>`` (backed up once) and a decoy directory outside
    the roots holding a secret."""
    fs = _fresh(rooted.roots / name, fs_rel)
    (fs / "mine.txt").write_bytes(b"mine\n")
    decoy = _fresh(rooted.outside, f"{name}/fs")
    (decoy / "shadow").write_bytes(b"OUTSIDE-SECRET\n")
    res = rooted.b.post("/inventory/file-systems", {"name": name, "path": str(fs)})["file_system"]
    first = _backed_up(rooted.b, "fs", res, name)
    assert first["status"] == "available"
    return fs, decoy, res, first


def test_a_directory_swapped_for_a_symlink_is_not_read(rooted):
    fs, decoy, res, first = _fs_and_decoy(rooted, "swap-dir", "fs")
    _swap_for_symlink(fs, decoy)
    b = _assert_refused_backup(rooted.b, first["vault"], f"/inventory/file-systems/{res['id']}", "symbolic link")
    _refused(lambda: rooted.b.get(f"/backups/{b['id']}/files", path="/"), 409)


def test_a_directory_above_the_resource_swapped_for_a_symlink_is_not_followed(rooted):
    fs, decoy, res, first = _fs_and_decoy(rooted, "swap-above", "c/fs")
    _swap_for_symlink(fs.parent, decoy.parent)  # <roots>/swap-above/c -> <outside>/swap-above (holds fs/)
    _assert_refused_backup(rooted.b, first["vault"], f"/inventory/file-systems/{res['id']}", "symbolic link")


def test_another_file_renamed_into_place_is_refused(rooted):
    base = _fresh(rooted.roots, "identity")
    img = Path(make_image(base / "bd.img", 256 * 1024, seed=8))
    disk = rooted.b.post("/inventory/disks", {"name": "identity", "path": str(img)})["disk"]
    first = _backed_up(rooted.b, "disk", disk, "identity")
    mutate(img)  # a disk in use changes: still the same disk
    second = _backup(rooted.b, first["vault"])
    assert second["status"] == "available", second["log"]["error_info"]
    other = make_image(base / "other.img", 256 * 1024, seed=9)
    os.replace(other, img)
    _assert_refused_backup(rooted.b, first["vault"], f"/inventory/disks/{disk['id']}", "another file")


# ------------------------------------------------------------------------------------ authorise first
def test_without_roots_a_tenant_learns_nothing_of_what_exists(no_roots, tmp_path):
    tenant = api(no_roots, new_tenant(no_roots, "prober"))
    answers = set()
    for path in ("/etc/shadow", "/etc/nonexistent", "/etc/../etc/shadow"):
        e = _refused(partial(tenant.post, "/inventory/disks", {"name": "x", "path": path}), 403)
        answers.add((e.status, e.message))
    assert len(answers) == 1, answers
    t0 = time.monotonic()
    _refused(lambda: tenant.post("/inventory/file-systems", {"name": "x", "path": "/"}), 403)
    assert time.monotonic() - t0 < 1.0


def test_a_big_tree_is_registered_at_once_and_measured_in_the_background(no_roots, tmp_path):
    tree = tmp_path / "big"
    for i in range(200):
        d = tree / f"d{i:03d}"
        d.mkdir(parents=True)
        for j in range(10):
            (d / f"f{j}").write_bytes(b"x" * (100 + j))
    operator = api(no_roots)
    fs = operator.post("/inventory/file-systems", {"name": "big", "path": str(tree)})["file_system"]
    assert fs["size_bytes"] == 0  # not walked inside the request
    log = operator.get("/operation-logs", operation_type="measure")["operation_logs"][0]
    task_ok(operator, log["id"])
    assert operator.get(f"/inventory/file-systems/{fs['id']}")["resource"]["size_bytes"] == 200 * sum(
        100 + j for j in range(10))
