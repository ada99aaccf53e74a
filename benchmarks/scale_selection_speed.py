"""Time automatic LoG scale selection at real sizes.

Cases (issue "Common representation"): the 1024×1024 LM maximum-intensity projection of a
default simulated pair, and 12 EM slices of 903×666 from its EM stack (per-slice 2D).

Run: ``python benchmarks/scale_selection_speed.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import machine, write_results

from clemalign import simulate_pair
from clemalign.representation import default_polarity, select_log_scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    pair = simulate_pair(seed=args.seed)
    mip = pair.lm.data[0].max(axis=0).astype(np.float32)
    idx = np.linspace(0, pair.em.shape_zyx[0] - 1, 14).astype(int)[1:-1]
    slices = pair.em.data[idx].astype(np.float32)
    cases = {
        f"LM MIP {mip.shape[0]}×{mip.shape[1]}":
            lambda: select_log_scale(mip, pair.lm.voxel_size_um[1:],
                                     polarity=default_polarity("lm")),
        f"EM {slices.shape[0]} slices {slices.shape[1]}×{slices.shape[2]}":
            lambda: select_log_scale(slices, pair.em.voxel_size_um,
                                     polarity=default_polarity("em"), per_slice=True),
    }
    rows, payload = [], {"machine": machine(), "cases": {}}
    for name, run in cases.items():
        run()  # warm-up (imports, thread pool)
        times, result = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - t0)
        payload["cases"][name] = {"times_s": times, "sigma_um": result.sigma_um,
                                  "n_scales": len(result.sigmas_um)}
        rows.append(f"| {name} | {len(result.sigmas_um)} | {result.sigma_um:.3f} | "
                    f"{statistics.median(times):.2f} | {max(times):.2f} |")
    info = payload["machine"]
    table = (f"## LoG scale selection ({info['date']}, {info['cores']} cores, "
             f"{info['memory_gib']} GiB)\n\n"
             "| case | scales | selected sigma µm | median s | max s |\n|---|---|---|---|---|\n"
             + "\n".join(rows) + "\n\nTarget: well under 2 s per case on 2 cores.\n")
    write_results("scale_selection_speed", payload, table)


if __name__ == "__main__":
    main()
