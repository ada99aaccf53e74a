"""Speed, memory and scaling of ``clemalign register`` at the publication's sizes (issue 7).

Cases, each run end to end on files (``clemalign register``, every output written) under
``/usr/bin/time -v`` for wall time and peak resident memory, per-stage seconds read from
``transform.json``:

* (a) **SBF-SEM + confocal**: EM 666×903×247 at 0.14/0.14/0.05 µm, LM 2×1024×1024×16 at
  0.22/0.22/0.6 µm (the simulator's default pair).  The peers run on the same pair in the
  same run (in-process, all threads, EM averaged to the LM voxel as in ``peers.py``).
* (b) **microCT + two-photon of thick tissue**: EM 1084×896×1094 at 1 µm isotropic, LM
  2×1024×1024×107 at 0.59/0.59/3.0 µm (``clemalign.synthetic``: packed nuclei, vessels), a
  300×300×160 µm ``--roi`` inside the LM field, as a user marks it
  (``thick_tissue.publication_case``).
* **scaling**: the default pair at lateral scales 0.25, 0.5, 0.75 and 1 (EM and LM x/y
  multiplied), time against EM voxels on a log-log plot with the fitted exponent.

Publication (Table/Results of the reference method): (a) 92 s pre-alignment + 13.5 s
3D registration; (b) 234 s + 15.4 s.

Run:  python benchmarks/speed_scaling.py [--skip-peers] [--skip-microct]
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
from _common import RESULTS, machine, time_v, write_results  # noqa: E402

PUBLICATION_S = {"a": {"prealign": 92.0, "fine": 13.5}, "b": {"prealign": 234.0, "fine": 15.4}}


def timed_register(em_path: Path, lm_path: Path, out: Path, extra: list[str] = ()) -> dict:
    """``clemalign register`` under /usr/bin/time -v: wall, peak RSS and stage seconds."""
    cmd = [sys.executable, "-m", "clemalign", "register",
           str(em_path), str(lm_path), "-o", str(out), *extra]
    if "--lm-channel" not in extra:  # the label, as in the earlier runs (not the channel scan)
        cmd += ["--lm-channel", "0"]
    wall_s, peak_rss_gb = time_v(cmd)
    record = json.loads((out / "transform.json").read_text())
    t = record["timings_s"]
    return {"wall_s": wall_s, "peak_rss_gb": peak_rss_gb,
            "prealign_s": t["prealign"], "fine_s": t["fine"],
            "register_s": t["total"], "em_to_lm": record["em_to_lm"],
            "verdict": record["confidence"]["verdict"]}


def _tre(em_to_lm, truth, points) -> float:
    from clemalign import Affine

    est = Affine(np.asarray(em_to_lm, float))
    return float(np.linalg.norm(est.apply(points) - truth.apply(points), axis=1).mean())


def case_a(tmp: Path, peers: bool) -> dict:
    from clemalign import simulate_pair, write_simulated_pair

    pair = simulate_pair(seed=100)
    files = write_simulated_pair(tmp / "a", pair)
    row = timed_register(files["em.ome.tif"], files["lm.ome.tif"], tmp / "a_out")
    row["tre_um"] = _tre(row.pop("em_to_lm"), pair.em_to_lm, pair.landmarks_em_um)
    row["em_shape_zyx"], row["lm_shape"] = list(pair.em.shape_zyx), list(pair.lm.data.shape)
    out = {"clemalign": row, "peers": {}}
    # the cost of the orientation search end to end: the same pair with the search
    # restricted to the earlier default (±30°, no mirror)
    restricted = timed_register(files["em.ome.tif"], files["lm.ome.tif"], tmp / "a_out30",
                                ["--max-rotation-deg", "30", "--no-mirror"])
    restricted["tre_um"] = _tre(restricted.pop("em_to_lm"), pair.em_to_lm, pair.landmarks_em_um)
    out["restricted"] = restricted
    if peers:
        from peers import PEERS, peer_inputs, timed

        t0 = time.perf_counter()
        em_w, lm_w = peer_inputs(pair.em, pair.lm.channel(0))
        out["peer_input_s"] = time.perf_counter() - t0
        for name in ("sitk_mi_centred", "elastix_centred", "ants_affine",
                     "ants_affine_initializer"):
            tf, secs, err = timed(PEERS[name], em_w, lm_w, None)
            out["peers"][name] = {"wall_s": secs, "error": err,
                                  "tre_um": _tre(tf.matrix, pair.em_to_lm, pair.landmarks_em_um)
                                  if tf is not None else None}
            print(f"(a) {name}: {secs:.1f} s, TRE {out['peers'][name]['tre_um']}", flush=True)
    return out


def case_b() -> dict:
    """microCT + two-photon of thick tissue at the publication's size (issue 14's case)."""
    from thick_tissue import publication_case

    return {"clemalign": publication_case()}


def scaling(tmp: Path, scales=(0.25, 0.5, 0.75, 1.0)) -> list[dict]:
    from clemalign import simulate_pair, write_simulated_pair

    rows = []
    for s in scales:
        pair = simulate_pair(seed=102, scale=s)
        files = write_simulated_pair(tmp / f"s{s}", pair)
        row = timed_register(files["em.ome.tif"], files["lm.ome.tif"], tmp / f"s{s}_out")
        row["tre_um"] = _tre(row.pop("em_to_lm"), pair.em_to_lm, pair.landmarks_em_um)
        row.update(scale=s, em_voxels=int(np.prod(pair.em.shape_zyx)),
                   lm_voxels=int(np.prod(pair.lm.shape_zyx)))
        rows.append(row)
        print(f"scale {s}: {row['wall_s']:.1f} s wall, register {row['register_s']:.1f} s, "
              f"{row['peak_rss_gb']:.2f} GB, TRE {row['tre_um']:.3f}", flush=True)
    return rows


def plot_scaling(rows: list[dict], exponents: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([r["em_voxels"] for r in rows], float)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, label in (("wall_s", "end to end (read, register, write)"),
                       ("register_s", "registration (both stages)"),
                       ("prealign_s", "pre-alignment"), ("fine_s", "3D stage")):
        y = np.array([r[key] for r in rows])
        ax.loglog(x, y, "o-", label=f"{label}: ∝ N^{exponents[key]:.2f}")
    ax.set_xlabel("EM voxels N (lateral scale 0.25 → 1)")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--skip-microct", action="store_true")
    args = parser.parse_args(argv)
    out: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        out["a"] = case_a(tmp, not args.skip_peers)
        print("(a)", out["a"]["clemalign"], flush=True)
        if not args.skip_microct:
            out["b"] = case_b()
            print("(b)", out["b"]["clemalign"], flush=True)
        out["scaling"] = scaling(tmp)
    rows = out["scaling"]
    x = np.log([r["em_voxels"] for r in rows])
    exponents = {k: float(np.polyfit(x, np.log([r[k] for r in rows]), 1)[0])
                 for k in ("wall_s", "register_s", "prealign_s", "fine_s")}
    out["exponents"] = exponents
    plot_scaling(rows, exponents, RESULTS / "speed_scaling.png")
    m = out["machine"]
    lines = ["# Speed, memory and scaling of `clemalign register`", "",
             f"{m['date']}, {m['cores']} cores, {m['memory_gib']} GiB. End to end on files "
             "(read, both stages, every output incl. report), `/usr/bin/time -v`.", "",
             "| case | EM shape (z, y, x) | pre-alignment s | 3D stage s | registration s | "
             "wall s | peak RSS GB | TRE µm | verdict | publication s (pre + 3D) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in ("a", "b"):
        if key not in out:
            continue
        r = out[key]["clemalign"]
        pub = PUBLICATION_S[key]
        lines.append(f"| ({key}) | {'×'.join(map(str, r['em_shape_zyx']))} | "
                     f"{r['prealign_s']:.1f} | {r['fine_s']:.1f} | {r['register_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} | {r['tre_um']:.2f} | "
                     f"{r['verdict']} | {pub['prealign']:.0f} + {pub['fine']:.1f} |")
    r30 = out["a"]["restricted"]
    full_wall = out["a"]["clemalign"]["wall_s"]
    lines += ["", f"Orientation search cost, case (a) end to end: {full_wall:.1f} s "
              f"with the full-circle + mirror search vs {r30['wall_s']:.1f} s restricted to ±30° "
              f"without mirror (ratio {out['a']['clemalign']['wall_s'] / r30['wall_s']:.2f}; "
              f"registration alone {out['a']['clemalign']['register_s']:.1f} vs "
              f"{r30['register_s']:.1f} s)."]
    if out["a"]["peers"]:
        lines += ["", "Peers on case (a), same run (in-process, all threads; EM averaged to "
                  f"the LM voxel first: {out['a']['peer_input_s']:.1f} s, not included):", "",
                  "| method | s | TRE µm | ratio to clemalign registration |", "|---|---|---|---|"]
        ref = out["a"]["clemalign"]["register_s"]
        lines.append(f"| clemalign (both stages) | {ref:.1f} | "
                     f"{out['a']['clemalign']['tre_um']:.2f} | 1.00 |")
        for name, p in out["a"]["peers"].items():
            tre = f"{p['tre_um']:.2f}" if p["tre_um"] is not None else "crash"
            lines.append(f"| {name} | {p['wall_s']:.1f} | {tre} | {p['wall_s'] / ref:.2f} |")
    lines += ["", "Scaling (default pair at lateral scales 0.25–1):", "",
              "| scale | EM voxels | pre-alignment s | 3D stage s | registration s | wall s | "
              "peak RSS GB | TRE µm |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scale']} | {r['em_voxels']:,} | {r['prealign_s']:.1f} | "
                     f"{r['fine_s']:.1f} | {r['register_s']:.1f} | {r['wall_s']:.1f} | "
                     f"{r['peak_rss_gb']:.2f} | {r['tre_um']:.2f} |")
    lines += ["", "Fitted exponents (time ∝ EM voxels^k): " + ", ".join(
        f"{k} {v:.2f}" for k, v in exponents.items())]
    write_results("speed_scaling", out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
