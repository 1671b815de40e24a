"""The agent's package, built from this source: what it holds, that it installs, that it is reproducible."""

from __future__ import annotations

import importlib.machinery
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from opencbr.agentlink import package
from tests.support.building import can_build_extensions

REPO = Path(__file__).resolve().parents[2]
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # this interpreter's, e.g. .cpython-311-x86_64-linux-gnu.so


def test_the_pins_and_the_unit_agree_with_the_repository():
    pyproject = (REPO / "pyproject.toml").read_text()
    agents_md = " ".join((REPO / "docs" / "agents.md").read_text().split())
    for dep in package.AGENT_DEPENDENCIES:
        assert f'"{dep}"' in pyproject, f"{dep} is not pinned so in pyproject.toml"
        # (a host without a package index needs them at exactly these versions)
        assert f"`{dep}`" in agents_md, f"docs/agents.md, Installing, does not give the pin {dep}"
    assert (REPO / "packaging" / "opencbr-agent.service").read_text() == package.SYSTEMD_UNIT


def test_the_packages_hold_the_agent_s_packages_only_and_are_reproducible(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    wheel = package.build_agent_wheel(str(tmp_path / "a"))
    sdist = package.build_agent_sdist(str(tmp_path / "a"))
    assert Path(wheel).read_bytes() == Path(package.build_agent_wheel(str(tmp_path / "b"))).read_bytes()
    assert Path(sdist).read_bytes() == Path(package.build_agent_sdist(str(tmp_path / "b"))).read_bytes()
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[1] for n in names if n.startswith("opencbr/") and n.count("/") > 1}
    assert tops == set(package.AGENT_PACKAGES)
    assert "opencbr/agent/cli.py" in names and not any("/api/" in n or "/services/" in n for n in names)
    # the C extensions built here go along (an agent reads small files and lists directories with them)
    built = sorted(p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "opencbr").rglob(f"*{_SUFFIX}"))
    assert sorted(n for n in names if n.endswith(_SUFFIX)) == built
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert "opencbr-agent-0.1.0/pyproject.toml".replace("0.1.0", package.__version__) in members
    assert not any(re.search(r"/(api|services|catalog|cli)/", m) for m in members)


def _venv(where: Path) -> Path:
    """A venv of the system's Python that sees its pip and setuptools (nothing is downloaded)."""
    base = shutil.which("python3", path="/usr/bin:/bin") or ""
    if not base or subprocess.run([base, "-c", "import setuptools, pip"], capture_output=True).returncode:
        pytest.skip("no system Python with pip and setuptools here")
    subprocess.run([base, "-m", "venv", "--without-pip", "--system-site-packages", str(where)], check=True, timeout=60)
    return where / "bin"


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_package_installs_offline_and_gives_the_command(tmp_path, kind):
    built = (package.build_agent_wheel if kind == "wheel" else package.build_agent_sdist)(str(tmp_path))
    bin_dir = _venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", built], check=True, timeout=120, env=env, capture_output=True)
    done = subprocess.run([str(bin_dir / "opencbr-agent"), "--help"], capture_output=True, text=True, timeout=30,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0 and "register" in done.stdout and "unregister-local" in done.stdout
    version = subprocess.run([str(bin_dir / "opencbr-agent"), "--version"], capture_output=True, text=True, env=env,
                             cwd=tmp_path)
    assert version.stdout.strip() == f"opencbr-agent {package.__version__}"
    _installed_agent_reads_with_c_where_it_can(bin_dir, env, tmp_path, kind)


def _installed_agent_reads_with_c_where_it_can(bin_dir: Path, env: dict, cwd: Path, kind: str) -> None:
    """The installed agent uses the C listing and reader: from the wheel when the venv's Python can load
    the ones this checkout built (the same extension suffix), from the source package when this host can
    build them; its Python code otherwise. (The venv was installed without dependencies: they come from
    this interpreter's site-packages, after the venv's own.)"""
    deps = sysconfig.get_paths()["purelib"]
    probe = (f"import importlib.machinery, sys; sys.path.append({deps!r}); "
             "from opencbr.engine.tree.sources import native_reading; "
             "from opencbr.engine.tree.walker import native_listing; "
             "print(importlib.machinery.EXTENSION_SUFFIXES[0], native_reading() is not None, "
             "native_listing() is not None, native_reading().__file__ if native_reading() else '')")
    done = subprocess.run([str(bin_dir / "python"), "-c", probe], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    suffix, reading, listing, where = done.stdout.split(" ", 3)
    if kind == "wheel":
        built_here = any((REPO / "src" / "opencbr" / "engine" / "tree").glob(f"_reading{_SUFFIX}"))
        expected = str(built_here and suffix == _SUFFIX)
    else:
        expected = str(can_build_extensions(bin_dir / "python"))
    assert (reading, listing) == (expected, expected), done.stdout
    if expected == "True":
        assert str(bin_dir.parent) in where  # the venv's copy, not this checkout's


def test_the_install_script_is_valid_shell_and_says_what_it_does():
    script = package.install_script("http://backup.example:8080/", "ocbr1.p.t.s.h")
    assert script.startswith("#!/bin/sh\n") and "ENDPOINT=http://backup.example:8080\n" in script
    assert "--token ocbr1.p.t.s.h" in script and "systemctl enable --now opencbr-agent" in script
    assert package.SYSTEMD_UNIT.replace(f"{package.PREFIX}/bin/opencbr-agent run", "${AGENT_WORD}${CONFIG_ARG} run") in script
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "'" not in package.EXTENSIONS_PROBE  # (it is one single-quoted word of the script)
    assert "--token" not in package.install_script("http://x:1").split("register --endpoint")[1].split("\n")[0]


_AGENT_ENTRY_MODULES = ("opencbr.agent.cli", "opencbr.agent.serve", "opencbr.agent.tasks", "opencbr.agent.tasks.operations")


def test_what_the_agent_imports_is_among_its_package_s_dependencies():
    """A host installs the agent's package with AGENT_DEPENDENCIES only: every module the running agent
    imports (its tasks included) must import with the service's other dependencies absent. (The
    agent's tasks imported the disk-file browser, which needs dissect, while the package did not
    declare it: every backup and restore on a packaged agent failed with ModuleNotFoundError.)"""
    import tomllib
    from importlib.metadata import packages_distributions

    declared = {re.split(r"[=<>\[ ]", d)[0].lower().replace("_", "-") for d in package.AGENT_DEPENDENCIES}
    service = {re.split(r"[=<>\[ ]", d)[0].lower().replace("_", "-")
               for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    modules_of = packages_distributions()
    absent = sorted({top for top, dists in modules_of.items()
                     if {d.lower().replace("_", "-") for d in dists} & (service - declared)
                     and not {d.lower().replace("_", "-") for d in dists} & declared})
    assert "fastapi" in absent and "blake3" not in absent
    probe = f"""
import importlib.abc, sys
ABSENT = set({absent!r})
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not a dependency of the agent's package)")
sys.meta_path.insert(0, Absent())
for m in {_AGENT_ENTRY_MODULES!r}:
    __import__(m)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
