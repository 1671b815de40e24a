"""``python -m opencbr.cli``: the ``cbr`` command."""

from opencbr.cli.main import app

app(prog_name="cbr")
