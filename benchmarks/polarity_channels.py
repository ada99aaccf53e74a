"""Contrast polarity and LM channel found, not assumed (issue 15, item 2).

For each seed, a default-size simulated monolayer pair (EM 666×903×247 at
0.14/0.14/0.05 µm, LM 2×1024×1024×16 at 0.22/0.22/0.6 µm) is registered four ways:

* **original**: as simulated, ``lm_channel="mito"`` (the reference);
* **inverted_em**: the EM's contrast inverted (``255 − EM``: bright membranes and
  organelles, as raw backscatter), nothing else told;
* **label_in_channel_1**: the LM's channels are (another sample's label, this sample's
  label) and no channel is given: every channel is scored and the clearest registered;
* **cells_in_channel_0**: the LM's channels are (autofluorescence, label), no channel
  given (a cell-shaped channel competes with the label).

Thick tissue (``simulate_tissue_pair``, 3D pre-alignment): original vs inverted EM.
Reported: mean landmark error (TRE) against the truth, the verdict, the polarity found and
the channel chosen with every channel's peak margin.

Run:  python benchmarks/polarity_channels.py [--seeds 8] [--tissue-seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402


def _inverted(volume):
    data = volume.data
    return volume.with_data((np.iinfo(data.dtype).max - data).astype(data.dtype))


def _row(kind: str, seed: int, res, pair, wall: float) -> dict:
    from clemalign.evaluation import target_registration_error

    tre = target_registration_error(res.em_to_lm, pair.landmarks_em_um, pair.landmarks_lm_um)
    pol = getattr(res.prealign, "polarity", None)
    return {"kind": kind, "seed": seed, "tre_um": float(tre.mean()),
            "verdict": res.confidence["verdict"], "score": res.confidence["score"],
            "em_polarity": f"{pol.em} ({pol.em_how})" if pol else "searched (3D)",
            "channel": res.lm_channel,
            "channel_margins": {c.name: round(c.margin, 2) for c in res.channel_scores},
            "wall_s": wall}


def monolayer_seed(seed: int) -> list[dict]:
    from clemalign import Volume, simulate_pair
    from clemalign.pipeline import RegistrationConfig, register

    pair = simulate_pair(seed=seed)
    other = simulate_pair(seed=seed + 5000, scale=1.0)
    label, autofl = pair.lm.data[0], pair.lm.data[1]
    cases = {
        "original": (pair.em, pair.lm, "mito"),
        "inverted_em": (_inverted(pair.em), pair.lm, "mito"),
        "label_in_channel_1": (pair.em, Volume(
            np.stack([other.lm.data[0][:, :label.shape[1], :label.shape[2]], label]),
            pair.lm.voxel_size_um, pair.lm.origin_xyz_um, ("other sample", "mito")), None),
        "cells_in_channel_0": (pair.em, Volume(
            np.stack([autofl, label]), pair.lm.voxel_size_um, pair.lm.origin_xyz_um,
            ("autofluorescence", "mito")), None),
    }
    rows = []
    for kind, (em, lm, channel) in cases.items():
        t0 = time.perf_counter()
        res = register(em, lm, config=RegistrationConfig(lm_channel=channel))
        rows.append(_row(kind, seed, res, pair, time.perf_counter() - t0))
        r = rows[-1]
        print(f"seed {seed:2d} {kind:>19}: TRE {r['tre_um']:.3f} µm {r['verdict']:>9} "
              f"EM {r['em_polarity']}, channel {r['channel']} {r['channel_margins']} "
              f"{r['wall_s']:.1f} s", flush=True)
    return rows


def tissue_seed(seed: int) -> list[dict]:
    from clemalign.pipeline import RegistrationConfig, register
    from clemalign.synthetic import simulate_tissue_pair

    pair = simulate_tissue_pair(seed=seed)
    config = RegistrationConfig(roi=pair.roi, lm_channel="nuclei")
    rows = []
    for kind, em in (("tissue_original", pair.em), ("tissue_inverted_em", _inverted(pair.em))):
        t0 = time.perf_counter()
        res = register(em, pair.lm, config=config)
        rows.append(_row(kind, seed, res, pair, time.perf_counter() - t0))
        print(f"seed {seed:2d} {kind:>19}: TRE {rows[-1]['tre_um']:.3f} µm "
              f"{rows[-1]['verdict']}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    out = ["| case | pairs | median TRE µm | max TRE µm | ok | channel chosen | EM polarity |",
           "|---|---|---|---|---|---|---|"]
    for k in kinds:
        rs = [r for r in rows if r["kind"] == k]
        tre = np.array([r["tre_um"] for r in rs])
        chans = sorted({str(r["channel"]) for r in rs})
        pols = sorted({r["em_polarity"] for r in rs})
        out.append(f"| {k} | {len(rs)} | {np.median(tre):.3f} | {tre.max():.3f} | "
                   f"{sum(r['verdict'] == 'ok' for r in rs)}/{len(rs)} | {', '.join(chans)} | "
                   f"{', '.join(pols)} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--tissue-seeds", type=int, default=3)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = []
    for seed in range(args.seeds):
        rows += monolayer_seed(seed)
    for seed in range(args.tissue_seeds):
        rows += tissue_seed(seed)
    by = {(r["kind"], r["seed"]): r["tre_um"] for r in rows}
    diffs = {k: [by[(k, s)] - by[(base, s)] for s in range(n)]
             for k, base, n in (("inverted_em", "original", args.seeds),
                                ("label_in_channel_1", "original", args.seeds),
                                ("cells_in_channel_0", "original", args.seeds),
                                ("tissue_inverted_em", "tissue_original", args.tissue_seeds))}
    md = (f"# Polarity and channel found, not assumed\n\n`python benchmarks/polarity_channels.py "
          f"--seeds {args.seeds} --tissue-seeds {args.tissue_seeds}` on {machine()['cores']} "
          f"cores, {time.perf_counter() - t0:.0f} s in all.\n\n" + table(rows) + "\n\n"
          "TRE minus the original's, per seed (µm):\n\n"
          + "\n".join(f"- {k}: median {np.median(v):+.3f}, largest {max(v, key=abs):+.3f}"
                      for k, v in diffs.items()) + "\n")
    write_results("polarity_channels", {"machine": machine(), "rows": rows,
                                        "tre_minus_original_um": diffs}, md)


if __name__ == "__main__":
    main()
