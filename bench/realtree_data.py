#!/usr/bin/env python3
"""A deterministic file tree shaped like a real system tree (stdlib only), and its "package upgrade".

    python bench/realtree_data.py make DIR [--scale 1.0] [--seed 1]
    python bench/realtree_data.py upgrade DIR [--seed 2]

``make`` at scale 1 writes ~61,000 entries in ~0.9 GB, laid out like ``/usr`` (headers under
``include/<pkg>/...``, message catalogues under ``share/locale/<lang>/LC_MESSAGES``, documentation,
Python packages with their ``.pyc``, shared libraries with their ``libX.so -> libX.so.1 -> libX.so.1.2.3``
symlink chains, a deep kernel-headers-like source tree):

- sizes: median of a few KB (log-normal), a long tail of libraries of hundreds of KB to a few MB and a few
  files of tens of MB (a locale archive, a compiler, a firmware blob);
- content: text-like (compressible ~3x: headers, sources, docs) mixed with binaries (incompressible
  archives and images, half-compressible libraries and ``.mo``/``.pyc``);
- ~6,000 directories (deep and wide), ~5,000 symlinks (library chains, relative links to files and
  directories, a few dangling), ~400 hard links;
- modes, mtimes set; same arguments -> byte-identical tree.

``upgrade`` mutates it like a package upgrade: appends to 3 % of the regular files (changelogs, lists,
sources), adds 2,000 new files (a new versioned package directory and files scattered in existing ones),
removes 1,000 (scaled with ``--scale`` when the tree was made smaller).
"""
import argparse
import math
import os
import random
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_dataset import TextGen  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
T0 = 1_600_000_000
LANGS = ["af", "ar", "bg", "ca", "cs", "da", "de", "el", "en_GB", "eo", "es", "et", "eu", "fa", "fi", "fr",
         "ga", "gl", "he", "hr", "hu", "id", "it", "ja", "ko", "lt", "nb", "nl", "pl", "pt", "pt_BR", "ro",
         "ru", "sk", "sl", "sr", "sv", "tr", "uk", "vi", "zh_CN", "zh_TW"]
SRC_EXT = [".c", ".h", ".py", ".S", ".rs", ".txt", ".rst", ".json", ".xml", ".sh", ".pl", ".conf"]


def word(rng, lo=3, hi=10):
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(lo, hi)))


def small_size(rng, median=3000):
    return int(min(1 * MiB, rng.lognormvariate(math.log(median), 1.25)))


def content(rng, tg, kind, size):
    if kind == "text":
        return tg.gen(rng, size)
    if kind == "bin":  # archives, images, compressed docs
        return rng.randbytes(size)
    # "half" (.so, .mo, .pyc): runs of zeros, strings and code-like random bytes
    out, n = [], 0
    while n < size:
        c = min(size - n, rng.choice((256, 1024, 4096)))
        t = rng.random()
        out.append(bytes(c) if t < 0.2 else (tg.gen(rng, c) if t < 0.55 else rng.randbytes(c)))
        n += c
    return b"".join(out)


