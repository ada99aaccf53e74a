"""Thick specimens (issue 14): simulated microCT + two-photon tissue, the 3D pre-alignment.

* **pairs**: N small-size tissue pairs (``clemalign.synthetic.simulate_tissue_pair``: microCT block
  110×200×200 µm at 1 µm with a 70×140×140 µm ``--roi``, two-photon 2×384×384×36 at
  0.59/0.59/3 µm), rotation over the full circle; odd seeds mirrored (every other one of
  those also z-reversed: a 180° turn about an in-plane axis); seeds with ``(s // 2) % 2 ==
  1`` tilted 5–10° (random direction), the others 0–5°.  Each is registered with
  ``prealign_mode`` ``auto`` (the default), ``xy`` and ``3d`` (the ablation; when
  ``auto`` chose 3D its result is the ``3d`` row).  Only ``--roi`` and the LM channel
  are given, as a user would.
* **unrelated**: the EM of pair ``s`` with the LM of another sample (seed ``s + 1000``):
  the verdict should not be ``ok``.
* **peers** (``--peers K``, needs ``pip install -e ".[bench]"``): SimpleITK MI, elastix
  and ANTs affine from a centred guess on the first K pairs (EM ROI averaged to the LM
  voxel, as in ``peers.py``).
* **publication** (``--publication``): one pair at the publication's second-experiment
  size (microCT 1084×896×1094 at 1 µm, LM 2×1024×1024×107 at 0.59/0.59/3 µm, ROI
  300×300×160 µm) written to files and registered end to end with ``clemalign register``
  under ``/usr/bin/time -v`` (wall time, peak RSS).

Run:  python benchmarks/thick_tissue.py [--seeds 20] [--workers 2] [--peers 5] [--publication]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_tasks, write_results  # noqa: E402


def tissue_overrides(seed: int) -> dict:
    """Orientation of pair ``seed``: mirror, z reversal and tilt class (see module doc)."""
    rng = np.random.default_rng([seed, 99])
    big = (seed // 2) % 2 == 1
    magnitude = rng.uniform(5.0, 10.0) if big else rng.uniform(0.0, 5.0)
    azimuth = rng.uniform(0.0, 2 * np.pi)
    return {"mirror": seed % 2 == 1, "flip_z": seed % 4 == 3,
            "tilt_deg": (float(magnitude * np.cos(azimuth)), float(magnitude * np.sin(azimuth)))}


def _row(kind: str, seed: int, mode: str, result, pair, wall: float) -> dict:
    from clemalign.evaluation import target_registration_error

    row = {"kind": kind, "seed": seed, "mode": mode, "wall_s": wall,
           "mode_run": result.prealign_choice["mode"],
           "verdict": result.confidence["verdict"], "score": result.confidence["score"],
           "evidence": result.confidence["evidence"],
           "timings_s": result.timings_s}
    if pair is not None:
        tre = target_registration_error(result.em_to_lm, pair.landmarks_em_um,
                                        pair.landmarks_lm_um)
        pre = target_registration_error(result.prealign.initial_em_to_lm,
                                        pair.landmarks_em_um, pair.landmarks_lm_um)
        row.update(tre_um=float(tre.mean()), tre_max_um=float(tre.max()),
                   tre_prealign_um=float(pre.mean()), n_landmarks=int(tre.size),
                   truth=pair.parameters)
    return row


def run_seed(task: tuple[int, int]) -> list[dict]:
    from dataclasses import replace

    from clemalign.pipeline import RegistrationConfig, register
    from clemalign.synthetic import simulate_tissue_pair

    seed, n_peers = task
    pair = simulate_tissue_pair(seed=seed, **tissue_overrides(seed))
    base = RegistrationConfig(roi=pair.roi, lm_channel="nuclei")
    rows = []
    for mode in ("auto", "xy", "3d"):
        if mode == "3d" and rows[0]["mode_run"] == "3d":
            rows.append({**rows[0], "mode": "3d"})
            continue
        t0 = time.perf_counter()
        res = register(pair.em, pair.lm, config=replace(base, prealign_mode=mode))
        rows.append(_row("pair", seed, mode, res, pair, time.perf_counter() - t0))
    other = simulate_tissue_pair(seed=seed + 1000)
    t0 = time.perf_counter()
    res = register(pair.em, other.lm, config=base)
    rows.append(_row("unrelated", seed, "auto", res, None, time.perf_counter() - t0))
    if seed < n_peers:
        rows += _peers(pair)
    for r in rows:
        tre = f"{r['tre_um']:7.3f}" if "tre_um" in r else "      —"
        print(f"seed {seed:2d} {r['kind']:>9} {r['mode']:>5} ({r['mode_run']}): TRE {tre} "
              f"{r['verdict']:>9} {r['score']:.2f} {r['wall_s']:5.1f} s", flush=True)
    return rows


def _peers(pair) -> list[dict]:
    """SimpleITK / elastix / ANTs affine from a centred guess on the EM ROI."""
    from peers import PEERS, peer_inputs, timed

    from clemalign.evaluation import target_registration_error
    from clemalign.volume import parse_roi

    roi = parse_roi(pair.roi, pair.em.shape_zyx)
    em_w, lm_w = peer_inputs(pair.em, pair.lm.channel("nuclei"), roi.slices)
    rows = []
    for name in ("sitk_mi_centred", "elastix_centred", "ants_affine"):
        try:
            tf, secs, err = timed(PEERS[name], em_w, lm_w, None)
        except ImportError as exc:  # the bench extra is not installed
            tf, secs, err = None, 0.0, f"not installed: {exc}"
        tre = (float(target_registration_error(tf, pair.landmarks_em_um,
                                               pair.landmarks_lm_um).mean())
               if tf is not None else None)
        rows.append({"kind": "peer", "seed": pair.config.seed, "mode": name, "mode_run": name,
                     "tre_um": tre, "wall_s": secs, "error": err, "verdict": "-",
                     "score": float("nan")})
    return rows


def publication_case(seed: int = 1) -> dict:
    """The publication-size pair on files, ``clemalign register`` end to end."""
    from speed_scaling import timed_register

    from clemalign import Affine
    from clemalign.synthetic import TissueConfig, simulate_tissue_pair, write_simulated_pair

    t0 = time.perf_counter()
    pair = simulate_tissue_pair(TissueConfig.publication(), seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_simulated_pair(Path(tmp) / "data", pair)
        simulate_s = time.perf_counter() - t0
        row = timed_register(files["em.ome.tif"], files["lm.ome.tif"], Path(tmp) / "out",
                             ["--roi", pair.roi, "--lm-channel", "nuclei"])
        record = json.loads((Path(tmp) / "out" / "transform.json").read_text())
    est = Affine(np.asarray(row.pop("em_to_lm"), float))
    tre = np.linalg.norm(est.apply(pair.landmarks_em_um) - pair.landmarks_lm_um, axis=1)
    return {**row, "tre_um": float(tre.mean()), "tre_max_um": float(tre.max()),
            "simulate_s": simulate_s, "roi": pair.roi, "truth": pair.parameters,
            "prealign_choice": record["prealign_choice"],
            "prealign_steps_s": record["timings_s"]["prealign_steps"],
            "fine_steps_s": record["timings_s"]["fine_steps"],
            "em_shape_zyx": list(pair.em.shape_zyx), "lm_shape": list(pair.lm.data.shape)}


def _summary(rows: list[dict], mode: str) -> str:
    sel = [r for r in rows if r["kind"] == "pair" and r["mode"] == mode]
    tre = np.array([r["tre_um"] for r in sel])
    ok = int((tre < 2.0).sum())
    missed = [r for r in sel if r["tre_um"] >= 2.0]
    flagged = sum(r["verdict"] != "ok" for r in missed)
    chose = {m: sum(r["mode_run"] == m for r in sel) for m in ("xy", "3d")}
    return (f"| {mode} | {ok}/{len(sel)} | {np.median(tre):.3f} | "
            f"{np.percentile(tre, 90):.3f} | {tre.max():.2f} | {flagged}/{len(missed)} | "
            f"{chose['xy']} / {chose['3d']} | "
            f"{np.median([r['wall_s'] for r in sel]):.1f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--publication", action="store_true")
    parser.add_argument("--name", default="thick_tissue")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = run_tasks(run_seed, [(s, args.peers) for s in range(args.seeds)], args.workers)
    suite_s = time.perf_counter() - t0
    out = {"machine": machine(), "args": vars(args), "suite_wall_s": suite_s, "rows": rows}
    if args.publication:
        out["publication"] = publication_case()
        print("publication:", out["publication"], flush=True)
    mach = out["machine"]
    lines = ["# Thick tissue: microCT + two-photon, 3D pre-alignment (issue 14)", "",
             f"{mach['date']}, {mach['cores']} cores, {mach['memory_gib']} GiB; "
             f"{args.seeds} small-size pairs, {args.workers} worker processes; suite "
             f"{suite_s / 60:.1f} min. Success: mean landmark error < 2 µm (two microCT "
             "voxels). Only `--roi` and the LM channel given.", "",
             "| pre-alignment | success | median TRE µm | 90th pct | worst | failures flagged "
             "| chose xy / 3d | median s |", "|---|---|---|---|---|---|---|---|"]
    lines += [_summary(rows, m) for m in ("auto", "xy", "3d")]
    bad = [r for r in rows if r["kind"] == "unrelated"]
    lines += ["", f"Unrelated pairs (EM of one block, LM of another) flagged `failed` or "
              f"`uncertain`: **{sum(r['verdict'] != 'ok' for r in bad)}/{len(bad)}** "
              f"(`failed` {sum(r['verdict'] == 'failed' for r in bad)}); their MI contrast "
              f"at most {max(r['evidence']['mi_contrast'] for r in bad):.3f} nats."]
    good = [r for r in rows if r["kind"] == "pair" and r["mode"] == "auto"]
    lines.append(f"Registered pairs (auto): MI contrast "
                 f"{min(r['evidence']['mi_contrast'] for r in good):.3f}–"
                 f"{max(r['evidence']['mi_contrast'] for r in good):.3f} nats, 3D peak margin "
                 f"{min(r['evidence']['prealign_margin'] for r in good):.1f}–"
                 f"{max(r['evidence']['prealign_margin'] for r in good):.1f} robust z.")
    peers = [r for r in rows if r["kind"] == "peer"]
    if peers:
        lines += ["", "Peers from a centred guess (EM ROI averaged to the LM voxel), first "
                  f"{args.peers} pairs; clemalign (auto) on the same pairs for comparison:", "",
                  "| method | success (< 2 µm) | median TRE µm | median s |", "|---|---|---|---|"]
        first = [r for r in good if r["seed"] < args.peers]
        lines.append(f"| clemalign | {sum(r['tre_um'] < 2 for r in first)}/{len(first)} | "
                     f"{np.median([r['tre_um'] for r in first]):.2f} | "
                     f"{np.median([r['wall_s'] for r in first]):.1f} |")
        for name in ("sitk_mi_centred", "elastix_centred", "ants_affine"):
            sel = [r for r in peers if r["mode"] == name]
            tres = [r["tre_um"] for r in sel if r["tre_um"] is not None]
            errors = [r["error"] for r in sel if r["error"]]
            med = f"{np.median(tres):.1f}" if tres else "—"
            note = f" ({len(errors)} errors: {errors[0][:60]})" if errors else ""
            lines.append(f"| {name} | {sum(t < 2 for t in tres)}/{len(sel)}{note} | {med} | "
                         f"{np.median([r['wall_s'] for r in sel]):.1f} |")
    if "publication" in out:
        p = out["publication"]
        lines += ["", "Publication-size pair (microCT 1084×896×1094 at 1 µm, LM "
                  "2×1024×1024×107 at 0.59/0.59/3 µm, ROI "
                  f"{p['roi']}), `clemalign register` on files, all outputs written:", "",
                  "| TRE µm (max) | wall s | peak RSS GB | pre-alignment s | 3D stage s | "
                  "verdict | publication s |", "|---|---|---|---|---|---|---|",
                  f"| {p['tre_um']:.3f} ({p['tre_max_um']:.3f}) | {p['wall_s']:.1f} | "
                  f"{p['peak_rss_gb']:.2f} | {p['prealign_s']:.1f} | {p['fine_s']:.1f} | "
                  f"{p['verdict']} | 234 + 15.4 |"]
    lines += ["", "| seed | mirror | z reversed | tilt ° | mode | chose | TRE µm | after "
              "pre-alignment µm | verdict | score | MI contrast | margin | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "pair":
            continue
        t = r["truth"]
        ev = r["evidence"]
        lines.append(f"| {r['seed']} | {t['mirror']} | {t['flip_z']} | "
                     f"{np.hypot(t['tilt_x_deg'], t['tilt_y_deg']):.1f} | {r['mode']} | "
                     f"{r['mode_run']} | {r['tre_um']:.3f} | {r['tre_prealign_um']:.2f} | "
                     f"{r['verdict']} | {r['score']:.2f} | {ev['mi_contrast']:.3f} | "
                     f"{ev['prealign_margin']:.1f} | {r['wall_s']:.1f} |")
    write_results(args.name, out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
