"""Where a backup puts its chunks and a restore reads them: the vault's own store here, or a vault served
over a channel (:class:`opencbr.engine.remote.client.RemoteChunks`, which has these as methods and is
marked ``remote``). The engine's disk and tree code call these, never WriteSession or the reader directly.
"""

from __future__ import annotations

from .reader import fetch_chunks as _fetch_chunks
from .reader import read_span, spans_of
from .session import WriteSession


def open_session(cs, *, force_new: bool = False):
    """The chunk sink of one backup: ``knows``, ``put_chunk``, ``put_chunks``, ``stats``, ``commit``, ``abort``."""
    if getattr(cs, "remote", False):
        return cs.open_session(force_new=force_new)
    return WriteSession(cs, force_new=force_new)


def fetch_chunks(cs, digests, sink, on_error, *, workers: int = 3, cancel=None, on_span_done=None) -> None:
    """See :func:`opencbr.engine.chunks.reader.fetch_chunks`."""
    if getattr(cs, "remote", False):
        cs.fetch_chunks(digests, sink, on_error, workers=workers, cancel=cancel, on_span_done=on_span_done)
    else:
        _fetch_chunks(cs, digests, sink, on_error, workers=workers, cancel=cancel, on_span_done=on_span_done)


def plan_reads(cs, index, digests, on_missing, **limits) -> list:
    """Group chunks into reads (:func:`~opencbr.engine.chunks.reader.spans_of` over ``index``)."""
    if getattr(cs, "remote", False):
        return cs.plan_reads(index, digests, on_missing, **limits)
    return spans_of(index, digests, on_missing, **limits)


def read_planned(cs, codec, span, *, decode=None):
    """The chunks of one planned read: ``(digest, plaintext, None)`` or ``(digest, None, error)``."""
    if getattr(cs, "remote", False):
        return cs.read_planned(codec, span, decode=decode)
    return read_span(cs, codec, span, decode=decode)
