"""How many threads a step may use: one setting, passed down from the caller."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future

# beyond this the numpy/scipy steps (FFTs, separable filters) stop getting faster
_MAX_DEFAULT_WORKERS = 4


def resolve_workers(workers: int | None) -> int:
    """The thread count for ``workers``: itself (at least 1), or the machine's cores
    (at most :data:`_MAX_DEFAULT_WORKERS`) when None."""
    if workers is None:
        return max(1, min(_MAX_DEFAULT_WORKERS, os.cpu_count() or 1))
    return max(1, int(workers))


def submit_in_context(pool: Executor, fn: Callable, /, *args, **kwargs) -> Future:
    """``pool.submit(fn, *args, **kwargs)`` run in a copy of the caller's context: the
    context variables a step reads (the ``--max-memory`` limit of
    :func:`clemalign.resources.memory_limit`) reach the thread, which otherwise starts
    with an empty context."""
    return pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)
