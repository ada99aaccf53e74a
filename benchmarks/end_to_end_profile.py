"""Issue 22: where the seconds of ``clemalign register`` go, end to end, at the
publication's first-experiment size (EM 666×903×247 at 0.14/0.14/0.05 µm, LM
2×1024×1024×16 at 0.22/0.22/0.6 µm; the simulator's default pair, seed 100, written as
OME-TIFF like ``speed_scaling.py``'s case a), and of ``clemalign demo``.

Each run is a fresh process under ``/usr/bin/time -v`` (wall time, peak resident memory);
the per-step seconds come from the run's ``run.json`` (``timings_s``: reading, the
pre-alignment's and the 3D stage's steps, and each output file).  "start-up and rest" is
the wall time not covered by them (interpreter, imports, argument parsing; for code that
did not time reading and outputs, those too).  ``PYTHONPATH=<other checkout>/src`` profiles
another version of the package (the "before").  Run it with the
machine otherwise idle.  Each run's output folder is deleted once its records are read
(since issue 22's fifth profile, ``_s5_*``): the earlier runs' 0.6–1.5 GB of files kept
filling the page cache, and each later run paid for fresh memory (on the 2-core VM
~2.7 ms per MB first touched) — a cost of the benchmark, not of the program.

``--versions before=<checkout>/src after=<checkout>/src`` profiles several versions in
one run, interleaved (run k of each version, then run k+1 of each): a machine whose speed
drifts during the run (this VM's did by 40 % within an hour) then weighs on every version
alike.  Every version reads the same files (the simulated pair is bitwise the same in the
versions profiled in issue 22).

Run:  python benchmarks/end_to_end_profile.py [--runs 3] [--outputs all standard default]
      [--versions LABEL=SRC ...] [--name end_to_end_profile]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, time_v, write_results  # noqa: E402


def timed(cmd: list[str], out: Path) -> dict:
    """One command under /usr/bin/time -v; wall, peak RSS and ``out/run.json``'s timings."""
    wall_s, peak_rss_gb = time_v(cmd)
    run = json.loads((out / "run.json").read_text())
    record = json.loads((out / "transform.json").read_text())
    return {"wall_s": wall_s, "peak_rss_gb": peak_rss_gb,
            "timings_s": run["timings_s"], "prealign_steps": record["timings_s"]["prealign_steps"],
            "fine_steps": record["timings_s"]["fine_steps"], "em_to_lm": record["em_to_lm"]}


def steps(row: dict) -> dict[str, float]:
    """Flat step → seconds of one run (stage totals left out, start-up added)."""
    t = row["timings_s"]
    flat = {k: t[k] for k in ("simulate", "read") if k in t}
    # "*_s" steps ran side by side inside "search" (the pre-alignment's Parts A and B)
    flat |= {f"pre-alignment: {k}": v for k, v in row["prealign_steps"].items()
             if k != "total" and not k.endswith("_s")}
    # the pre-alignment's own steps start after stage 1 (LM channel, polarities, scales)
    own = sum(v for k, v in row["prealign_steps"].items() if k != "total" and not k.endswith("_s"))
    flat["pre-alignment: channel and scales (stage 1)"] = t["prealign"] - own
    flat |= {f"3D stage: {k}": v for k, v in row["fine_steps"].items() if k != "total"}
    flat["register (other)"] = t["total"] - t["prealign"] - t["fine"]
    # runs of code before the outputs were timed per file (the "before" profile)
    outputs = t.get("outputs", {})
    flat |= {f"outputs: {k}": v for k, v in outputs.items()
             if k not in ("total", "beside the figures", "made ahead")}
    flat["start-up and rest"] = row["wall_s"] - sum(flat.values())
    # since issue 22 the image files are written on a thread while the figures render:
    # their seconds overlap the steps above (not in the sum)
    flat |= {f"outputs: {k} (beside the figures)": v
             for k, v in outputs.get("beside the figures", {}).items()}
    # and since then the figures' EM grid and the pre-alignment's figures are made on a
    # thread while the 3D stage runs (not in the sum either)
    flat |= {f"outputs: {k} (made ahead, during the 3D stage)": v
             for k, v in outputs.get("made ahead", {}).items()}
    return flat


