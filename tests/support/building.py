"""What building the tree engine's C extensions from source needs on this host."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def can_build_extensions(python: Path) -> bool:
    """A compiler, and the headers of ``python`` and zlib: what building the extensions from source needs."""
    has_headers = subprocess.run([str(python), "-c", "import os, sys, sysconfig; sys.exit(not os.path.exists("
                                  "os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"]).returncode == 0
    return bool(shutil.which("cc") or shutil.which("gcc")) and has_headers and os.path.exists("/usr/include/zlib.h")
