"""The ``clemalign`` console script: Ctrl-C while the modules load exits quietly too."""

from __future__ import annotations

import os
import sys


def run() -> None:
    """Load the command line and run it; exit with its status."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("clemalign: aborted\n")
        sys.exit(130)
    code = main()
    if code == 130:
        # worker threads may still be inside a C++ optimisation; the outputs are already
        # cleaned up, so do not wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)
