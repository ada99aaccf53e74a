"""How many threads a step may use: one setting, passed down from the caller."""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor

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


def map_in_threads(fn: Callable, items: Sequence, workers: int) -> list:
    """``[fn(x) for x in items]`` on up to ``workers`` threads, in order, each call in a
    copy of the caller's context (:func:`submit_in_context`); in turn when one thread
    would do.  For independent pieces of work whose results do not depend on how they
    are shared out (templates, placements, block rows, slabs of planes)."""
    n = min(int(workers), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(n) as pool:
        futures = [submit_in_context(pool, fn, x) for x in items]
        return [f.result() for f in futures]


def spans(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges of nearly equal length covering
    ``range(n)``."""
    edges = [n * k // parts for k in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


# how much lower a background thread's priority is by default (Linux nice steps): the
# scheduler then gives it the cores the foreground threads leave idle
BACKGROUND_NICE = 10


def _lowered(lower_by: int, fn: Callable, /, *args, **kwargs):
    if sys.platform.startswith("linux"):
        try:  # this thread only (a Linux thread id names one thread here)
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid,
                           min(19, os.getpriority(os.PRIO_PROCESS, tid) + lower_by))
        except OSError:
            pass
    return fn(*args, **kwargs)


def submit_in_background(pool: Executor, fn: Callable, /, *args,
                         lower_by: int = BACKGROUND_NICE, **kwargs) -> Future:
    """:func:`submit_in_context` at a scheduling priority ``lower_by`` nice steps lower
    (Linux; elsewhere as is): work done ahead on a spare core yields to the foreground
    thread it would otherwise slow down, and work needed later yields to work needed
    sooner (a larger ``lower_by``).  The pool's thread keeps that priority (so do the
    threads it starts): give it a pool of its own."""
    return submit_in_context(pool, _lowered, int(lower_by), fn, *args, **kwargs)
