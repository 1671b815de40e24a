"""The agent as an installable package, built from this installation's own source (standard library only).

The service serves what a protected host installs (docs/agents.md): a wheel (``build_agent_wheel``: no
build step on the host) and a source package (``build_agent_sdist``), both named ``opencbr-agent`` with
the service's version, holding only the packages the agent runs (``AGENT_PACKAGES``) and depending only
on what those import (``AGENT_DEPENDENCIES``); plus the installation script (``install_script``) and the
systemd unit (``SYSTEMD_UNIT``, the text of packaging/opencbr-agent.service). Builds are reproducible:
the same source gives the same bytes.

The wheel also carries the tree engine's C extensions as this installation built them (``_extensions``).
A host whose Python has the same extension suffix (version, architecture) loads them; the engine checks
each against its Python code on first use and falls back to the Python readers where a module does not
load (another glibc) or does not agree. Without them a full backup through an agent took 12 % longer
on the bench tree and 30-50 % longer on a tree of small files (bench/README.md). The source package
carries their C sources and the repository's ``setup.py`` (``_c_sources``), so a host with a compiler and
its Python's headers builds them for its own Python; without, the install goes on without them.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import io
import os
import shlex
import tarfile
import zipfile
from pathlib import Path

from opencbr import __version__

NAME = "opencbr-agent"
#: The packages an agent runs: itself, the transport, the engine (it runs where the data is) and what
#: those import (storage: the engine's store interface; system: OS helpers; domain: request signing).
AGENT_PACKAGES = ("agent", "agentlink", "engine", "storage", "system", "domain")
#: Pinned as in the service's pyproject.toml (tests/agentlink/test_package.py checks they agree).
#: The dissect parsers are for single files restored from a disk backup onto the host (the agent's tasks
#: import the disk-file browser; tests/agentlink/test_package.py imports the agent with nothing else).
AGENT_DEPENDENCIES = ("blake3==1.0.11", "zstandard==0.25.0", "cryptography==50.0.2", "pyfastcdc==0.3.1",
                      "dissect.extfs==3.15", "dissect.fat==3.13", "dissect.volume==3.18")
REQUIRES_PYTHON = ">=3.11"
SUMMARY = "OpenCBR agent: lets an OpenCBR service back up and restore this host's disks and directories"
PREFIX = "/opt/opencbr-agent"
#: The file the one-line installation saves the install script as, in the current directory.
INSTALL_FILE = "opencbr-agent-install.sh"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: reproducible archives
_MTIME = 315532800

SYSTEMD_UNIT = """\
# The OpenCBR agent (docs/agents.md in the OpenCBR repository). Installed by the agent's install script.
[Unit]
Description=OpenCBR agent (backup and restore of this host for an OpenCBR service)
After=network-online.target lvm2-monitor.service
Wants=network-online.target

[Service]
Type=simple
ExecStart=/opt/opencbr-agent/bin/opencbr-agent run
Restart=on-failure
RestartSec=5
# process: a stop or a crash of the agent leaves the hooks' post-thaw guardian alive, which must still
# thaw the applications (it ends by itself within the hold timeout). Not mixed: mixed sends SIGKILL to
# every remaining process of the unit as soon as the main process has exited.
KillMode=process
# 2: not enrolled or revoked (opencbr-agent register first): restarting would not help
RestartPreventExitStatus=2
# Root, because the agent reads and writes block devices (and image files of any owner below its roots).
# What root may do is narrowed to what backups need: reading any file (CAP_DAC_READ_SEARCH), writing
# restored files with their owners and modes (CAP_CHOWN, CAP_FOWNER, CAP_DAC_OVERRIDE, CAP_MKNOD for
# device nodes in restored trees), LVM snapshots and fsfreeze (CAP_SYS_ADMIN; CAP_IPC_LOCK: LVM locks
# its memory while a volume is suspended), raw block I/O (CAP_SYS_RAWIO), and binding its port.
User=root
CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER CAP_FSETID CAP_MKNOD CAP_SYS_ADMIN CAP_IPC_LOCK CAP_SYS_RAWIO CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
# Block devices stay reachable: no PrivateDevices, no DeviceAllow (and no ProtectClock, which implies
# one and so closes every other device); the file systems stay writable where the roots are
# (ProtectSystem would make restores into /usr or /etc fail). The rest of the hardening does not get in
# the way of reading disks:
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=no
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=no
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
SystemCallArchitectures=native
StateDirectory=opencbr-agent
StateDirectoryMode=0700
ConfigurationDirectory=opencbr-agent
ConfigurationDirectoryMode=0700
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def _source_root() -> Path:
    import opencbr

    return Path(opencbr.__file__).resolve().parent


