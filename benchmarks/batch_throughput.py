"""``clemalign batch`` on dask.distributed (issue 19): throughput of 1 vs 2 workers on the
same pairs, and a worker killed during a batch.

8 small simulated pairs (scale 0.3) are written once; the batch runs them on a LocalCluster
of 1 worker, then of 2 workers (each single-threaded; every output written), then again on
2 workers with one worker process killed (SIGKILL) a few seconds in: every other pair must
finish, the killed worker's pair is retried (its nanny restarts it) or reported as lost.

Run:  python benchmarks/batch_throughput.py [--pairs 8]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402


def _batch(jobs, outdir: Path, workers: int, kill_after_s: float | None = None) -> dict:
    from dask.distributed import Client, LocalCluster

    from clemalign.batch import BatchConfig, register_many

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
    killed = []
    if kill_after_s is not None:
        with Client(cluster) as probe:
            pids = list(probe.run(os.getpid).values())

        def kill() -> None:
            time.sleep(kill_after_s)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        threading.Thread(target=kill, daemon=True).start()
    t0 = time.perf_counter()
    rows = register_many(jobs, outdir, config=BatchConfig(scheduler=cluster.scheduler_address))
    wall = time.perf_counter() - t0
    cluster.close()
    return {"workers": workers, "wall_s": wall, "killed_pid": killed[0] if killed else None,
            "statuses": [r["status"] for r in rows], "rows": rows}


def main() -> None:
    from clemalign import simulate_pair, write_simulated_pair
    from clemalign.batch import PairJob

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = []
        for seed in range(args.pairs):
            folder = tmp / f"pair{seed}"
            write_simulated_pair(folder, simulate_pair(seed=seed, scale=0.3))
            jobs.append(PairJob(f"pair{seed}", (str(folder / "em.ome.tif"),
                                                str(folder / "lm.ome.tif"), "--lm-channel",
                                                "mito")))
        runs = [_batch(jobs, tmp / "one", 1), _batch(jobs, tmp / "two", 2),
                _batch(jobs, tmp / "killed", 2, kill_after_s=4.0)]
    one, two, killed = runs
    lines = ["# Batch throughput on dask.distributed (issue 19)", "",
             f"{time.strftime('%Y-%m-%d')}, {machine()['cores']} cores; {args.pairs} small "
             "simulated pairs (scale 0.3), every output written; LocalCluster, "
             "single-threaded workers.", "",
             f"- 1 worker: {one['wall_s']:.1f} s; 2 workers: {two['wall_s']:.1f} s — "
             f"throughput **{one['wall_s'] / two['wall_s']:.2f}×**",
             f"- 2 workers, one killed (SIGKILL) after 4 s: {killed['wall_s']:.1f} s; pair "
             f"statuses {', '.join(killed['statuses'])}", ""]
    for run in runs:
        print(run["workers"], f"{run['wall_s']:.1f} s", run["statuses"])
    write_results("batch_throughput", {"machine": machine(), "runs": runs},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
