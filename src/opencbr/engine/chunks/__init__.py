"""The core chunk store, which knows nothing of disks or trees (like pbs-datastore's chunk_store or
restic's internal/repository): content-addressed chunks (``codec``, ``crypto``) in packs (``packs``),
where each chunk is (``locations``), backups as manifests (``manifests``), writer and GC locks
(``locks``), the write session that orders packs -> locations -> manifest (``session``), reads with
fall-back to other copies (``store``, ``reader``) and garbage collection (``gc``)."""
