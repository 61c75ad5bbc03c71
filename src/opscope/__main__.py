"""``python -m opscope``: the command line."""

from opscope.cli import run

run()
