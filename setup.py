"""The one thing pyproject.toml cannot say without setuptools' experimental ``ext-modules``: the tree engine's
optional C extensions, each one call without the GIL where Python would make many system calls --
src/opencbr/engine/tree/_listing.c (a directory's listing, for the walker, and an incremental backup's reuse;
it links zlib for the CRC-32 of the catalog's cut test) and _reading.c (a batch of small files, for the
backup's readers; zlib for the bundles' cut test).

They are optional: where one cannot be built (no compiler, no Python or zlib headers) the install goes on
without it and the engine does the same in Python (engine/tree/walker.py, sources.py), with the same results.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("opencbr.engine.tree._listing", ["src/opencbr/engine/tree/_listing.c"], libraries=["z"],
              depends=["src/opencbr/engine/tree/opening.h"], optional=True),
    Extension("opencbr.engine.tree._reading", ["src/opencbr/engine/tree/_reading.c"], libraries=["z"],
              depends=["src/opencbr/engine/tree/opening.h"], optional=True),
])
