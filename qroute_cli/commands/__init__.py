"""One module per command; each exposes `register(app)`.

COMMANDS lists them in the order `qroute --help` shows them.
"""

from __future__ import annotations

from qroute_cli.commands import models, run

COMMANDS = [run.register, models.register]
