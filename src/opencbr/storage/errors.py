"""The storage layer's own exceptions (meaning only; ``services/engine_errors.py`` maps them to CBR
errors). A missing object is a ``KeyError`` of the store interface (see ``base.py``)."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the storage layer's own exceptions."""


class BadStoreURL(StoreError):
    """A store URL that names no store this layer can open (wrong scheme, relative path, no bucket)."""
