"""``clemalign batch``: many pairs on dask.distributed (:mod:`clemalign.batch`)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import app, err, markup_safe, out


@app.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--outdir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="One register folder per pair (the manifest's name column), and "
                   "summary.csv / summary.html.")
@click.option("--workers", type=click.IntRange(1, None), default=2, show_default=True,
              help="LocalCluster worker processes (pairs registered at once).")
@click.option("--threads-per-worker", type=click.IntRange(1, None), default=1,
              show_default=True, help="Threads of each worker and of its registration.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="A running dask scheduler (e.g. tcp://host:8786, or one dask-jobqueue "
                   "started on a cluster) instead of a LocalCluster.")
@click.option("--overwrite", is_flag=True,
              help="Redo pairs already finished (default: skip them) and replace their files.")
def batch(manifest: Path, outdir: Path, workers: int, threads_per_worker: int,
          scheduler: str | None, overwrite: bool) -> None:
    """Register every pair of MANIFEST.csv on dask.distributed.

    MANIFEST.csv: columns em and lm (paths, relative to the manifest's folder), optional
    name, and any register option as a column named after its flag (roi, lm_channel,
    em_voxel_size as "Z Y X", no_mirror as true/false, ...).  One failing pair never stops
    the others; a lost worker's pair is retried once.
    """
    from ..batch import BatchConfig, read_manifest, register_many

    jobs = read_manifest(manifest)
    config = BatchConfig(scheduler=scheduler, workers=workers,
                         threads_per_worker=threads_per_worker)

    def progress(row: dict, done: int, total: int) -> None:
        err.print(f"[{done}/{total}] {markup_safe(row['name'])}: {row['status']}"
                  + (f", {row['verdict']} {row['score']}" if row["verdict"] else "")
                  + (f" — {markup_safe(row['message'])}" if row["message"] else ""))

    rows = register_many(jobs, outdir, config=config, overwrite=overwrite, progress=progress)
    counts = {s: sum(r["status"] == s for r in rows) for s in
              ("done", "skipped", "bad input", "error", "lost")}
    out.print(f"{len(rows)} pairs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
              + f"; summary in {markup_safe(outdir / 'summary.html')}")
