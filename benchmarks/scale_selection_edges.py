"""LoG scale selection on hard-edged objects, before and after a change (issue 15, item 3).

Compares two versions of ``clemalign`` (each run in its own subprocess with its own
``PYTHONPATH``): by default the code at ``--before`` (e.g. a ``git worktree`` of the old
commit, its ``src`` folder) and the importable one.  Cases:

* hard-edged synthetic objects with a known answer: binary (not anti-aliased) disks in 2D
  and spheres in 3D, several radii and pixel sizes, 0–20 % noise, a quarter of them
  touching another (``tests/test_representation.py::binary_blobs``).  Expected sigma:
  ``r/√2`` (2D), ``r/√3`` (3D) — ``sigma`` is the Gaussian standard deviation in µm of
  the scale-normalised LoG ``s²·∇²``;
* the scales the pre-alignment selects (``prealign_xy(...).sigmas_um``, EM slices and LM
  MIP at the common pixel) on default-size simulated pairs, seeds 0–4.  The EM shows
  mitochondria as cross-sections of radius 0.18–0.30 µm, sigma 0.13–0.21 µm: below the
  scale grid, which starts at the common pixel (the LM's 0.22 µm);
* the same on the DeepCLEM real-appearance cases (``real_appearance_cases``, 4 per image,
  seeds 6 and 7 as in ``representation_similarity.py``) when ``../shared/data/deepclem_2d``
  is present.  No known answer.

Speed: ``select_log_scale`` on the cases of ``scale_selection_speed.py`` (LM MIP 1024²,
12 EM slices 903×666, simulated seed 2), both versions loaded in one process and called
alternately (so that other load on the machine slows both alike), median of the runs.

Run: ``python benchmarks/scale_selection_edges.py --before /tmp/before/src [--repeats 5]``
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEEPCLEM = HERE.parents[1] / "shared" / "data" / "deepclem_2d"
# (radius µm, pixel µm, noise sd in units of the object contrast)
DISKS = [(0.6, 0.1, 0.0), (0.6, 0.25, 0.1), (1.0, 0.1, 0.1), (1.5, 0.15, 0.0),
         (2.5, 0.25, 0.2), (2.5, 0.1, 0.0), (2.5, 0.1, 0.2)]
SPHERES = [(0.6, 0.15, 0.0), (1.0, 0.2, 0.0), (1.5, 0.25, 0.2)]
SEEDS = range(5)


def _synthetic_rows() -> list[dict]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_representation import _side, binary_blobs

    from clemalign.representation import select_log_scale

    rows = []
    for shapes, d, n, fill in ((DISKS, 2, 24, 0.1), (SPHERES, 3, 16, 0.08)):
        for radius, pixel, noise in shapes:
            r = radius / pixel
            img, placed = binary_blobs((_side(n, r, d, fill),) * d, r, n, 1, noise=noise)
            sel = select_log_scale(img, pixel, polarity="bright")
            rows.append({"case": f"{'disks' if d == 2 else 'spheres'} r {radius} µm, "
                                 f"pixel {pixel} µm, noise {noise:.0%} ({placed} objects)",
                         "group": "hard-edged", "sigma_um": sel.sigma_um,
                         "expected_um": radius / np.sqrt(d),
                         "count": int(sel.blob_counts[sel.selected_index])})
    return rows


def _prealign_rows() -> list[dict]:
    from clemalign import simulate_pair
    from clemalign.prealign import prealign_xy

    rows = []
    for seed in SEEDS:
        pair = simulate_pair(seed=seed)
        res = prealign_xy(pair.em, pair.lm)
        for mod in ("em", "lm"):
            sel = res.scale_selections[mod]
            rows.append({"case": f"simulated seed {seed}, {mod.upper()}", "group": "simulated",
                         "sigma_um": res.sigmas_um[mod],
                         "expected_um": "(0.13–0.21)" if mod == "em" else None,
                         "count": int(sel["blob_counts"][sel["selected_index"]])})
    if not DEEPCLEM.exists():
        return rows
    import skimage.io

    from clemalign.synthetic import real_appearance_cases

    for name in ("s6", "s7"):
        em = skimage.io.imread(DEEPCLEM / f"{name}_em.png")
        fm = skimage.io.imread(DEEPCLEM / f"{name}_fm.png")
        cases = real_appearance_cases(em, fm, em_pixel_um=0.03, n_cases=4, seed=int(name[1:]))
        for k, (case, roi) in enumerate(cases):
            res = prealign_xy(case.em, case.lm, roi=roi)
            for mod in ("em", "lm"):
                sel = res.scale_selections[mod]
                rows.append({"case": f"DeepCLEM {name} case {k}, {mod.upper()}",
                             "group": "DeepCLEM", "sigma_um": res.sigmas_um[mod],
                             "expected_um": None,
                             "count": int(sel["blob_counts"][sel["selected_index"]])})
    return rows


def _load_representation(src: str, alias: str):
    """``clemalign.representation`` of the package in ``src``, imported as ``alias``."""
    package = Path(src) / "clemalign"
    spec = importlib.util.spec_from_file_location(alias, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{alias}.representation")


def _speed(srcs: dict[str, str], repeats: int) -> dict:
    """Seconds per call of the ``scale_selection_speed.py`` cases, per version."""
    from clemalign import simulate_pair

    pair = simulate_pair(seed=2)
    mip = pair.lm.data[0].max(axis=0).astype(np.float32)
    idx = np.linspace(0, pair.em.shape_zyx[0] - 1, 14).astype(int)[1:-1]
    slices = pair.em.data[idx].astype(np.float32)
    modules = {label: _load_representation(src, f"clemalign_{label}")
               for label, src in srcs.items()}
    cases = {"LM MIP 1024×1024": lambda rep: rep.select_log_scale(
                 mip, pair.lm.voxel_size_um[1:], polarity="bright"),
             "EM 12 slices 903×666": lambda rep: rep.select_log_scale(
                 slices, pair.em.voxel_size_um, polarity="dark", per_slice=True)}
    out: dict[str, dict[str, list[float]]] = {label: {} for label in srcs}
    for name, run in cases.items():
        for rep in modules.values():
            run(rep)  # warm-up
        for _ in range(repeats):
            for label, rep in modules.items():
                t0 = time.perf_counter()
                run(rep)
                out[label].setdefault(name, []).append(time.perf_counter() - t0)
    return out


def _child(src: str) -> list[dict]:
    """Run this script's ``--emit`` mode with ``src`` first on the path; its JSON output."""
    env = dict(os.environ, PYTHONPATH=src)
    proc = subprocess.run([sys.executable, __file__, "--emit"], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v) -> str:
    if v is None:
        return "—"
    return v if isinstance(v, str) else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=False, help="src folder of the old code")
    parser.add_argument("--after", default=str(HERE.parent / "src"),
                        help="src folder of the new code (default: this checkout's)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per version")
    parser.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emit:
        print(json.dumps(_synthetic_rows() + _prealign_rows()))
        return
    if not args.before:
        parser.error("--before SRC is required")

    sys.path.insert(0, str(HERE))
    from _common import machine, write_results

    t_start = time.perf_counter()
    before = _child(args.before)
    after = _child(args.after)
    speed = _speed({"before": args.before, "after": args.after}, args.repeats)

    lines = ["| case | expected σ µm | σ before µm | σ after µm | blobs at the selected scale "
             "before / after |", "|---|---|---|---|---|"]
    for b, a in zip(before, after, strict=True):
        lines.append(f"| {a['case']} | {_fmt(a['expected_um'])} | {_fmt(b['sigma_um'])} | "
                     f"{_fmt(a['sigma_um'])} | {b['count']} / {a['count']} |")
    within = {label: sum(abs(r["sigma_um"] / r["expected_um"] - 1) <= 0.15 for r in rows
                         if r["group"] == "hard-edged")
              for label, rows in (("before", before), ("after", after))}
    n_hard = sum(r["group"] == "hard-edged" for r in after)
    speed_lines = ["| case | median s before | median s after | after / before |",
                   "|---|---|---|---|"]
    for name in speed["before"]:
        mb, ma = statistics.median(speed["before"][name]), statistics.median(speed["after"][name])
        speed_lines.append(f"| {name} | {mb:.3f} | {ma:.3f} | {ma / mb:.2f} |")
    info = machine()
    md = (f"# LoG scale selection on hard-edged objects: before / after (issue 15, item 3)\n\n"
          f"{info['date']}, {info['cores']} cores, {info['memory_gib']} GiB; "
          f"{(time.perf_counter() - t_start) / 60:.1f} min. Before: `{args.before}`; after: "
          f"`{args.after}`. σ: the Gaussian standard deviation (µm) of the scale-normalised "
          "LoG; a disk of radius r has σ = r/√2, a sphere r/√3. Hard-edged objects: binary, "
          "not anti-aliased, a quarter touching another, noise sd relative to the contrast. "
          "Simulated / DeepCLEM: the scales `prealign_xy` selects (EM slices, LM MIP, at the "
          "common pixel: 0.22 µm simulated, 0.12 µm DeepCLEM, which is also the smallest σ "
          "searched); (0.13–0.21): the simulated mitochondria's cross-sections, finer than "
          "that grid.\n\n"
          f"Hard-edged cases within 15 % of the expected σ: before {within['before']}/{n_hard}, "
          f"after {within['after']}/{n_hard}.\n\n" + "\n".join(lines) + "\n\n"
          f"## Speed of `select_log_scale` ({args.repeats} calls per version, alternating in "
          "one process, median)\n\n" + "\n".join(speed_lines) + "\n")
    write_results("scale_selection_edges",
                  {"machine": info, "before_src": args.before, "after_src": args.after,
                   "before": before, "after": after, "speed_s": speed}, md)


if __name__ == "__main__":
    main()
