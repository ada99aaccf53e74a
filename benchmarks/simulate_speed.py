"""Time `clemalign.simulate_pair` at the default (full) size and write it to disk.

Run: ``python benchmarks/simulate_speed.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

from _common import machine, write_results

from clemalign import simulate_pair, write_simulated_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    render, write = [], []
    for seed in range(args.repeats):
        t0 = time.perf_counter()
        pair = simulate_pair(seed=seed)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            write_simulated_pair(tmp, pair)
        render.append(t1 - t0)
        write.append(time.perf_counter() - t1)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    info = machine()
    total = [r + w for r, w in zip(render, write, strict=True)]
    table = (f"## simulate_pair at default size ({info['date']}, {info['cores']} cores, "
             f"{info['memory_gib']} GiB)\n\n"
             f"EM {pair.em.data.shape} uint8, LM {pair.lm.data.shape} uint16\n\n"
             "| step | median s | max s |\n|---|---|---|\n"
             f"| render | {statistics.median(render):.1f} | {max(render):.1f} |\n"
             f"| write OME-TIFFs + truth | {statistics.median(write):.1f} | {max(write):.1f} |\n"
             f"| total | {statistics.median(total):.1f} | {max(total):.1f} |\n\n"
             f"Peak resident memory: {peak_gib:.2f} GiB. Target: under 60 s.\n")
    write_results("simulate_speed", {"machine": info, "render_s": render, "write_s": write,
                                     "peak_rss_gib": peak_gib}, table)


if __name__ == "__main__":
    main()
