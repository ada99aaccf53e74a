"""How alike EM and LM look, raw and as LoG at several scales (issue 3, step 1's ablation).

For known-aligned pairs, an EM plane image and the LM image are sampled at the same
physical points (``clemalign.evaluation.sample_on_em_plane``, on the LM pixel over the EM
field) and compared by Pearson correlation (signs set so that "EM dark ↔ LM bright" and
"dark-blob LoG ↔ bright-blob LoG" count as positive) and by normalised mutual information
``(H(a) + H(b)) / H(a, b)`` (32 bins on the 0.5–99.5 percentile range; 1 = independent).

Representations: ``raw`` (EM lightly smoothed, 0.8 px), ``log@selected`` (each image at
the scale the pipeline selects for it, ``prealign_xy(...).sigmas_um``), ``log@lm`` (both at
the LM's selected scale), ``log@1um``, ``log@2um``, ``log@3um``.

Data:

* simulated pairs (default size, ``simulate_pair(seed=s)``): the EM plane is one EM slice
  0.5, 1.5, 2.5 or 3.5 µm above the coverslip against the LM channel-0 MIP, and the mean
  of the whole EM depth against the MIP (what pre-alignment Part B matches);
* real-appearance cases from the expert-aligned DeepCLEM SEM/chromatin pairs
  (``real_appearance_cases``, EM ROI against the degraded fluorescence), when
  ``../shared/data/deepclem_2d`` is present.

Run: ``python benchmarks/representation_similarity.py [--seeds 8] [--workers 2]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import machine, run_tasks, write_results
from scipy import ndimage as ndi

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepclem_2d"
FIXED_SCALES_UM = (1.0, 2.0, 3.0)
HEIGHTS_UM = (0.5, 1.5, 2.5, 3.5)


def nmi(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Normalised mutual information (H(a) + H(b)) / H(a, b) on robust ranges."""
    ra, rb = np.percentile(a, [0.5, 99.5]), np.percentile(b, [0.5, 99.5])
    if ra[0] == ra[1] or rb[0] == rb[1]:
        return 1.0
    joint, _, _ = np.histogram2d(np.clip(a, *ra), np.clip(b, *rb), bins=bins, range=(ra, rb))
    p = joint / joint.sum()

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(1)) + entropy(p.sum(0))) / entropy(p)


def compare(em_plane, em_sp, lm_plane, lm_sp, em_to_lm, z_um, box, sigmas) -> dict:
    """Pearson r and NMI of every representation for one EM plane / LM plane pair."""
    from clemalign.evaluation import sample_on_em_plane
    from clemalign.representation import log_transform

    pix = float(lm_sp[1])

    def pair(em_img, lm_img):
        return sample_on_em_plane(em_img, em_sp, lm_img, lm_sp, em_to_lm, z_um=z_um,
                                  pixel_um=pix, box_yx_um=box)

    out = {}
    e, m = pair(ndi.gaussian_filter(em_plane, 0.8), lm_plane)
    out["raw"] = (float(np.corrcoef(-e, m)[0, 1]), nmi(e, m))
    scales = {"log@selected": (sigmas["em"], sigmas["lm"]), "log@lm": (sigmas["lm"],) * 2}
    scales.update({f"log@{s:g}um": (s, s) for s in FIXED_SCALES_UM})
    for name, (s_em, s_lm) in scales.items():
        e, m = pair(log_transform(em_plane, s_em, em_sp), log_transform(lm_plane, s_lm, lm_sp))
        out[name] = (float(np.corrcoef(e, -m)[0, 1]), nmi(e, m))
    return out


