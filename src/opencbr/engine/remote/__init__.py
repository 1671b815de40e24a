"""The remote chunk service: the engine's backup and restore code running where the data is (an agent's
host), with the vault staying where the service is.

The two ends talk over any object with the ``Channel`` interface (``send``, ``recv``, ``request``; one
thread at a time): ``service`` (worker side) answers from the vault's :class:`~opencbr.engine.Repository`;
``client`` (agent side) implements the engine's chunk-sink and chunk-reader seams over it
(:class:`RemoteChunks`). Messages (header ``op``; payloads are raw bytes)::

    need      digests (32 bytes each)            -> one byte per digest: 1 = send it (claimed for you)
    records   per record: digest | record        -> ok (each record decoded and checked before it is kept)
    known     digests                            -> one byte per digest: 1 = the vault holds it
    read      digests (refs of the scope only)   -> stored records (the agent decodes and checks them)
    manifest  name (a backup the scope names)    -> header, refs | payload
    manifest_head  name (protocol 2)             -> header, refs length; payload
    refs      name, at, length (protocol 2)      -> refs at:at + length (8 MiB at most: a restore's window)
    commit_refs  name, at, total (protocol 2)    -> ok (refs at:at + 8 MiB at most, in order, checked and spooled)
    commit    name (the scope's), header, refs | payload -> manifest size, session stats
              (protocol 2: refs_sent = the total sent by commit_refs, no refs in the message)
    abort                                        -> ok (the session's packs are deleted)

Protocol versions: the task request's ``vault`` says which the service speaks (``protocol``; none: 1).
Version 2 adds ``manifest_head`` and ``refs``, so an agent reads a large disk's refs a window at a time
(``manifest`` sent them all in one answer), and ``commit_refs``, so it sends them the same way before its
``commit`` (one message of a disk's refs passed the channel's 256 MiB limit at 512 GiB of disk);
the service still answers ``manifest`` and takes refs in ``commit`` from older agents.

And last the agent's own answer to its task, ``{"ok": ..., "result": ...}`` (no ``op``), which ends the
conversation.
"""

from .service import BackupScope, ReadScope, serve_backup, serve_restore

__all__ = ["BackupScope", "ReadScope", "serve_backup", "serve_restore"]
