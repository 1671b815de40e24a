"""The agent's data operations: backups and restores of this host's disks, servers and directories, run by
the engine's own code next to the data, with the vault served by the worker over the task's channel
(:mod:`opencbr.engine.remote`). The agent program dispatches a request by its ``op``::

    result = OPERATIONS[op](ctx, channel, request_header, request_payload)

and answers ``{"ok": True, "result": result}`` (or the error an operation raised). Each data operation
has already used the channel for the chunk conversation when it returns; nothing else may use it
meanwhile.
"""

from .operations import OPERATIONS

__all__ = ["OPERATIONS"]
