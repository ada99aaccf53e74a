"""Issue 21 ablation: variants of the final (finer) affine level of the 3D stage, each run
from the same result of the default stages, on two suites of simulated pairs with known
truth (mean landmark error, µm):

* ``peer``: the peer suite's pairs (``peer_accuracy.py`` conditions, scale 0.3: a
  38 × 28 µm EM ROI in a 67 µm LM field), ``--conditions``;
* ``accuracy``: the registration-accuracy pairs (scale 1, LM channel ``mito``).

Variants (``Registration3DConfig`` fields; ``final_levels_um`` lists the levels run in
turn, each ``(σ_z, σ_lateral)`` µm):

* ``none``: the default stages only (LoG σ 1 µm on a ~0.44 µm grid);
* ``log0.5_em_z``: LoG σ 0.5 µm at the LM pixel, z terms as the stages above (``em_z``
  after an XY pre-alignment);
* ``log0.5_in_plane``, ``log0.7_in_plane``, ``log0.35_in_plane``: only the in-plane
  2D affine moves (every z term and the z translation held);
* ``raw0.5_em_z``: raw intensities at the LM pixel (the representation ANTs registers);
* ``log0.5_z1_em_z``, ``log0.5_z1_in_plane``: an anisotropic LoG, σ 0.5 µm in-plane and
  1 µm along z (the LM's z voxel is 0.6 µm, its axial blur several times its lateral);
* ``log0.5_z1_then_0.5_em_z``: the anisotropic level, then the isotropic one (the
  default until issue 22; its pyramid smoothed as the stages');
* ``both_unsmoothed_pyramid``, ``both_no_pyramid``: the same levels with a shrink-2
  level that is not smoothed first (the LoG already is; the default since issue 22), or
  none (issue 22: the smoothing of the full-size images was a third of their time);
* ``both_40k_samples``, ``both_30k_samples``: the default levels on fewer metric samples
  than the stages' 60 000 (issue 22: their time is mostly per sample);
* ``both_step0.125``, ``both_step0.0625``, ``both_no_pyramid_step0.*``: the default
  levels from a smaller first optimiser step than the stages' 0.25 µm (they start
  converged at the stages' σ), with or without their shrink-2 level (issue 22).

The other variants take the pyramid smoothing of the package's default (unsmoothed since
issue 22; results files before it were measured smoothed).

Each pair runs ``register`` once with a capture of the final levels' inputs (EM, LM
channel, ROI, the stages' result before them); every variant then runs
``clemalign.registration.core._final_levels`` on them, so the variants differ only in
those levels.  Times are those of the levels alone.

Run:  python benchmarks/final_level_ablation.py [--suite peer|accuracy] [--seeds 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_tasks, write_results  # noqa: E402

VARIANTS: dict[str, dict] = {
    "none": {"final_levels_um": ()},
    "log0.5_em_z": {"final_levels_um": ((0.5, 0.5),)},
    "log0.5_in_plane": {"final_levels_um": ((0.5, 0.5),), "final_affine_z": "in_plane"},
    "log0.7_in_plane": {"final_levels_um": ((0.7, 0.7),), "final_affine_z": "in_plane"},
    "log0.35_in_plane": {"final_levels_um": ((0.35, 0.35),), "final_affine_z": "in_plane"},
    "raw0.5_em_z": {"final_levels_um": ((0.5, 0.5),), "representation": "raw"},
    "log0.5_z1_em_z": {"final_levels_um": ((1.0, 0.5),)},
    "log0.5_z1_in_plane": {"final_levels_um": ((1.0, 0.5),), "final_affine_z": "in_plane"},
    "log0.5_z1_then_0.5_em_z": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)),
                                "final_smoothing": True},
    # issue 22: the same two levels, cheaper pyramids
    "both_unsmoothed_pyramid": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)),
                                "final_smoothing": False},
    "both_no_pyramid": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)),
                        "shrink_factors": (1,), "smoothing_sigmas_um": (0.0,)},
    # issue 22: the default levels on fewer metric samples
    "both_40k_samples": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)), "final_samples": 40_000},
    "both_30k_samples": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)), "final_samples": 30_000},
    # issue 22: the default levels from a smaller first step (they start converged at the
    # stages' σ), with and without their shrink-2 level
    "both_step0.125": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)), "learning_rate_um": 0.125},
    "both_step0.0625": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)),
                        "learning_rate_um": 0.0625},
    "both_no_pyramid_step0.125": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)),
                                  "shrink_factors": (1,), "smoothing_sigmas_um": (0.0,),
                                  "learning_rate_um": 0.125},
    "both_no_pyramid_step0.0625": {"final_levels_um": ((1.0, 0.5), (0.5, 0.5)),
                                   "shrink_factors": (1,), "smoothing_sigmas_um": (0.0,),
                                   "learning_rate_um": 0.0625},
}


def _tre(estimate, truth, points_em) -> float:
    return float(np.linalg.norm(estimate.apply(points_em) - truth.apply(points_em),
                                axis=1).mean())


def pair_task(task: tuple[str, str, int, list[str]]) -> list[dict]:
    """Every variant on one simulated pair."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # in dask's workers too
    from peer_accuracy import CONDITIONS

    import clemalign.registration.core as core
    from clemalign import simulate_pair
    from clemalign.pipeline import RegistrationConfig, register

    suite, condition, seed, variants = task
    if suite == "peer":
        pair = simulate_pair(seed=seed, scale=0.3, **CONDITIONS[condition])
        base = RegistrationConfig(lm_channel=0)
    else:
        pair = simulate_pair(seed=seed, scale=1.0)
        base = RegistrationConfig(lm_channel="mito")
    final_levels = core._final_levels
    captured = {}

    def capture(*args, **kwargs):  # keep the inputs, return the stages' result before them
        captured["args"] = args
        return args[3]

    core._final_levels = capture
    try:  # any final level makes register_3d call the (captured) final levels
        register(pair.em, pair.lm, config=replace(base, fine=replace(
            base.fine, final_levels_um=((0.5, 0.5),))))
    finally:
        core._final_levels = final_levels
    # (the EM side register_3d computed ahead for the captured run's own levels is left
    # out: each variant's is computed for its levels)
    em, lm, roi, result, grid, config, polarity = captured["args"][:7]
    rows = []
    for name in variants:
        t0 = time.perf_counter()
        out = result
        if VARIANTS[name]["final_levels_um"]:
            out = final_levels(em, lm, roi, out, grid, replace(config, **VARIANTS[name]),
                               polarity)
        rows.append({"suite": suite, "condition": condition, "seed": seed, "variant": name,
                     "tre_um": _tre(out.em_to_lm, pair.em_to_lm, pair.landmarks_em_um),
                     "kept": [bool(s.kept) for s in out.stages[len(result.stages):]],
                     "seconds": time.perf_counter() - t0})
    print(f"{suite} {condition} {seed}: " + ", ".join(
        f"{r['variant']} {r['tre_um']:.3f}" for r in rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("peer", "accuracy"), default="peer")
    parser.add_argument("--conditions", nargs="+",
                        default=["default", "border", "em_noise"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--name", default=None, help="results name (default: by suite)")
    args = parser.parse_args()
    conditions = args.conditions if args.suite == "peer" else ["default"]
    tasks = [(args.suite, c, s, args.variants) for c in conditions for s in range(args.seeds)]
    t0 = time.perf_counter()
    rows = run_tasks(pair_task, tasks, args.workers)
    wall = time.perf_counter() - t0
    what = ("peer-suite pairs (scale 0.3, LM channel 0)" if args.suite == "peer" else
            "registration-accuracy pairs (scale 1, LM channel mito)")
    lines = [f"# Final 3D level ablation, {args.suite} suite (issue 21)", "",
             f"{time.strftime('%Y-%m-%d')}, {machine()['cores']} cores; {what}; seeds "
             f"0–{args.seeds - 1}; {args.workers} worker processes; wall {wall / 60:.1f} min. "
             "Mean landmark error against the truth (µm). `kept`: pairs where every level "
             "of the variant raised the MI at its own scale (else the level above stands). "
             "Seconds: the final level(s) alone, median.", "",
             "| condition | variant | median TRE µm | mean (TRE < 1 µm) | < 1 µm | kept | s |",
             "|---|---|---|---|---|---|---|"]
    for c in conditions:
        for name in args.variants:
            sel = [r for r in rows if r["condition"] == c and r["variant"] == name]
            tre = np.array([r["tre_um"] for r in sel])
            ok = tre < 1.0
            kept = sum(all(r["kept"]) for r in sel) if VARIANTS[name]["final_levels_um"] \
                else "–"
            lines.append(f"| {c} | {name} | {np.median(tre):.3f} | "
                         f"{tre[ok].mean() if ok.any() else float('nan'):.3f} | "
                         f"{ok.sum()}/{tre.size} | {kept} | "
                         f"{np.median([r['seconds'] for r in sel]):.1f} |")
    write_results(args.name or f"final_level_ablation_{args.suite}",
                  {"machine": machine(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
