"""Probe for issue 21: the 3D stage's LoG scale and working pixel, on the registration
accuracy pairs (simulated, default size; mean landmark error against the truth).

Variants (``Registration3DConfig`` fields; everything else default):

* ``default``: σ = max(1 µm, the LM's selected scale), pixel = max(LM pixel, σ/2.25, budget);
* ``sig0.7_px0.3``: σ = 0.7 µm on a 0.3 µm lateral grid, for the whole 3D stage;
* ``sig0.5_px0.22``: σ = 0.5 µm at the LM's own pixel, for the whole 3D stage;
* ``final0.7``, ``final0.5``: the default stages, then one more affine level at that σ
  (``Registration3DConfig.final_levels_um``).

Run:  python benchmarks/fine_scale_probe.py [--seeds 20] [--variants default sig0.7_px0.3]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402

VARIANTS = {
    "default": {},
    "sig0.7_px0.3": {"log_sigma_um": 0.7, "working_pixel_um": 0.3,
                     "working_voxels": 40_000_000},
    "sig0.5_px0.22": {"log_sigma_um": 0.5, "working_pixel_um": 0.22,
                      "working_voxels": 40_000_000},
    "final0.7": {"final_levels_um": ((0.7, 0.7),)},
    "final0.5": {"final_levels_um": ((0.5, 0.5),)},
}


def main() -> None:
    from clemalign import simulate_pair
    from clemalign.evaluation import target_registration_error
    from clemalign.pipeline import RegistrationConfig, register

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--name", default="fine_scale_probe")
    args = parser.parse_args()
    base = RegistrationConfig(lm_channel="mito")
    rows = []
    for seed in range(args.seeds):
        pair = simulate_pair(seed=seed, scale=1.0)
        for name in args.variants:
            config = replace(base, fine=replace(base.fine, **VARIANTS[name]))
            t0 = time.perf_counter()
            result = register(pair.em, pair.lm, config=config)
            wall = time.perf_counter() - t0
            tre = float(target_registration_error(result.em_to_lm, pair.landmarks_em_um,
                                                  pair.landmarks_lm_um).mean())
            rows.append({"seed": seed, "variant": name, "tre_um": tre, "wall_s": wall})
            print(f"seed {seed:2d} {name:>14}: TRE {tre:.3f} µm, {wall:.1f} s", flush=True)
    lines = ["# 3D stage scale and grid probe (issue 21)", "",
             f"{time.strftime('%Y-%m-%d')}, {machine()['cores']} cores; registration-accuracy "
             f"pairs (default size), seeds 0–{args.seeds - 1}; in-memory `register`.", "",
             "| variant | median TRE µm | mean | worst | < 0.5 µm | median s |",
             "|---|---|---|---|---|---|"]
    for name in args.variants:
        tre = np.array([r["tre_um"] for r in rows if r["variant"] == name])
        wall = np.array([r["wall_s"] for r in rows if r["variant"] == name])
        lines.append(f"| {name} | {np.median(tre):.3f} | {tre.mean():.3f} | {tre.max():.3f} | "
                     f"{(tre < 0.5).sum()}/{tre.size} | {np.median(wall):.1f} |")
    lines += ["", "| seed | " + " | ".join(args.variants) + " |",
              "|---" * (len(args.variants) + 1) + "|"]
    for seed in range(args.seeds):
        lines.append(f"| {seed} | " + " | ".join(
            f"{r['tre_um']:.3f}" for name in args.variants for r in rows
            if r["seed"] == seed and r["variant"] == name) + " |")
    write_results(args.name, {"machine": machine(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
