"""The ``local`` provider: disks, servers and file systems on the machines that run OpenCBR workers.

A disk is a raw image file or a block device; a file system is a directory tree; a server is a named
set of disks with a power state kept in the catalog. :mod:`.paths` holds the rules for the paths
tenants name, :mod:`.beneath` opens below a root without following symlinks, :mod:`.opened` opens a
resource and checks it is still the registered object, :mod:`.views` takes a point in time of a
server's disks, and :mod:`.provider` offers all of it behind :class:`opencbr.providers.base.Provider`.
"""
