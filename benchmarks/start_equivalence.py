"""The fine stage's start transforms for the 3D benchmark pairs, to compare two versions.

A change to the pre-alignment that leaves every start matrix identical leaves the 3D
results identical too (the 3D stage is deterministic), without rerunning the whole
benchmarks.  Writes one JSON per version; ``--compare A B`` lists the pairs that differ.

* ``acc``: the 20 pairs of ``registration_accuracy.py``;
* ``ori``: the 40 full-rotation/mirror pairs of ``orientation_confidence.py`` and its
  "other sample" unrelated pairs (every third seed).

Run:  PYTHONPATH=<version>/src python benchmarks/start_equivalence.py acc|ori OUT.json
      python benchmarks/start_equivalence.py --compare OLD.json NEW.json
"""

from __future__ import annotations

import json
import sys

import numpy as np


class _Stop(Exception):
    pass


def starts(which: str) -> dict:
    import clemalign.pipeline as pipeline
    from clemalign import simulate_pair
    from clemalign.pipeline import RegistrationConfig

    def stop(em, lm, initial, **kwargs):  # stands in for the fine stage
        raise _Stop({"initial": np.asarray(initial.matrix).tolist(),
                     "alternatives": [np.asarray(a.matrix).tolist()
                                      for a in kwargs.get("alternatives", [])]})

    pipeline.register_3d = pipeline.register_plane = stop
    config = RegistrationConfig(lm_channel="mito")
    out = {}

    def run(key, em, lm):
        try:
            pipeline.register(em, lm, config=config)
        except _Stop as found:
            out[key] = found.args[0]
        print(key, flush=True)

    if which == "acc":
        for seed in range(20):
            pair = simulate_pair(seed=seed, scale=1.0)
            run(f"acc{seed}", pair.em, pair.lm)
    else:
        for seed in range(40):
            pair = simulate_pair(seed=seed, scale=1.0, max_rotation_deg=180.0,
                                 mirror=seed % 2 == 1)
            run(f"ori{seed}", pair.em, pair.lm)
            if seed % 3 == 0:
                run(f"other{seed}", pair.em, simulate_pair(seed=seed + 10000, scale=1.0).lm)
    return out


def compare(a: dict, b: dict) -> list[str]:
    differ = []
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            differ.append(f"{key}: only in one")
            continue
        d = np.abs(np.array(a[key]["initial"]) - np.array(b[key]["initial"])).max()
        alts = (len(a[key]["alternatives"]) != len(b[key]["alternatives"])
                or any(np.abs(np.array(x) - np.array(y)).max() > 0
                       for x, y in zip(a[key]["alternatives"], b[key]["alternatives"],
                                       strict=False)))
        if d > 0 or alts:
            differ.append(f"{key}: start differs by up to {d:.3g}"
                          + (" (alternatives differ)" if alts else ""))
    return differ


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        a, b = (json.load(open(p)) for p in sys.argv[2:4])
        lines = compare(a, b)
        print(f"{len(set(a) & set(b))} pairs compared; {len(lines)} differ")
        print("\n".join(lines))
    else:
        json.dump(starts(sys.argv[1]), open(sys.argv[2], "w"))
