"""Threads that run work ahead: the caller's context, and a lower priority on Linux."""

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from clemalign._threads import submit_in_background
from clemalign.resources import memory_limit


def _priority_and_limit():
    from clemalign.resources import _LIMIT

    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), _LIMIT.get()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities: Linux")
def test_background_work_runs_below_the_caller_with_its_context():
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with memory_limit(2.5), ThreadPoolExecutor(1) as pool:
        priority, limit = submit_in_background(pool, _priority_and_limit).result()
    assert priority == min(19, mine + 10)
    with ThreadPoolExecutor(1) as pool:
        priority, _ = submit_in_background(pool, _priority_and_limit, lower_by=3).result()
    assert priority == min(19, mine + 3)
    assert limit == 2.5 * 2**30
    # the caller's own priority is untouched
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
