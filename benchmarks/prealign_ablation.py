"""Ablation and speed of the XY pre-alignment (issue 4).

Variants: Part A only (the published histogram search), Part B only (multi-scale masked
NCC over angles), and both combined (the default).  Data:

* simulated pairs (``clemalign.synthetic``, default full size: EM 666×903×247 at
  0.14/0.14/0.05 µm inside an LM 1024×1024×16 at 0.22/0.22/0.6 µm, EM anywhere in the
  field, rotation up to ±15°), seeds 0..N-1;
* real appearance: ``../shared/data/deepclem_2d`` (expert-aligned SEM + chromatin
  fluorescence), 5 cases per image: EM ROI 15-20 µm (EM pixel 0.03 µm assumed) around a
  fluorescent nucleus, LM = the fluorescence rotated up to ±15°, shifted, blurred,
  downsampled 4× with Poisson noise.

Success = fused ROI centre within 2 µm of the truth.  Timings are per-step medians of
the default variant on the full-size simulated pairs.

Run:  python benchmarks/prealign_ablation.py [--seeds 40] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402

from clemalign.prealign import PrealignConfig, prealign_xy  # noqa: E402
from clemalign.synthetic import real_appearance_cases, simulate_pair  # noqa: E402

METHODS = ("histogram", "ncc", "combined")
DEEPCLEM = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepclem_2d"


def error_um(result, em_to_lm) -> float:
    truth = em_to_lm.apply(np.array(result.em_roi_centre_xyz_um)[None])[0, :2]
    return float(np.hypot(*(np.array(result.centre_lm_xy_um) - truth)))


def angle_deg(em_to_lm) -> float:
    m = em_to_lm.matrix
    return float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))


def run_case(name: str, em, lm, em_to_lm, roi=None) -> list[dict]:
    rows = []
    for method in METHODS:
        t0 = time.perf_counter()
        r = prealign_xy(em, lm, roi=roi, config=PrealignConfig(method=method))
        wall = time.perf_counter() - t0
        rows.append({"case": name, "method": method, "error_um": error_um(r, em_to_lm),
                     "angle_deg": r.angle_deg, "truth_angle_deg": angle_deg(em_to_lm),
                     "confidence": r.confidence, "timings_s": r.timings_s, "wall_s": wall,
                     "sigmas_um": r.sigmas_um})
        print(f"{name:>14} {method:>9}: error {rows[-1]['error_um']:7.2f} µm  angle "
              f"{r.angle_deg:6.1f} (truth {rows[-1]['truth_angle_deg']:6.1f})  {wall:5.2f} s",
              flush=True)
    return rows


def summary(rows: list[dict], dataset: str) -> list[str]:
    lines = []
    for method in METHODS:
        errs = np.array([r["error_um"] for r in rows if r["method"] == method])
        if errs.size == 0:
            continue
        wall = np.median([r["wall_s"] for r in rows if r["method"] == method])
        lines.append(f"| {dataset} | {method} | {int((errs < 2).sum())}/{errs.size} | "
                     f"{np.median(errs):.2f} | {np.percentile(errs, 90):.2f} | {wall:.2f} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="3 small pairs, 2 real cases")
    args = parser.parse_args(argv)
    sim_rows, real_rows = [], []
    n = 3 if args.quick else args.seeds
    for seed in range(n):
        pair = simulate_pair(seed=seed, scale=0.3 if args.quick else 1.0)
        sim_rows += run_case(f"sim seed {seed}", pair.em, pair.lm, pair.em_to_lm)
    if DEEPCLEM.exists():
        import skimage.io

        for name, seed in (("s6", 6), ("s7", 7)):
            em = skimage.io.imread(DEEPCLEM / f"{name}_em.png")
            fm = skimage.io.imread(DEEPCLEM / f"{name}_fm.png")
            cases = real_appearance_cases(em, fm, em_pixel_um=0.03,
                                          n_cases=1 if args.quick else 5, seed=seed)
            for k, (case, roi) in enumerate(cases):
                real_rows += run_case(f"{name} case {k}", case.em, case.lm, case.em_to_lm, roi)
    else:
        print(f"skipping real-appearance cases: {DEEPCLEM} not found")

    default = [r for r in sim_rows if r["method"] == "combined"]
    steps = sorted({k for r in default for k in r["timings_s"]})
    step_medians = {k: float(np.median([r["timings_s"].get(k, 0.0) for r in default]))
                    for k in steps}
    table = ["# XY pre-alignment: ablation and speed", "",
             f"Machine: {machine()['cores']} cores, {machine()['memory_gib']} GiB. "
             f"Simulated: {n} seeds{' (quick, scale 0.3)' if args.quick else ' (full size)'}; "
             f"real appearance: DeepCLEM s6/s7 cases. Success: centre within 2 µm.", "",
             "| data | method | within 2 µm | median error µm | 90th pct µm | median s |",
             "|---|---|---|---|---|---|"]
    table += summary(sim_rows, "simulated") + summary(real_rows, "deepclem_2d")
    table += ["", "Per-step medians of the default (combined) on the simulated pairs (s):", "",
              "| " + " | ".join(steps) + " |", "|" + "---|" * len(steps),
              "| " + " | ".join(f"{step_medians[k]:.2f}" for k in steps) + " |", "",
              "All errors (µm), default method:", ""]
    for rows, label in ((sim_rows, "simulated"), (real_rows, "deepclem_2d")):
        errs = [f"{r['error_um']:.2f}" for r in rows if r["method"] == "combined"]
        table.append(f"- {label}: " + ", ".join(errs))
    write_results("prealign_ablation" + ("_quick" if args.quick else ""),
                  {"machine": machine(), "simulated": sim_rows, "real": real_rows,
                   "step_medians_s": step_medians}, "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
