"""The README is a test: its "First steps" block runs, in order, as written, against a fresh service, with
real disk images (the system disk an ext4 file system holding /etc/hosts) and a real directory tree.

Only two things are substituted: paths (``/srv/...``, ``/tmp/out`` and relative files move into the test's
directory) and the placeholders a reader fills in from what an earlier command printed. A command's
comment names the placeholder its output defines — ``# ... (BACKUP)`` — and the test takes the first id
that command printed, as a reader would copy it. When the README changes, the test follows; when a command
breaks, it fails.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.databases import sqlite_url
from tests.support.disks import MiB, make_image, sha256
from tests.support.server import ServerProcess
from tests.support.trees import build_tree, snapshot

README = Path(__file__).resolve().parent.parent / "README.md"
PLACEHOLDER = re.compile(r"\(([A-Z][A-Z_]+)\)")
ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|\b[0-9a-f]{8,}\b")

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 (e2fsprogs) is not installed")


def first_steps(text: str) -> list[tuple[list[str], str]]:
    """The commands of the first ``sh`` block after "## First steps": (argv, comment) per line."""
    section = text.split("## First steps", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            comment = line.split("#", 1)[1] if "#" in line else ""
            commands.append((argv, comment))
    return commands


def localise(arg: str, root: Path, values: dict[str, str]) -> str:
    """A README argument made to run here: paths into ``root``, placeholders to what was printed."""
    if arg in values:
        return values[arg]
    if arg.startswith(("/srv/", "/tmp/")):
        return str(root / arg.lstrip("/"))
    if arg.endswith(".img") and "/" not in arg:
        return str(root / arg)
    assert not re.fullmatch(r"[A-Z][A-Z_]+", arg), f"{arg} is used before a command prints it"
    return arg


def ext4_image(path: Path, root: Path) -> str:
    content = root / "sys-content"
    (content / "etc").mkdir(parents=True)
    (content / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (content / "etc" / "hostname").write_text("web1\n")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(path), "16M"], check=True,
                   capture_output=True)
    return str(path)


@pytest.fixture()
def service(tmp_path):
    d = tmp_path / "service"
    d.mkdir()
    srv = ServerProcess(str(d), sqlite_url(str(d))).start()
    yield srv
    srv.stop()


def test_readme_first_steps_run_as_written(service, tmp_path):
    root = tmp_path / "user"
    (root / "srv" / "images").mkdir(parents=True)
    (root / "tmp").mkdir()  # /tmp exists on every machine
    sys_hash = sha256(ext4_image(root / "srv" / "images" / "sys1.img", tmp_path))
    make_image(root / "srv" / "images" / "data1.img", 4 * MiB, seed=12)
    share = snapshot(build_tree(root / "srv" / "share"))

    values: dict[str, str] = {}
    commands = first_steps(README.read_text())
    assert len(commands) >= 20, "the first-steps block was not found"
    for argv, comment in commands:
        assert argv[0] == "cbr", argv
        args = [localise(a, root, values) for a in argv[1:]]
        proc = subprocess.run([sys.executable, "-m", "opencbr.cli.main", *args], env=service.cli_env(),
                              cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"`{shlex.join(argv)}` failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        for name in PLACEHOLDER.findall(comment):
            printed = ID.findall(proc.stdout)
            assert printed, f"`{shlex.join(argv)}` printed no id for {name}:\n{proc.stdout}"
            values[name] = printed[0]
    assert {"BACKUP", "DISK_BACKUP", "FS_BACKUP", "TASK_ID"} <= set(values)

    # and what the steps made is what was backed up
    assert sha256(root / "srv" / "images" / "copy.img") == sys_hash
    assert sha256(root / "disk.img") == sys_hash
    assert snapshot(root / "srv" / "restored") == share
    hosts = [p for p in (root / "tmp" / "out").rglob("hosts")]
    assert [p.read_text() for p in hosts] == ["127.0.0.1 localhost\n"]


def test_documentation_stands_alone():
    """A clone has no files outside the repository: the README and docs/ point only inside it."""
    root = README.parent
    for doc in [README, *sorted((root / "docs").glob("*.md"))]:
        text = doc.read_text()
        for outside in ("../shared", "DESIGN.md", "cbr_v3.md", "cbr-user-guide.txt"):
            assert outside not in text, f"{doc.name} refers to {outside}"
        for target in re.findall(r"`((?:docs|src|bench|tests)/[\w./-]+)`", text):
            assert (root / target.split(" ")[0]).exists() or "{" in target or "*" in target, \
                f"{doc.name} names {target}, which does not exist"


def test_api_doc_lists_every_route():
    """docs/api.md names every route the service implements (path parameters may be named differently)."""
    from opencbr.api.routes import backups, iam, policies, resources, tasks, vaults

    def norm(path: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", path)

    doc = norm((README.parent / "docs" / "api.md").read_text().replace("\\|", "|"))
    routers = [m.router for m in (vaults, backups, resources, tasks, iam, policies)] + [iam.auth_router]
    missing = []
    for router in routers:
        for route in router.routes:
            path = norm(route.path.removeprefix("/v3/{project_id}"))
            if f"{path}`" not in doc and f"{path} " not in doc:
                missing.append(f"{sorted(route.methods)} {route.path}")
    assert not missing, f"docs/api.md does not list: {missing}"
