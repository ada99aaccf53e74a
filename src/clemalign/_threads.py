"""How many threads a step may use: one setting, passed down from the caller."""

from __future__ import annotations

import os

# beyond this the numpy/scipy steps (FFTs, separable filters) stop getting faster
_MAX_DEFAULT_WORKERS = 4


def resolve_workers(workers: int | None) -> int:
    """The thread count for ``workers``: itself (at least 1), or the machine's cores
    (at most :data:`_MAX_DEFAULT_WORKERS`) when None."""
    if workers is None:
        return max(1, min(_MAX_DEFAULT_WORKERS, os.cpu_count() or 1))
    return max(1, int(workers))