def main() -> None:
    from clemalign import Affine, simulate_pair, write_simulated_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--outputs", nargs="+", default=["all", "standard"],
                        help="--outputs levels to run; 'default' runs without the flag")
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--versions", nargs="+", default=None, metavar="LABEL=SRC",
                        help="profile these checkouts' src folders, interleaved")
    parser.add_argument("--name", default="end_to_end_profile")
    parser.add_argument("--render", type=Path, default=None,
                        help="only rewrite the tables of an earlier run's JSON")
    args = parser.parse_args()
    if args.render is not None:
        payload = json.loads(args.render.read_text())
        write_results(args.name, payload, table(args.name, payload["runs"], payload["date"],
                                                payload["machine"]))
        return
    versions = dict(v.split("=", 1) for v in args.versions) if args.versions else {"": None}
    runs: dict[str, list[dict]] = {}

    def command(src: str | None) -> list[str]:
        return ([] if src is None else ["env", f"PYTHONPATH={src}"]) + [
            sys.executable, "-m", "clemalign"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pair = simulate_pair(seed=100)
        files = write_simulated_pair(tmp / "pair", pair)
        for k in range(args.runs):
            for level in args.outputs:
                for label, src in versions.items():
                    out = tmp / f"out_{level}_{k}"
                    # "default": no --outputs flag (versions before it existed, and the
                    # default of each version as its users get it)
                    row = timed([*command(src), "register", str(files["em.ome.tif"]),
                                 str(files["lm.ome.tif"]), "-o", str(out), "--lm-channel", "0",
                                 *(["--outputs", level] if level != "default" else [])], out)
                    shutil.rmtree(out)
                    est = Affine(np.asarray(row["em_to_lm"], float))
                    row["tre_um"] = float(np.linalg.norm(
                        est.apply(pair.landmarks_em_um)
                        - pair.em_to_lm.apply(pair.landmarks_em_um), axis=1).mean())
                    key = f"{label + ': ' if label else ''}register --outputs {level}"
                    runs.setdefault(key, []).append(row)
                    print(f"{key} run {k}: {row['wall_s']:.1f} s, "
                          f"{row['peak_rss_gb']:.2f} GB, TRE {row['tre_um']:.3f} µm", flush=True)
            if not args.no_demo:
                for label, src in versions.items():
                    out = tmp / f"demo_{k}"
                    row = timed([*command(src), "demo", "-o", str(out)], out)
                    shutil.rmtree(out)
                    key = f"{label + ': ' if label else ''}demo"
                    runs.setdefault(key, []).append(row)
                    print(f"{key} run {k}: {row['wall_s']:.1f} s, {row['peak_rss_gb']:.2f} GB",
                          flush=True)
    write_results(args.name, {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
                              "runs": runs},
                  table(args.name, runs, time.strftime("%Y-%m-%d"), machine()))


def table(name: str, runs: dict[str, list[dict]], date: str, mach: dict) -> str:
    """The markdown tables: wall and memory per command, then each command's steps."""
    n = max(len(rows) for rows in runs.values())
    lines = [f"# End-to-end profile (issue 22): {name}", "",
             f"{date}, {mach['cores']} cores, {mach['memory_gib']} GiB; fresh process per "
             f"run, `/usr/bin/time -v`; median of {n} runs (seconds).", "",
             "| command | wall s (median) | runs | peak RSS GB (max) | TRE µm |",
             "|---|---|---|---|---|"]
    for name, rows in runs.items():
        walls = [r["wall_s"] for r in rows]
        tre = f"{np.median([r['tre_um'] for r in rows]):.3f}" if "tre_um" in rows[0] else "–"
        lines.append(f"| `{name}` | {np.median(walls):.2f} | "
                     f"{', '.join(f'{w:.1f}' for w in walls)} | "
                     f"{max(r['peak_rss_gb'] for r in rows):.2f} | {tre} |")
    labels = list(dict.fromkeys(name.split(": ")[0] for name in runs if ": " in name))
    if len(labels) > 1:  # each version's median against the first's, command by command
        lines += [""]
        for name in runs:
            first, rest = name.split(": ", 1) if ": " in name else ("", name)
            if first != labels[0]:
                base = np.median([r["wall_s"] for r in runs[f"{labels[0]}: {rest}"]])
                lines.append(f"- `{rest}`: {first} / {labels[0]} = "
                             f"{np.median([r['wall_s'] for r in runs[name]]) / base:.2f}")
    for name, rows in runs.items():
        per_run = [steps(r) for r in rows]
        keys = list(dict.fromkeys(k for p in per_run for k in p))
        lines += ["", f"## `{name}`: steps", "", "| step | s (median) |", "|---|---|"]
        for key in keys:
            lines.append(f"| {key} | {np.median([p.get(key, 0.0) for p in per_run]):.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