def simulated_task(seed: int) -> list[dict]:
    from clemalign import simulate_pair
    from clemalign.prealign import prealign_xy

    pair = simulate_pair(seed=seed)
    em, lm = pair.em, pair.lm
    mip = lm.data[0].max(axis=0).astype(np.float32)
    sigmas = prealign_xy(em, lm).sigmas_um
    cover_em_z = pair.parameters["coverslip_z_um"] - pair.em_to_lm.translation_um[2]
    rows = []
    planes = []
    for h in HEIGHTS_UM:
        k = int(round((cover_em_z + h) / em.voxel_size_um[0]))
        if 0 <= k < em.shape_zyx[0]:
            planes.append((f"slice {h:g} µm", em.data[k].astype(np.float32),
                           k * em.voxel_size_um[0]))
    planes.append(("depth mean", em.data.mean(axis=0, dtype=np.float32),
                   0.5 * (em.shape_zyx[0] - 1) * em.voxel_size_um[0]))
    for name, plane, z_um in planes:
        res = compare(plane, em.voxel_size_um[1:], mip, lm.voxel_size_um[1:], pair.em_to_lm,
                      z_um, None, sigmas)
        rows.append({"data": "simulated", "case": f"seed {seed}", "em_plane": name,
                     "sigma_em_um": sigmas["em"], "sigma_lm_um": sigmas["lm"], **{
                         k: {"r": v[0], "nmi": v[1]} for k, v in res.items()}})
    return rows


def real_task(name_seed: tuple[str, int]) -> list[dict]:
    import skimage.io

    from clemalign.prealign import prealign_xy
    from clemalign.synthetic import real_appearance_cases

    name, seed = name_seed
    em_img = skimage.io.imread(SHARED / f"{name}_em.png")
    fm_img = skimage.io.imread(SHARED / f"{name}_fm.png")
    rows = []
    for k, (case, roi) in enumerate(real_appearance_cases(em_img, fm_img, em_pixel_um=0.03,
                                                          n_cases=4, seed=seed)):
        em, lm = case.em, case.lm
        sigmas = prealign_xy(em, lm, roi=roi).sigmas_um
        (_, _), (y0, y1), (x0, x1) = [tuple(int(v) for v in p.split(":"))
                                      for p in roi.split(",")]
        sy, sx = em.voxel_size_um[1:]
        lm_plane = (lm.data[0] if lm.data.ndim == 4 else lm.data)[0].astype(np.float32)
        res = compare(em.data[0].astype(np.float32), em.voxel_size_um[1:], lm_plane,
                      lm.voxel_size_um[1:], case.em_to_lm, 0.0,
                      (y0 * sy, (y1 - 1) * sy, x0 * sx, (x1 - 1) * sx), sigmas)
        rows.append({"data": "DeepCLEM", "case": f"{name} case {k}", "em_plane": "section",
                     "sigma_em_um": sigmas["em"], "sigma_lm_um": sigmas["lm"], **{
                         key: {"r": v[0], "nmi": v[1]} for key, v in res.items()}})
    return rows


def table(rows: list[dict]) -> str:
    reps = ["raw", "log@selected", "log@lm"] + [f"log@{s:g}um" for s in FIXED_SCALES_UM]
    lines = ["| data | EM plane | n | σ EM / LM µm (median) | "
             + " | ".join(f"{r} r" for r in reps) + " | raw NMI | log@selected NMI |",
             "|---" * (6 + len(reps)) + "|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["em_plane"]), []).append(r)
    for (data, plane), g in groups.items():
        med = {k: float(np.median([r[k]["r"] for r in g])) for k in reps}
        lines.append(
            f"| {data} | {plane} | {len(g)} | "
            f"{np.median([r['sigma_em_um'] for r in g]):.2f} / "
            f"{np.median([r['sigma_lm_um'] for r in g]):.2f} | "
            + " | ".join(f"{med[k]:.2f}" for k in reps)
            + f" | {np.median([r['raw']['nmi'] for r in g]):.3f}"
            f" | {np.median([r['log@selected']['nmi'] for r in g]):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = run_tasks(simulated_task, list(range(1, args.seeds + 1)), args.workers)
    if SHARED.exists():
        rows += run_tasks(real_task, [("s6", 6), ("s7", 7)], args.workers)
    else:
        print(f"DeepCLEM cases skipped: {SHARED} not found")
    seconds = time.perf_counter() - t0
    md = ("# EM vs LM similarity: raw and LoG at several scales\n\n"
          f"{machine()['date']}, {machine()['cores']} cores; {seconds / 60:.1f} min. "
          "Median over cases of Pearson r (positive = the modalities agree) and of "
          "NMI (1 = independent). σ: the scales the pipeline selects "
          "(`prealign_xy(...).sigmas_um`).\n\n" + table(rows) + "\n")
    write_results("representation_similarity",
                  {"machine": machine(), "seconds": seconds, "rows": rows}, md)


if __name__ == "__main__":
    main()
