"""A volume larger than memory allows to hold comfortably: the default simulated pair with
its EM upsampled ``--factor`` times in every axis (4: ≈ 9.5 G voxels of uint8), written a
slab at a time as multiscale OME-Zarr (never held in memory), registered with
``clemalign register`` in its own process; peak RSS from ``/usr/bin/time -v``.

Upsampling repeats each voxel (nearest), with the origin moved so every sub-voxel block is
centred where its voxel was: the physical image is the original's, so the result should
be too.  Compared with the original pair registered the same way (mean distance of the
two ``em_to_lm`` over the simulation's landmarks).  The upsampled file's own pyramid holds
the original resolution at level log2(factor); ``register``'s default ``--em-level auto``
picks the level the registration needs (reported), and for a file of one level (a view of
the same array) reduces it by block means on reading; ``--em-level 0`` registers the full
resolution, read on demand.

Run:  python benchmarks/large_volume.py --factor 4 --work /tmp/large
Needs about 10 GB of disk per factor-4 EM (less with compression) plus what the outputs
take (``--outputs minimal`` for the large runs unless ``--full-outputs``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_results  # noqa: E402


def _write_upsampled(path: Path, em, factor: int) -> float:
    from clemalign.io.writers import write_ome_zarr_slabs

    sz, sy, sx = em.voxel_size_um
    fine = (sz / factor, sy / factor, sx / factor)
    # sub-voxel centres around the original voxel centre
    origin = tuple(o - (factor - 1) / 2 * s / factor
                   for o, s in zip(em.origin_xyz_um, (sx, sy, sz), strict=True))
    nz, ny, nx = em.shape_zyx

    def slab(z0: int, z1: int) -> np.ndarray:
        k0, k1 = z0 // factor, -(-z1 // factor)
        block = np.asarray(em.data[k0:k1])
        up = block.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
        return up[z0 - k0 * factor:z1 - k0 * factor][np.newaxis]

    start = time.perf_counter()
    write_ome_zarr_slabs(path, (1, nz * factor, ny * factor, nx * factor), dtype=em.data.dtype,
                         voxel_size_um=fine, slab=slab, origin_xyz_um=origin,
                         channel_names=("EM",), overwrite=True, min_level_side_px=256)
    return time.perf_counter() - start


def _single_scale_view(pyramid: Path, view: Path) -> Path:
    """The pyramid's full-resolution level as an OME-Zarr of one level (its array linked,
    not copied): a file without levels, as most large EM volumes are."""
    import zarr

    shutil.rmtree(view, ignore_errors=True)
    view.mkdir()
    attrs = dict(zarr.open_group(str(pyramid), mode="r").attrs)
    attrs["multiscales"][0]["datasets"] = attrs["multiscales"][0]["datasets"][:1]
    (view / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (view / ".zattrs").write_text(json.dumps(attrs))
    (view / "0").symlink_to((pyramid / "0").resolve())
    return view


def _register(em: Path, lm: Path, out: Path, extra: list[str]) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "clemalign", "register", str(em),
           str(lm), "-o", str(out), "--lm-channel", "mito", "--overwrite", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"register failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    record = json.loads((out / "transform.json").read_text())
    level = re.search(r"EM pyramid level (\d+)", proc.stdout + proc.stderr)
    reduced = re.search(r"EM reduced by ([\d ×]+) \(z, y, x\)", proc.stdout)
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(rss_kb / 2**20, 2),
            "em_to_lm": record["em_to_lm"], "verdict": record["confidence"]["verdict"],
            "level": int(level.group(1)) if level else None,
            "reduced_by": reduced.group(1).strip() if reduced else None,
            "outputs": sorted(p.name for p in out.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/clemalign-large"))
    parser.add_argument("--full-outputs", action="store_true",
                        help="write every output for the large runs too")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()

    from clemalign import write_ome_tiff
    from clemalign.synthetic import simulate_pair

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    pair = simulate_pair(seed=args.seed)
    write_ome_tiff(work / "em.ome.tif", pair.em, overwrite=True)
    write_ome_tiff(work / "lm.ome.tif", pair.lm, overwrite=True)
    big = work / f"em_x{args.factor}.ome.zarr"
    gen_s = _write_upsampled(big, pair.em, args.factor)
    disk_gib = sum(p.stat().st_size for p in big.rglob("*") if p.is_file()) / 2**30
    voxels = float(np.prod(pair.em.shape_zyx)) * args.factor ** 3
    single = _single_scale_view(big, work / f"em_x{args.factor}_single.ome.zarr")
    outputs = [] if args.full_outputs else ["--outputs", "minimal"]
    lm = work / "lm.ome.tif"
    runs = {"original (OME-TIFF, in memory)": _register(work / "em.ome.tif", lm,
                                                        work / "out_orig", []),
            f"×{args.factor} single-scale OME-Zarr, --em-level 0 (full resolution, lazy)":
                _register(single, lm, work / "out_full", outputs + ["--em-level", "0"]),
            f"×{args.factor} single-scale OME-Zarr, default (block means on reading)":
                _register(single, lm, work / "out_single", outputs),
            f"×{args.factor} multiscale OME-Zarr, default (pyramid level)":
                _register(big, lm, work / "out_level", outputs)}
    from clemalign import Affine

    reference = Affine(np.array(runs["original (OME-TIFF, in memory)"]["em_to_lm"]))
    points = pair.landmarks_em_um
    for run in runs.values():
        moved = Affine(np.array(run["em_to_lm"])).apply(points)
        run["vs_original_um"] = round(float(np.linalg.norm(
            moved - reference.apply(points), axis=1).mean()), 4)
    lines = [f"# Large volume: the default pair's EM ×{args.factor} per axis "
             f"({voxels / 1e9:.2f} G voxels uint8, OME-Zarr {disk_gib:.1f} GiB on disk, "
             f"written in {gen_s:.0f} s)", "",
             f"Machine: {machine()['cores']} cores, {machine()['memory_gib']} GiB; "
             "`clemalign register ... --lm-channel mito` in its own process, peak RSS from "
             "`/usr/bin/time -v`; large runs with "
             f"{'every output' if args.full_outputs else '`--outputs minimal`'}.", "",
             "| run | wall s | peak RSS GiB | EM registered at | verdict | mean distance to "
             "the original's em_to_lm over the landmarks, µm |", "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        at = (f"level {run['level']}" if run["level"] is not None else
              f"block means {run['reduced_by']}" if run["reduced_by"] else "as read")
        lines.append(f"| {name} | {run['wall_s']} | {run['peak_rss_gib']} | {at} | "
                     f"{run['verdict']} | {run['vs_original_um']} |")
    write_results(args.name or f"large_volume_x{args.factor}",
                  {"machine": machine(), "factor": args.factor, "voxels": voxels,
                   "disk_gib": disk_gib, "generate_s": gen_s, "runs": runs},
                  "\n".join(lines) + "\n")
    shutil.rmtree(work / "out_orig", ignore_errors=True)


if __name__ == "__main__":
    main()
