"""``python -m opencbr.agent``: the same as the ``opencbr-agent`` command."""

import sys

from opencbr.agent.cli import main

sys.exit(main())