class Plan:
    """What to write: directories, regular files (path, kind, size), symlinks (path, target), hard links."""

    def __init__(self, rng, scale):
        self.rng, self.scale = rng, scale
        self.dirs: set[str] = set()
        self.files: list[tuple[str, str, int]] = []
        self.symlinks: list[tuple[str, str]] = []

    def n(self, count):
        return max(1, int(count * self.scale))

    def d(self, path):
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            self.dirs.add("/".join(parts[:i]))
        return path

    def f(self, path, kind, size):
        self.d(os.path.dirname(path))
        self.files.append((path, kind, size))

    def packages(self):
        rng = self.rng
        pkgs = sorted({word(rng, 3, 9) for _ in range(self.n(900))})
        for p in pkgs:
            doc = self.d(f"usr/share/doc/{p}")
            self.f(f"{doc}/copyright", "text", small_size(rng, 6000))
            self.f(f"{doc}/changelog.Debian.gz", "bin", small_size(rng, 2000))
            if rng.random() < 0.3:
                self.f(f"{doc}/README.md", "text", small_size(rng, 4000))
            subs = ["", "", word(rng), word(rng) + "/" + word(rng)]
            if rng.random() < 0.4:  # headers, some of them nested
                for _ in range(rng.randint(2, 40)):
                    sub = rng.choice(subs)
                    self.f(f"usr/include/{p}/{sub + '/' if sub else ''}{word(rng)}.h", "text", small_size(rng))
            if rng.random() < 0.5:  # message catalogues in many languages
                for lang in rng.sample(LANGS, rng.randint(5, len(LANGS))):
                    self.f(f"usr/share/locale/{lang}/LC_MESSAGES/{p}.mo", "half", small_size(rng, 5000))
            if rng.random() < 0.35:  # a python package: modules and their bytecode
                for _ in range(rng.randint(3, 30)):
                    sub = rng.choice(subs[:3])
                    m = word(rng)
                    base = f"usr/lib/python3/dist-packages/{p}/{sub + '/' if sub else ''}"
                    self.f(f"{base}{m}.py", "text", small_size(rng, 4000))
                    self.f(f"{base}__pycache__/{m}.cpython-311.pyc", "half", small_size(rng, 3000))
            if rng.random() < 0.35:  # a shared library and its symlink chain
                lib = f"usr/lib/x86_64-linux-gnu/lib{p}.so"
                major, full = f"{lib}.{rng.randint(0, 9)}", f"{lib}.{rng.randint(0, 9)}.{rng.randint(0, 30)}.0"
                self.f(full, "half", int(math.exp(rng.uniform(math.log(40 * KiB), math.log(3 * MiB)))))
                self.symlinks.append((major, os.path.basename(full)))
                self.symlinks.append((lib, os.path.basename(major)))
            if rng.random() < 0.2:
                self.f(f"usr/bin/{p}", "half", int(math.exp(rng.uniform(math.log(20 * KiB), math.log(1 * MiB)))))
            if rng.random() < 0.15:
                for _ in range(rng.randint(1, 20)):
                    self.f(f"usr/share/{p}/{word(rng)}.{rng.choice(['png', 'svg', 'xml', 'json', 'css'])}",
                           rng.choice(["bin", "text"]), small_size(rng, 3000))

    def kernel_headers(self):
        """A deep, wide source tree (like linux-headers): thousands of small text files."""
        rng = self.rng
        dirs = ["usr/src/linux-headers-6.1.0"]
        for _ in range(self.n(1300)):
            parent = rng.choice(dirs)
            if parent.count("/") < 11:
                dirs.append(self.d(f"{parent}/{word(rng, 2, 8)}"))
        for _ in range(self.n(16000)):
            self.f(f"{rng.choice(dirs)}/{word(rng, 2, 12)}{rng.choice(SRC_EXT)}", "text", small_size(rng, 2500))
        for _ in range(self.n(3500)):  # relative links between its parts (arch/ includes, scripts)
            a, b = rng.choice(dirs), rng.choice(self.files)[0]
            self.symlinks.append((f"{a}/{word(rng)}-link", os.path.relpath(b, a)))

    def long_tail(self):
        rng = self.rng
        for i in range(max(1, round(5 * self.scale))):
            size = int(math.exp(rng.uniform(math.log(12 * MiB), math.log(60 * MiB))))
            self.f(f"usr/lib/big/{['locale-archive', 'cc1plus', 'firmware.bin', 'libLLVM.so.15', 'icudt72l.dat'][i % 5]}",
                   rng.choice(["half", "bin"]), size)
        for _ in range(self.n(120)):
            self.f(f"usr/share/fonts/{word(rng)}/{word(rng)}.ttf", "bin", small_size(rng, 120_000))

    def etc_and_var(self):
        rng = self.rng
        etc = [word(rng) for _ in range(self.n(150))]
        for _ in range(self.n(1200)):
            self.f(f"etc/{rng.choice(etc)}/{word(rng)}.conf", "text", small_size(rng, 1500))
        self.d("etc/alternatives")
        for _ in range(self.n(600)):  # alternatives-style absolute-ish links and a few dangling ones
            target = rng.choice(self.files)[0] if rng.random() < 0.9 else f"missing/{word(rng)}"
            self.symlinks.append((f"etc/alternatives/{word(rng)}", "/" + target))
        for _ in range(self.n(1500)):
            self.f(f"var/lib/dpkg/info/{word(rng)}.{rng.choice(['list', 'md5sums', 'postinst'])}", "text",
                   small_size(rng, 2000))


