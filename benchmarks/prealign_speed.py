"""Speed of the XY pre-alignment at the issue's size, on an otherwise idle machine.

1024×1024 LM-MIP (0.22 µm), EM ROI 93×126 µm (666×903 px at 0.14 µm), 12 EM slices:
the default simulated pair.  Each of ``--seeds`` pairs is pre-aligned ``--repeats`` times
after one warm-up; the table gives per-step medians over all runs.

Run:  python benchmarks/prealign_speed.py [--seeds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402

from clemalign import simulate_pair  # noqa: E402
from clemalign.prealign import prealign_xy  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    runs = []
    for seed in range(args.seeds):
        pair = simulate_pair(seed=seed)
        prealign_xy(pair.em, pair.lm)  # warm-up (imports, FFT plans)
        for _ in range(args.repeats):
            runs.append(prealign_xy(pair.em, pair.lm).timings_s)
        print(f"seed {seed}: total {np.median([r['total'] for r in runs[-args.repeats:]]):.2f} s",
              flush=True)
    steps = list(runs[0])
    med = {k: float(np.median([r.get(k, 0.0) for r in runs])) for k in steps}
    worst = float(max(r["total"] for r in runs))
    table = ["# XY pre-alignment speed (default simulated pair: LM 1024², 12 EM slices)", "",
             f"Machine: {machine()['cores']} cores, {machine()['memory_gib']} GiB; "
             f"{args.seeds} pairs × {args.repeats} runs; worst total {worst:.2f} s.", "",
             "| " + " | ".join(steps) + " |", "|" + "---|" * len(steps),
             "| " + " | ".join(f"{med[k]:.2f}" for k in steps) + " |"]
    write_results("prealign_speed", {"machine": machine(), "runs": runs, "median_s": med},
                  "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
