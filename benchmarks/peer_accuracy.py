"""Accuracy and robustness of clemalign next to elastix, ANTs and SimpleITK (issue 7).

Simulated conditions (``clemalign.synthetic``, N seeds each, EM and LM at ``--scale``
of the default lateral size — 0.3 by default: LM 307×307×16 at 0.22/0.22/0.6 µm, EM
200×271×247 at 0.14/0.14/0.05 µm — so that the suite fits in 45 minutes on 2 cores):

* ``default``: rotation ±15°, EM anywhere in the LM field;
* ``rotation45``: rotation ±45°;
* ``border``: EM field as close to the LM field's border as it fits (2 µm margin);
* ``low_signal``: half the fluorescence photons (200 instead of 400);
* ``em_noise``: EM noise 36 grey levels instead of 12;
* ``full_rotation_mirror``: rotation over the full circle, every other seed mirrored.

Real appearance (``deepclem``): cases built from the expert-aligned DeepCLEM SEM and
chromatin-fluorescence images in ``../shared/data/deepclem_2d`` with a known placement
(``clemalign.synthetic.real_appearance_cases``: EM ROI 15–20 µm, fluorescence rotated
±15°, shifted ±2 µm, blurred, binned 4×, Poisson noise).  These are 2D: clemalign's
result is its pre-alignment (rotation + shift); the peers register 2D images.

Methods: ``clemalign`` (full), ``clemalign_prealign`` (its pre-alignment only), and the
peers of ``peers.PEERS`` on the raw intensities.  TRE: mean distance between the true
and the estimated LM positions of the simulator's landmarks (mitochondrion centres);
for the 2D cases of a 5×5 grid of points spanning the EM ROI.  Success: TRE < 1 µm.

Every method runs single-threaded in one of ``--workers`` processes, so the times are
comparable with each other (ratios), not with a multi-threaded run.

Run:  python benchmarks/peer_accuracy.py [--seeds 30] [--conditions ...] [--workers 2]
      [--peers ants_from_prealign ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

_ONE_THREAD = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ANTS_RANDOM_SEED": "1"}
os.environ.update(_ONE_THREAD)  # before numpy/ITK load, inherited by the workers

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, run_tasks, write_results  # noqa: E402

DEEPCLEM = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepclem_2d"
CONDITIONS = {
    "default": {},
    "rotation45": {"max_rotation_deg": 45.0},
    "border": {"placement": "border"},
    "low_signal": {"lm_photons": 200.0},
    "em_noise": {"em_noise_sd": 36.0},
    "full_rotation_mirror": {"max_rotation_deg": 180.0},
}
ISSUE7_CONDITIONS = ("default", "rotation45", "border", "low_signal", "em_noise", "deepclem")
SUCCESS_UM = 1.0


def _tre(estimate, truth, points_em) -> float:
    return float(np.linalg.norm(estimate.apply(points_em) - truth.apply(points_em),
                                axis=1).mean())


def _run_methods(case: dict, em, lm, truth, points_em, roi: str | None,
                 two_d: bool) -> list[dict]:
    from peers import PEERS, peer_inputs, timed

    from clemalign import PrealignConfig, prealign_xy, register
    from clemalign.pipeline import RegistrationConfig
    from clemalign.volume import parse_roi

    rows = []
    t0 = time.perf_counter()
    if two_d:
        roi_obj = parse_roi(roi, em.shape_zyx)
        pre = prealign_xy(em, lm, roi=roi_obj, config=PrealignConfig())
        pre_tf, full_tf, level = pre.initial_em_to_lm, pre.initial_em_to_lm, None
        box = roi_obj.slices
    else:
        config = RegistrationConfig(roi=roi, lm_channel=0)
        final = os.environ.get("CLEMALIGN_BENCH_FINAL_SIGMA")  # --final-sigma-um
        if final:
            config = replace(config, fine=replace(config.fine, final_levels_um=(
                (float(final), float(final)),)))
        res = register(em, lm, config=config)
        pre_tf, full_tf, level = res.prealign.initial_em_to_lm, res.em_to_lm, \
            res.confidence["verdict"]
        box = res.roi.slices
        lm = lm.channel(0) if lm.data.ndim == 4 else lm
    wall = time.perf_counter() - t0
    rows.append({**case, "method": "clemalign", "tre_um": _tre(full_tf, truth, points_em),
                 "wall_s": wall, "confidence": level, "error": None})
    rows.append({**case, "method": "clemalign_prealign",
                 "tre_um": _tre(pre_tf, truth, points_em),
                 "wall_s": float(pre.timings_s["total"] if two_d
                                 else res.prealign.timings_s["total"]),
                 "confidence": None, "error": None})
    em_w, lm_w = peer_inputs(em, lm, box)
    chosen = os.environ.get("CLEMALIGN_BENCH_PEERS")  # --peers, inherited by the workers
    for name, fn in PEERS.items():
        if chosen and name not in chosen.split(","):
            continue
        tf, secs, err = timed(fn, em_w, lm_w, pre_tf)
        rows.append({**case, "method": name,
                     "tre_um": _tre(tf, truth, points_em) if tf is not None else float("inf"),
                     "wall_s": secs, "confidence": None, "error": err})
    return rows


def simulated_task(task: tuple[str, int, float]) -> list[dict]:
    """Simulate one pair of a condition and run every method on it."""
    from clemalign import simulate_pair

    condition, seed, scale = task
    overrides = dict(CONDITIONS[condition])
    if condition == "full_rotation_mirror":
        overrides["mirror"] = seed % 2 == 1
    pair = simulate_pair(seed=seed, scale=scale, **overrides)
    case = {"condition": condition, "seed": seed,
            "truth_rotation_deg": float(pair.parameters.get("rotation_deg", np.nan)),
            "mirror": bool(overrides.get("mirror", False))}
    truth = pair.em_to_lm
    # the landmarks' true LM positions are truth.apply(landmarks_em_um)
    return _run_methods(case, pair.em, pair.lm, truth, pair.landmarks_em_um, None, False)


def deepclem_task(task: tuple[str, int, int]) -> list[dict]:
    """One real-appearance case (index ``k`` of image ``name``)."""
    import skimage.io

    from clemalign.synthetic import real_appearance_cases
    from clemalign.volume import parse_roi

    name, k, n_per_image = task
    em = skimage.io.imread(DEEPCLEM / f"{name}_em.png")
    fm = skimage.io.imread(DEEPCLEM / f"{name}_fm.png")
    case_obj, roi = real_appearance_cases(em, fm, em_pixel_um=0.03, n_cases=n_per_image,
                                          seed=int(name[1:]))[k]
    r = parse_roi(roi, case_obj.em.shape_zyx)
    (j0, j1), (i0, i1) = (r.slices[1].start, r.slices[1].stop), (r.slices[2].start,
                                                                  r.slices[2].stop)
    sx = case_obj.em.voxel_size_um[2]
    gx, gy = np.meshgrid(np.linspace(i0, i1 - 1, 5) * sx, np.linspace(j0, j1 - 1, 5) * sx)
    points = np.c_[gx.ravel(), gy.ravel(), np.zeros(gx.size)]
    case = {"condition": "deepclem", "seed": f"{name}-{k}",
            "truth_rotation_deg": float(np.degrees(np.arctan2(case_obj.em_to_lm.matrix[1, 0],
                                                             case_obj.em_to_lm.matrix[0, 0]))),
            "mirror": False}
    return _run_methods(case, case_obj.em, case_obj.lm, case_obj.em_to_lm, points, roi, True)


def _run(task) -> list[dict]:
    kind, *rest = task
    out = simulated_task(tuple(rest)) if kind == "sim" else deepclem_task(tuple(rest))
    for r in out:
        print(f"{r['condition']:>20} {str(r['seed']):>6} {r['method']:>24}: TRE "
              f"{r['tre_um']:8.3f} µm  {r['wall_s']:6.1f} s"
              + (f"  [{r['error']}]" if r["error"] else ""), flush=True)
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Success rate, median/90th-percentile TRE and median time per condition and method."""
    out = []
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for c in conditions:
        for m in methods:
            sel = [r for r in rows if r["condition"] == c and r["method"] == m]
            if not sel:
                continue
            tre = np.array([r["tre_um"] for r in sel])
            out.append({"condition": c, "method": m, "n": len(sel),
                        "success": int((tre < SUCCESS_UM).sum()),
                        "median_tre_um": float(np.median(tre)),
                        "p90_tre_um": float(np.percentile(tre, 90)),
                        "median_wall_s": float(np.median([r["wall_s"] for r in sel])),
                        "errors": sum(r["error"] is not None for r in sel)})
    return out


