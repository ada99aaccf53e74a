"""``python -m clemalign``: the command line."""

from ._entry import run

run()