def _agent_files(*patterns: str) -> list[tuple[str, bytes]]:
    """(path below ``opencbr/``, content) of the agent's packages' files matching ``patterns``, sorted."""
    root = _source_root()
    return sorted((f"opencbr/{path.relative_to(root).as_posix()}", path.read_bytes())
                  for package in AGENT_PACKAGES for pattern in patterns for path in (root / package).rglob(pattern)
                  if "__pycache__" not in path.parts)


def _files() -> list[tuple[str, bytes]]:
    """(path below ``opencbr/``, content) of every module of the agent's packages, sorted."""
    return sorted([("opencbr/__init__.py", (_source_root() / "__init__.py").read_bytes()), *_agent_files("*.py")])


def _extensions() -> list[tuple[str, bytes]]:
    """The agent's packages' C extensions built for this interpreter (its most specific suffix, e.g.
    ``.cpython-311-x86_64-linux-gnu.so``), as :func:`_files`; none where none is built."""
    return _agent_files(f"*{importlib.machinery.EXTENSION_SUFFIXES[0]}")


def _c_sources() -> list[tuple[str, bytes]]:
    """(path in the source package, content) of the agent's packages' C sources and the ``setup.py`` that
    builds them as optional extensions, where this installation has them (a checkout, an editable
    install); none otherwise."""
    setup_py = _source_root().parents[1] / "setup.py"
    found = [(f"src/{path}", data) for path, data in _agent_files("*.c", "*.h")]
    if not found or not setup_py.is_file():
        return []
    return found + [("setup.py", setup_py.read_bytes())]


def _metadata() -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {__version__}", f"Summary: {SUMMARY}",
             "License: AGPL-3.0-or-later", f"Requires-Python: {REQUIRES_PYTHON}"]
    return "\n".join(lines + [f"Requires-Dist: {d}" for d in AGENT_DEPENDENCIES]) + "\n"


def _pyproject() -> str:
    deps = ", ".join(f'"{d}"' for d in AGENT_DEPENDENCIES)
    return f"""[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{NAME}"
version = "{__version__}"
description = "{SUMMARY}"
requires-python = "{REQUIRES_PYTHON}"
license = {{text = "AGPL-3.0-or-later"}}
dependencies = [{deps}]

[project.scripts]
opencbr-agent = "opencbr.agent.cli:main"

[tool.setuptools.packages.find]
where = ["src"]
include = ["opencbr", {", ".join(f'"opencbr.{p}", "opencbr.{p}.*"' for p in AGENT_PACKAGES)}]
"""


def sdist_name() -> str:
    return f"{NAME}-{__version__}.tar.gz"


def wheel_name() -> str:
    return f"{NAME.replace('-', '_')}-{__version__}-py3-none-any.whl"


