"""The one thing pyproject.toml cannot say without setuptools' experimental ``ext-modules``: the walker's
directory listing in C (src/opencbr/engine/tree/_listing.c, one call per directory without the GIL).

It is optional: where it cannot be built (no compiler, no Python headers) the install goes on without it
and the walker lists directories in Python (engine/tree/walker.py), with the same results.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("opencbr.engine.tree._listing", ["src/opencbr/engine/tree/_listing.c"], optional=True)])
