"""Monolayers seen from the other side, and EM blocks cut off the coverslip plane (issue 14).

For each seed, three default-size simulated pairs (EM 666×903×247 at 0.14/0.14/0.05 µm,
LM 2×1024×1024×16 at 0.22/0.22/0.6 µm), registered with the defaults (``--prealign
auto``, no flags):

* **opposite_sides**: the EM mirrored in x *and* reversed in z (a 180° turn about an
  in-plane axis: inverted LM vs block face), rotation uniform over the full circle; the
  result must have z reversed (``em_to_lm[2, 2] < 0``) and no mirror left;
* **tilted**: the EM block tilted 5–10° (random sign) about x or y (alternating);
* **untilted**: the same seed's default pair (tilt ≤ 2°), the reference for the tilted
  median.

(``auto`` choosing XY on the DeepCLEM real-appearance sections is a test:
``tests/test_prealign3d.py``.)

Run:  python benchmarks/monolayer_sides_tilt.py [--seeds 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_tasks, write_results  # noqa: E402

KINDS = ("opposite_sides", "tilted", "untilted")


def overrides(kind: str, seed: int) -> dict:
    if kind == "opposite_sides":
        return {"mirror": True, "flip_z": True, "max_rotation_deg": 180.0}
    if kind == "tilted":
        rng = np.random.default_rng([seed, 14])
        tilt = float(rng.uniform(5.0, 10.0) * rng.choice([-1.0, 1.0]))
        return {"tilt_deg": (tilt, 0.0) if seed % 2 == 0 else (0.0, tilt)}
    return {}


def run_seed(task: tuple[int, tuple[str, ...], str]) -> list[dict]:
    from clemalign import simulate_pair
    from clemalign.evaluation import target_registration_error
    from clemalign.pipeline import RegistrationConfig, register
    from clemalign.registration import Registration3DConfig

    seed, kinds, affine_z = task
    config = RegistrationConfig(lm_channel="mito",
                                fine=Registration3DConfig(affine_z=affine_z))
    rows = []
    for kind in kinds:
        pair = simulate_pair(seed=seed, **overrides(kind, seed))
        t0 = time.perf_counter()
        res = register(pair.em, pair.lm, config=config)
        wall = time.perf_counter() - t0
        tre = target_registration_error(res.em_to_lm, pair.landmarks_em_um,
                                        pair.landmarks_lm_um)
        chosen = next(s for s in res.fine.starts if s["chosen"])
        rows.append({
            "kind": kind, "seed": seed, "tre_um": float(tre.mean()),
            "tre_max_um": float(tre.max()), "wall_s": wall,
            "mode_run": res.prealign_choice["mode"], "verdict": res.confidence["verdict"],
            "score": res.confidence["score"], "evidence": res.confidence["evidence"],
            "truth": pair.parameters, "em_to_lm_zz": float(res.em_to_lm.linear[2, 2]),
            "det": float(np.linalg.det(res.em_to_lm.linear)),
            "reversed_z_found": bool(chosen.get("reversed_z")),
            "tilt_found_deg": res.fine.z_search.get("tilt_deg"),
            "mi_by_z_direction": chosen.get("mi_by_z_direction")})
        r = rows[-1]
        print(f"seed {seed:2d} {kind:>15}: TRE {r['tre_um']:.3f} {r['mode_run']} "
              f"{r['verdict']} zz {r['em_to_lm_zz']:+.2f} tilt {r['tilt_found_deg']} "
              f"{wall:.1f} s", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="monolayer_sides_tilt")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--affine-z", default="auto",
                        help="Registration3DConfig.affine_z (the ablation: free, em_z, rigid)")
    args = parser.parse_args(argv)
    kinds = tuple(args.kinds)
    t0 = time.perf_counter()
    rows = run_tasks(run_seed, [(s, kinds, args.affine_z) for s in range(args.seeds)],
                     args.workers)
    suite_s = time.perf_counter() - t0
    mach = machine()
    med = {k: float(np.median([r["tre_um"] for r in rows if r["kind"] == k])) for k in kinds}
    lines = ["# Monolayers seen from the other side, tilted EM blocks (issue 14)", "",
             f"{mach['date']}, {mach['cores']} cores, {mach['memory_gib']} GiB; "
             f"{args.seeds} default-size pairs per kind, {args.workers} worker processes; "
             f"suite {suite_s / 60:.1f} min. Defaults (`--prealign auto`, no flags) but "
             f"`affine_z={args.affine_z!r}`.", "",
             "| kind | mean TRE < 0.5 µm | median µm | 90th pct | worst | auto chose xy | "
             "z reversed found | verdict ok | median s |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in kinds:
        sel = [r for r in rows if r["kind"] == kind]
        tre = np.array([r["tre_um"] for r in sel])
        lines.append(f"| {kind} | **{int((tre < 0.5).sum())}/{len(sel)}** | {med[kind]:.3f} | "
                     f"{np.percentile(tre, 90):.3f} | {tre.max():.3f} | "
                     f"{sum(r['mode_run'] == 'xy' for r in sel)}/{len(sel)} | "
                     f"{sum(r['em_to_lm_zz'] < 0 for r in sel)}/{len(sel)} | "
                     f"{sum(r['verdict'] == 'ok' for r in sel)}/{len(sel)} | "
                     f"{np.median([r['wall_s'] for r in sel]):.1f} |")
    if "tilted" in med and "untilted" in med:
        lines += ["", f"Tilted median minus untilted median: "
                      f"{med['tilted'] - med['untilted']:+.3f} µm."]
    lines += ["",
              "| kind | seed | truth tilt x, y ° | tilt found ° | truth zz | found zz | det | "
              "TRE µm | verdict | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["truth"]
        found = r["tilt_found_deg"]
        lines.append(f"| {r['kind']} | {r['seed']} | {t['tilt_x_deg']:.1f}, {t['tilt_y_deg']:.1f}"
                     f" | {'—' if found is None else f'{found[0]:.1f}, {found[1]:.1f}'} | "
                     f"{'-1' if t.get('flip_z') else '+1'} | {r['em_to_lm_zz']:+.2f} | "
                     f"{r['det']:+.2f} | {r['tre_um']:.3f} | {r['verdict']} | "
                     f"{r['wall_s']:.1f} |")
    write_results(args.name, {"machine": mach, "args": vars(args), "suite_wall_s": suite_s,
                              "rows": rows},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
