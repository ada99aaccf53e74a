"""Accuracy and speed of the whole registration (issue 5) on simulated pairs.

For each seed: a default-size simulated pair (EM 666×903×247 at 0.14/0.14/0.05 µm, LM
2×1024×1024×16 at 0.22/0.22/0.6 µm, EM anywhere in the LM field, rotation ±15°, tilt ≤ 2°,
per-axis scale ±3 %) is registered in memory with ``clemalign.register`` (rigid then
affine).  TRE = mean distance of the mapped EM landmarks (mitochondrion centres) to their
true LM positions.  Then one end-to-end ``clemalign register`` run on files (read, both
stages, write the default outputs) is timed with ``/usr/bin/time -v`` (wall time, peak RSS).

Run:  python benchmarks/registration_accuracy.py [--seeds 20] [--quick]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402

from clemalign import simulate_pair, write_simulated_pair  # noqa: E402
from clemalign.evaluation import target_registration_error  # noqa: E402
from clemalign.pipeline import RegistrationConfig, register  # noqa: E402

LABEL = RegistrationConfig(lm_channel="mito")  # the label channel, as in the earlier runs


def end_to_end(scale: float) -> dict:
    """Time ``clemalign register`` on files with /usr/bin/time -v."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pair"
        write_simulated_pair(data, simulate_pair(seed=100, scale=scale))
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "clemalign", "register",
               str(data / "em.ome.tif"), str(data / "lm.ome.tif"), "-o", str(Path(tmp) / "out"),
               "--lm-channel", "mito"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    h, m, s = (float(g or 0) for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"wall_s": 3600 * h + 60 * m + s, "peak_rss_gb": rss / 1e6}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 small pairs")
    args = parser.parse_args(argv)
    scale = 0.3 if args.quick else 1.0
    n = 3 if args.quick else args.seeds
    rows = []
    for seed in range(n):
        pair = simulate_pair(seed=seed, scale=scale)
        t0 = time.perf_counter()
        result = register(pair.em, pair.lm, config=LABEL)
        wall = time.perf_counter() - t0
        lm_pts = pair.landmarks_lm_um
        tre = target_registration_error(result.em_to_lm, pair.landmarks_em_um, lm_pts)
        stage_tre = {s.name: float(target_registration_error(
            s.em_to_lm, pair.landmarks_em_um, lm_pts).mean()) for s in result.fine.stages}
        pre_tre = float(target_registration_error(
            result.prealign.initial_em_to_lm, pair.landmarks_em_um, lm_pts).mean())
        px = float(pair.em.voxel_size_um[2])
        rows.append({"seed": seed, "tre_um": float(tre.mean()), "tre_em_px": float(tre.mean() / px),
                     "tre_max_um": float(tre.max()), "n_landmarks": int(tre.size),
                     "tre_prealign_um": pre_tre, "tre_stage_um": stage_tre,
                     "confidence": result.confidence, "wall_s": wall,
                     "timings_s": {"prealign": result.prealign.timings_s,
                                   "fine": result.fine.timings_s}})
        print(f"seed {seed:2d}: TRE {tre.mean():.3f} µm ({tre.mean() / px:.1f} EM px), "
              f"after pre-alignment {pre_tre:.2f}, rigid {stage_tre['rigid']:.3f}, "
              f"confidence {result.confidence['verdict']}, {wall:.1f} s", flush=True)
    e2e = end_to_end(scale)
    print(f"end to end: {e2e}")
    tre = np.array([r["tre_um"] for r in rows])
    ok = int((tre < 0.5).sum())
    lines = ["# Registration accuracy and speed (simulated pairs)", "",
             f"Machine: {machine()['cores']} cores, {machine()['memory_gib']} GiB. "
             f"{n} seeds, {'small (scale 0.3)' if args.quick else 'default size'}.", "",
             f"- mean TRE < 0.5 µm: **{ok}/{n}**; median TRE {np.median(tre):.3f} µm, "
             f"90th percentile {np.percentile(tre, 90):.3f} µm, worst {tre.max():.3f} µm",
             f"- median in-memory registration time {np.median([r['wall_s'] for r in rows]):.1f} s",
             f"- end-to-end `clemalign register` on files (read, both stages, default outputs): "
             f"{e2e['wall_s']:.1f} s wall, peak RSS {e2e['peak_rss_gb']:.2f} GB", "",
             "| seed | TRE µm | TRE EM px | max µm | after pre-alignment µm | rigid µm | "
             "confidence | s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['tre_um']:.3f} | {r['tre_em_px']:.1f} | "
                     f"{r['tre_max_um']:.2f} | {r['tre_prealign_um']:.2f} | "
                     f"{r['tre_stage_um']['rigid']:.3f} | {r['confidence']['verdict']} | "
                     f"{r['wall_s']:.1f} |")
    write_results("registration_accuracy" + ("_quick" if args.quick else ""),
                  {"machine": machine(), "rows": rows, "end_to_end": e2e},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