def build_agent_sdist(dest_dir: str) -> str:
    """``<dest_dir>/opencbr-agent-<version>.tar.gz``; its path."""
    top = f"{NAME}-{__version__}"
    members = [(f"{top}/src/{p}", data) for p, data in _files()]
    members += [(f"{top}/{p}", data) for p, data in _c_sources()]
    members += [(f"{top}/pyproject.toml", _pyproject().encode()), (f"{top}/PKG-INFO", _metadata().encode()),
                (f"{top}/packaging/opencbr-agent.service", SYSTEMD_UNIT.encode())]
    path = os.path.join(dest_dir, sdist_name())
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), _MTIME, 0o644, "root", "root"
            tar.addfile(info, io.BytesIO(data))
    import gzip

    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=_MTIME, filename="") as gz:
        gz.write(raw.getvalue())
    return path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_agent_wheel(dest_dir: str) -> str:
    """``<dest_dir>/opencbr_agent-<version>-py3-none-any.whl``; its path. Python, and the C extensions
    this installation built: optional where the host's Python cannot load them, hence the pure tag."""
    info = f"{NAME.replace('-', '_')}-{__version__}.dist-info"
    members = _files() + _extensions() + [
        (f"{info}/METADATA", _metadata().encode()),
        (f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: opencbr\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{info}/entry_points.txt", b"[console_scripts]\nopencbr-agent = opencbr.agent.cli:main\n"),
    ]
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in members) + f"{info}/RECORD,,\n"
    path = os.path.join(dest_dir, wheel_name())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members + [(f"{info}/RECORD", record.encode())]:
            entry = zipfile.ZipInfo(name, _EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    return path


#: Whether both extensions the agent installed load with its Python (exit status 0): each opened as
#: the file it is, so the check needs neither the engine's dependencies nor its package imported. (The
#: engine itself then checks each against its Python code when it loads it.)
EXTENSIONS_PROBE = """import importlib.util, importlib.machinery, os, sys, sysconfig
def loads(name):
    for lib in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(lib, "opencbr", "engine", "tree", name + suffix)
            if os.path.exists(path):
                spec = importlib.util.spec_from_file_location("opencbr.engine.tree." + name, path)
                try:
                    spec.loader.exec_module(importlib.util.module_from_spec(spec))
                    return True
                except ImportError:
                    return False
    return False
sys.exit(not (loads("_listing") and loads("_reading")))"""

#: The install script's step after the wheel: the tree engine's C extensions in the wheel are the service's
#: build, which load only where the host's Python has the same extension suffix (3.11 on x86-64 Linux, say).
#: Elsewhere (Ubuntu 24.04's 3.12) the agent would list and read trees in Python, 30-50 % slower on small
#: files; so the script builds them from the source package where a C compiler and Python's headers are
#: present, and otherwise says what to install. ``OPENCBR_AGENT_BUILD``: ``auto`` (that), ``always`` (build
#: even where the wheel's load), ``never``. A failed build leaves the wheel's install as it was.
_BUILD_EXTENSIONS = """BUILD="${OPENCBR_AGENT_BUILD:-auto}"
native_ok() {
  "$PREFIX/bin/python" -I -c 'PROBE' 2>/dev/null
}
can_build() {
  { command -v cc || command -v gcc; } >/dev/null && "$PREFIX/bin/python" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}
if [ "$BUILD" = always ] || { [ "$BUILD" = auto ] && ! native_ok; }; then
  if can_build; then
    echo "==> building the tree engine's C extensions for this host's Python"
    fetch "$ENDPOINT/agent/SDIST" "$TMP/SDIST"
    "$PREFIX/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$TMP/SDIST" || true
    native_ok || echo "    the build failed (zlib's headers? zlib1g-dev): the agent lists and reads trees in Python" >&2
  else
    echo "==> note: the agent will list and read trees in Python (30-50 % slower on small files): the package's C" >&2
    echo "    extensions do not load with this host's Python, and building them needs a C compiler and Python's" >&2
    echo "    headers (Debian/Ubuntu: apt-get install gcc python3-dev zlib1g-dev), then run this script again" >&2
  fi
fi
"""


def install_line(endpoint: str, args: str) -> str:
    """The one line that installs the agent on a host from the service at ``endpoint``; ``args`` are the
    script's (``--token T --root DIR``...). The script is saved to a file and run only if that worked:
    ``curl URL | sh`` ran an empty script when curl could not connect, and the line succeeded silently."""
    return f"curl -fsSLo {INSTALL_FILE} {endpoint.rstrip('/')}/agent/install.sh && sudo sh {INSTALL_FILE} {args}"


def install_script(endpoint: str, token: str = "") -> str:
    """A POSIX shell script that installs the agent on a host from the service at ``endpoint``, enrols
    it (with ``token``, or a ``--token`` among the script's arguments) and starts its systemd unit.
    Arguments are passed to ``opencbr-agent register`` (``--root DIR``, ``--advertise HOST:PORT``...).
    The environment may change where it installs (``OPENCBR_AGENT_PREFIX``, ``OPENCBR_AGENT_UNIT_DIR``;
    ``OPENCBR_AGENT_BIN_DIR``, default /usr/local/bin, gets a link to the ``opencbr-agent`` command),
    whether it builds the tree engine's C extensions for the host (``OPENCBR_AGENT_BUILD``, see
    ``_BUILD_EXTENSIONS``), whether it installs and starts the systemd unit (``OPENCBR_AGENT_SYSTEMD``: ``auto``,
    where systemd runs the host, ``yes``, ``no``) and how the virtual environment is made (``OPENCBR_AGENT_VENV_ARGS``, e.g. ``--system-site-packages``
    to use the distribution's python3-cryptography); pip reads its own ``PIP_*`` variables (an offline
    index: ``PIP_NO_INDEX=1 PIP_FIND_LINKS=/dir``)."""
    endpoint = endpoint.rstrip("/")
    token_args = f"--token {shlex.quote(token)} " if token else ""
    # the unit runs the configuration register writes: the default, or a --config among the arguments
    # (both as systemd words: a path with spaces, quotes, % or $ in it stays one argument)
    unit = SYSTEMD_UNIT.replace(f"{PREFIX}/bin/opencbr-agent run", "${AGENT_WORD}${CONFIG_ARG} run")
    return f"""#!/bin/sh
# Installs the OpenCBR agent {__version__} from {endpoint} (docs/agents.md):
#   {install_line(endpoint, "--token TOKEN --root DIR [--root DIR ...] [--advertise HOST:PORT]")}
set -eu
ENDPOINT={shlex.quote(endpoint)}
PREFIX="${{OPENCBR_AGENT_PREFIX:-{PREFIX}}}"
UNIT_DIR="${{OPENCBR_AGENT_UNIT_DIR:-/etc/systemd/system}}"
BIN_DIR="${{OPENCBR_AGENT_BIN_DIR:-/usr/local/bin}}"
# one word of a systemd ExecStart line: in double quotes, with backslash, double quote, % and $ escaped
unit_word() {{
  printf '"%s"' "$(printf '%s' "$1" | sed -e 's/[\\\\"]/\\\\&/g' -e 's/%/%%/g' -e 's/\\$/$$/g')"
}}
AGENT_WORD=$(unit_word "$PREFIX/bin/opencbr-agent")
CONFIG_ARG=""
CONFIG_SAY=""
prev=""
for a in "$@"; do
  case "$prev" in --config) CONFIG_ARG=" --config $(unit_word "$a")"; CONFIG_SAY=" --config '$a'";; esac
  case "$a" in --config=*) CONFIG_ARG=" --config $(unit_word "${{a#--config=}}")"; CONFIG_SAY=" --config '${{a#--config=}}'";; esac
  prev="$a"
done
[ "$(id -u)" = 0 ] || {{ echo "run this as root: the agent reads and writes block devices" >&2; exit 1; }}
command -v python3 >/dev/null || {{ echo "python3 (3.11 or later) is needed" >&2; exit 1; }}
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {{ echo "python3 must be 3.11 or later" >&2; exit 1; }}
# systemd runs the host's services only where it is PID 1, which makes /run/systemd/system: in a container
# systemctl may be installed and refuse ("System has not been booted with systemd"), which it said only
# after the one-time token was used up. Without it the agent is installed and enrolled, not started.
SYSTEMD="${{OPENCBR_AGENT_SYSTEMD:-auto}}"
if [ "$SYSTEMD" = auto ]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then SYSTEMD=yes; else SYSTEMD=no; fi
fi
if [ "$SYSTEMD" = yes ]; then
  command -v systemctl >/dev/null || {{ echo "OPENCBR_AGENT_SYSTEMD=yes, but there is no systemctl" >&2; exit 1; }}
else
  echo "==> note: systemd does not run this host (a container?): the agent is installed and enrolled, not started" >&2
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fetch() {{
  if command -v curl >/dev/null; then curl -fsSL "$1" -o "$2"
  else python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"; fi
}}
echo "==> the agent's environment in $PREFIX"
python3 -m venv ${{OPENCBR_AGENT_VENV_ARGS:-}} "$PREFIX" || {{ echo "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }}
echo "==> the agent package from $ENDPOINT and its dependencies ({", ".join(d.split("==")[0] for d in AGENT_DEPENDENCIES)})"
fetch "$ENDPOINT/agent/package.whl" "$TMP/{wheel_name()}"
"$PREFIX/bin/pip" install -q --disable-pip-version-check --upgrade "$TMP/{wheel_name()}" || {{
  # (before enrolling: the token is still unused)
  echo "pip could not install the agent with its dependencies ({" ".join(AGENT_DEPENDENCIES)})." >&2
  echo "Without access to a package index, on a machine with one (and this host's Python version and architecture):" >&2
  echo "  pip download -d DIR $ENDPOINT/agent/{wheel_name()}" >&2
  echo "then copy DIR to this host and run this script again with PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR in its" >&2
  echo 'environment (sudo env PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR sh ...; docs/agents.md, "A host without a package index")' >&2
  exit 1
}}
{_BUILD_EXTENSIONS.replace("SDIST", sdist_name()).replace("PROBE", EXTENSIONS_PROBE)}echo "==> enrolling this host"
"$PREFIX/bin/opencbr-agent" register --endpoint "$ENDPOINT" {token_args}"$@" </dev/null
if [ -d "$BIN_DIR" ]; then ln -sf "$PREFIX/bin/opencbr-agent" "$BIN_DIR/opencbr-agent"; fi
if [ "$SYSTEMD" = no ]; then
  echo "==> done, but nothing starts the agent: systemd does not run this host. Run it in the foreground with"
  echo "    $PREFIX/bin/opencbr-agent$CONFIG_SAY run"
  echo "    or under the host's own supervisor (it runs until SIGTERM), as root; opencbr-agent$CONFIG_SAY status shows its state"
  exit 0
fi
echo "==> the systemd unit $UNIT_DIR/opencbr-agent.service"
cat > "$UNIT_DIR/opencbr-agent.service" <<UNIT
{unit}UNIT
systemctl daemon-reload
systemctl enable --now opencbr-agent
systemctl --no-pager --lines=0 status opencbr-agent || true
echo "==> done: opencbr-agent$CONFIG_SAY status shows the agent's state"
"""


if __name__ == "__main__":  # python -m opencbr.agentlink.package DIR: the wheel and sdist for an offline install
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    print(build_agent_wheel(out))
    print(build_agent_sdist(out))