def make(a):
    rng = random.Random(f"realtree-{a.seed}")
    tg = TextGen(a.seed)
    root = os.path.abspath(a.dir)
    plan = Plan(rng, a.scale)
    plan.packages()
    plan.kernel_headers()
    plan.long_tail()
    plan.etc_and_var()
    seen, files = set(), []
    for path, kind, size in plan.files:
        if path not in seen and path not in plan.dirs:
            seen.add(path)
            files.append((path, kind, size))
    os.makedirs(root, exist_ok=True)
    for d in sorted(plan.dirs):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    total = 0
    for path, kind, size in files:
        with open(os.path.join(root, path), "wb") as f:
            f.write(content(rng, tg, kind, size))
        total += size
    nsym = nhard = 0
    for path, target in plan.symlinks:
        if path in seen or path in plan.dirs:
            continue
        seen.add(path)
        os.symlink(target, os.path.join(root, path))
        nsym += 1
    for _ in range(plan.n(400)):  # hard links: the same file under a second name, in another directory
        src = rng.choice(files)[0]
        dst = f"{os.path.dirname(rng.choice(files)[0])}/{word(rng)}-hl"
        if dst not in seen:
            seen.add(dst)
            os.link(os.path.join(root, src), os.path.join(root, dst))
            nhard += 1
    for path, _kind, _size in files:
        mode = 0o755 if path.startswith("usr/bin/") or ".so" in path else (0o600 if rng.random() < 0.03 else 0o644)
        t = T0 + rng.randrange(3 * 365 * 86400)
        os.chmod(os.path.join(root, path), mode)
        os.utime(os.path.join(root, path), (t, t))
    for d in sorted(plan.dirs, key=lambda d: -d.count("/")):
        t = T0 + rng.randrange(3 * 365 * 86400)
        os.utime(os.path.join(root, d), (t, t))
    sizes = sorted(s for _, _, s in files)
    print(f"realtree {root}: {len(files)} files, {nsym} symlinks, {nhard} hard links, {len(plan.dirs)} dirs, "
          f"{total} bytes, median file {sizes[len(sizes) // 2]} B, largest {sizes[-1]} B")


def upgrade(a):
    """Appends to 3 % of the regular files, adds 2,000, removes 1,000 (scaled by the tree's size)."""
    root = os.path.abspath(a.dir)
    rng = random.Random(f"realtree-upgrade-{a.seed}")
    tg = TextGen(a.seed + 7, pool_lines=20_000)
    regular, dirs = [], []
    for dp, dn, fn in os.walk(root):
        dn.sort()
        dirs.append(dp)
        for n in sorted(fn):
            p = os.path.join(dp, n)
            if stat.S_ISREG(os.lstat(p).st_mode):
                regular.append(p)
    scale = len(regular) / 54_000
    k_app, k_new, k_del = max(1, int(len(regular) * 0.03)), max(1, int(2000 * scale)), max(1, int(1000 * scale))
    picked = rng.sample(regular, k_app + k_del)
    now, appended = 1_700_000_000, 0
    for p in picked[:k_app]:
        data = tg.gen(rng, rng.randint(40, 6000))
        os.chmod(p, 0o644)
        with open(p, "ab") as f:
            f.write(data)
        appended += len(data)
        os.utime(p, (now, now))
    for p in picked[k_app:]:
        os.unlink(p)
    newdir = os.path.join(root, f"usr/lib/python3/dist-packages/upgraded_{a.seed}")
    added = 0
    for i in range(k_new):
        d = newdir + f"/m{i // 50}" if i % 2 else rng.choice(dirs)
        os.makedirs(d, exist_ok=True)
        kind = rng.choice(["text", "text", "half", "bin"])
        data = content(rng, tg, kind, small_size(rng))
        p = os.path.join(d, f"new{i}_{word(rng)}")
        with open(p, "wb") as f:
            f.write(data)
        added += len(data)
        os.utime(p, (now, now))
    print(f"upgrade {root}: appended to {k_app} ({appended} B), added {k_new} ({added} B), removed {k_del} "
          f"of {len(regular)} files")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("make")
    p.add_argument("dir")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the full-size tree (files and links)")
    p.add_argument("--seed", type=int, default=1)
    p = sp.add_parser("upgrade")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=2)
    a = ap.parse_args()
    {"make": make, "upgrade": upgrade}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
