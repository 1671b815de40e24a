"""The ``agent`` provider: disks, servers and file systems of hosts that run ``opencbr-agent``."""
