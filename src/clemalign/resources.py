"""Memory guard: refuse an allocation that cannot fit, before making it.

Large arrays are checked with :func:`check_memory` where their size is known (a file
read whole, a resampled grid, the LM on the EM grid): the run stops with a one-line
:class:`~clemalign.errors.InputError` that names the file or voxel size behind the size,
instead of failing deep inside numpy, or swapping, minutes later.  The limit is the
memory available now (``MemAvailable``), or what :func:`memory_limit` sets (the CLI's
``--max-memory``).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from .errors import InputError

__all__ = ["available_memory_bytes", "memory_limit", "check_memory", "GIB"]

GIB = 1024.0 ** 3
_LIMIT: contextvars.ContextVar[float | None] = contextvars.ContextVar("memory_limit",
                                                                     default=None)


def available_memory_bytes() -> float:
    """Memory available to new allocations now (Linux ``MemAvailable``; else physical)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


@contextlib.contextmanager
def memory_limit(limit_gib: float | None) -> Iterator[None]:
    """Within the block, :func:`check_memory` allows at most ``limit_gib`` GiB per array
    (None: the available memory)."""
    token = _LIMIT.set(None if limit_gib is None else float(limit_gib) * GIB)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Raise when an array of ``nbytes`` cannot fit.

    Parameters
    ----------
    nbytes : float
        Size of the array about to be made.
    what : str
        What it is and what makes it so large (named in the message).
    fix : str
        What the user can do.

    Raises
    ------
    InputError
    """
    limit = _LIMIT.get()
    source = "--max-memory"
    if limit is None:
        limit, source = available_memory_bytes(), "the memory available"
    if nbytes > limit:
        raise InputError(f"{what} needs {nbytes / GIB:.1f} GiB, more than {source} "
                         f"({limit / GIB:.1f} GiB); {fix}")
