"""One module per command; each exposes `register(app)`.

COMMANDS lists them in the order `qroute --help` shows them.
"""

from __future__ import annotations

from qroute_cli.cli.commands import bench, calibrate, chat, models, run, score, stats

COMMANDS = [run.register, chat.register, models.register, calibrate.register, stats.register, score.register, bench.register]
