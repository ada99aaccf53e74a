"""Helpers shared by the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """Cores, memory and Python/numpy versions of this machine."""
    import numpy as np

    mem_gib = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gib = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_gib": mem_gib, "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}


def write_results(name: str, payload: dict, table_md: str) -> None:
    """Write ``results/<name>.json`` and ``results/<name>.md`` and print the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table_md)
    print(table_md)


def time_v(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` under ``/usr/bin/time -v``: (wall s, peak resident memory GB); raises
    with the end of its stderr when it fails."""
    import re
    import subprocess

    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    h, m, s = (float(g or 0) for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return 3600 * h + 60 * m + s, rss / 1e6


def run_tasks(fn, tasks: list, workers: int) -> list:
    """``fn`` over ``tasks`` (each returns a list of rows) on a dask.distributed
    LocalCluster of ``workers`` single-threaded worker processes when more than one (in
    this process otherwise); rows concatenated in task order.  The workers inherit this
    process's environment (e.g. the one-thread settings of the peer benchmark)."""
    if workers > 1:
        from dask.distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            futures = client.map(fn, tasks, pure=False)
            return [r for out in client.gather(futures) for r in out]
    return [r for t in tasks for r in fn(t)]
