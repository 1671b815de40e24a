"""Resource providers: whatever holds the disks, servers and file systems OpenCBR protects, behind one
interface (:mod:`.base`), chosen per resource by :mod:`.registry`; ``local`` is the first (:mod:`.local`)."""
