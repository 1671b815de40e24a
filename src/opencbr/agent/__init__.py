"""``opencbr-agent``: the program that runs on a protected Linux host (docs/agents.md).

It listens with mutual TLS (``agentlink``) for the service's workers and scheduler, reports what the
host has (``inventory``), opens only what its configured roots and device policy allow
(``confinement``), takes one point in time across disks (``consistency``) and runs the data operations
of ``agent.tasks`` (the engine's own backup and restore code, reading and writing where the data is).
The command line is ``agent.cli``; it imports nothing heavier than the engine's dependencies.
"""

from opencbr import __version__

VERSION = __version__