def table(summary: list[dict]) -> list[str]:
    lines = ["| condition | method | success (TRE < 1 µm) | median TRE µm | 90th pct TRE µm | "
             "median s |", "|---|---|---|---|---|---|"]
    def fmt(v: float) -> str:
        return f"{v:.2f}" if np.isfinite(v) else "crash"

    for s in summary:
        lines.append(f"| {s['condition']} | {s['method']} | {s['success']}/{s['n']} | "
                     f"{fmt(s['median_tre_um'])} | {fmt(s['p90_tre_um'])} | "
                     f"{s['median_wall_s']:.1f} |")
    return lines


def plot(rows: list[dict], summary: list[dict], path: Path) -> None:
    """TRE distribution per method and condition (log scale), and median time per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    width = 0.8 / len(methods)
    colours = plt.cm.tab10(np.arange(len(methods)) % 10)
    rng = np.random.default_rng(0)
    for mi, m in enumerate(methods):
        for ci, c in enumerate(conditions):
            tre = np.array([r["tre_um"] for r in rows if r["condition"] == c
                            and r["method"] == m])
            tre = np.clip(np.where(np.isfinite(tre), tre, 1e3), 0.01, 1e3)
            x = ci + (mi - (len(methods) - 1) / 2) * width
            ax.scatter(x + rng.uniform(-0.3, 0.3, tre.size) * width, tre, s=6,
                       color=colours[mi], alpha=0.6, label=m if ci == 0 else None)
            if tre.size:
                ax.hlines(np.median(tre), x - width / 2, x + width / 2, color=colours[mi])
    ax.axhline(SUCCESS_UM, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(conditions)), conditions, rotation=20)
    ax.set_ylabel("mean TRE (µm), line = median")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    med = [np.median([s["median_wall_s"] for s in summary if s["method"] == m]) for m in methods]
    ax.barh(range(len(methods)), med, color=colours)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.set_xlabel("median wall time, single thread (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30, help="pairs per simulated condition")
    parser.add_argument("--real-cases", type=int, default=30, help="DeepCLEM cases (total)")
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--conditions", nargs="+", default=list(ISSUE7_CONDITIONS),
                        choices=[*CONDITIONS, "deepclem"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="peer_accuracy", help="results file name")
    parser.add_argument("--peers", nargs="+", default=None,
                        help="only these peers (default: all), e.g. ants_from_prealign")
    parser.add_argument("--final-sigma-um", type=float, default=None,
                        help="clemalign with one final level at this σ (final_levels_um, issue 21)")
    args = parser.parse_args(argv)
    if args.final_sigma_um:
        os.environ["CLEMALIGN_BENCH_FINAL_SIGMA"] = str(args.final_sigma_um)
    if args.peers:
        os.environ["CLEMALIGN_BENCH_PEERS"] = ",".join(args.peers)
    tasks = [("sim", c, s, args.scale) for c in args.conditions if c != "deepclem"
             for s in range(args.seeds)]
    if "deepclem" in args.conditions:
        if DEEPCLEM.exists():
            per = max(1, args.real_cases // 2)
            tasks += [("real", name, k, per) for name in ("s6", "s7") for k in range(per)]
        else:
            print(f"skipping the real-appearance cases: {DEEPCLEM} not found")
    t0 = time.perf_counter()
    rows = run_tasks(_run, tasks, args.workers)
    total = time.perf_counter() - t0
    summary = summarise(rows)
    mach = machine()
    lines = [f"# Accuracy and robustness next to the peers ({args.name})", "",
             f"{mach['date']}, {mach['cores']} cores, {mach['memory_gib']} GiB; "
             f"{args.seeds} seeds per simulated condition at scale {args.scale}; "
             f"{args.workers} worker processes, every method single-threaded; "
             f"suite wall time {total / 60:.1f} min. Success: mean TRE < {SUCCESS_UM} µm.", ""]
    lines += table(summary)
    lines += ["", "clemalign's verdict per condition (failures = TRE ≥ 1 µm):", "",
              "| condition | failures | failures not `ok` (flagged) | successes `failed` |",
              "|---|---|---|---|"]
    for c in dict.fromkeys(r["condition"] for r in rows):
        sel = [r for r in rows if r["condition"] == c and r["method"] == "clemalign"
               and r["confidence"] is not None]
        if not sel:
            continue
        bad = [r for r in sel if r["tre_um"] >= SUCCESS_UM]
        false_alarms = sum(r["confidence"] == "failed" for r in sel if r["tre_um"] < SUCCESS_UM)
        lines.append(f"| {c} | {len(bad)} | {sum(r['confidence'] != 'ok' for r in bad)} | "
                     f"{false_alarms} |")
    plot(rows, summary, RESULTS / f"{args.name}.png")
    write_results(args.name, {"machine": mach, "args": vars(args), "suite_wall_s": total,
                              "summary": summary, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
