"""Commands on transforms and points: ``evaluate`` (landmark error), ``apply``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InputError
from ..volume import check_voxel_size
from .app import POSITIVE, app, out, voxel_size_option


@app.command()
@click.argument("transform", type=click.Path(path_type=Path))
@click.argument("landmarks", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--em-pixel-um", type=POSITIVE, default=None,
              help="EM pixel size (µm) to also report errors in EM pixels [default: the "
                   "x voxel size in transform.json when present].")
@voxel_size_option("--em-voxel-size", "EM voxel size (z, y, x) µm, for voxel-index columns.")
@voxel_size_option("--lm-voxel-size", "LM voxel size (z, y, x) µm, for voxel-index columns.")
def evaluate(transform: Path, landmarks: Path, as_json: bool, em_pixel_um: float | None,
             em_voxel_size, lm_voxel_size) -> None:
    """Landmark error of TRANSFORM on LANDMARKS.csv (per landmark; mean/median/max).

    TRANSFORM: clemalign transform.json, ITK .tfm, BigWarp landmarks .csv or eC-CLEM .xml.
    LANDMARKS.csv: name,em_x_um,em_y_um,em_z_um,lm_x_um,lm_y_um,lm_z_um (µm) or
    name,em_k,em_j,em_i,lm_k,lm_j,lm_i (voxel indices, with --em/--lm-voxel-size).
    """

    from ..evaluation import read_landmarks_csv, tre_table
    from ..transform_io import read_transform

    em_to_lm = read_transform(transform)
    if em_pixel_um is None and transform.suffix.lower() == ".json":
        sizes = json.loads(transform.read_text(encoding="utf-8")).get("em_voxel_size_um")
        try:
            em_pixel_um = check_voxel_size(sizes, what=f"{transform}: em_voxel_size_um")[2] \
                if sizes else None
        except InputError:
            raise InputError(f"{transform}: field em_voxel_size_um is not three positive "
                             f"sizes in µm ({sizes!r}); fix it or pass --em-pixel-um") from None
    if em_pixel_um is None and em_voxel_size is not None:
        em_pixel_um = float(em_voxel_size[2])
    points = read_landmarks_csv(landmarks, em_voxel_size_um=em_voxel_size,
                                lm_voxel_size_um=lm_voxel_size)
    table = tre_table(em_to_lm, points, em_pixel_um=em_pixel_um)
    if as_json:
        print(json.dumps(table, indent=2))
        return
    from rich.table import Table

    grid = Table(title=f"landmark error of {transform.name}")
    grid.add_column("landmark")
    grid.add_column("error µm", justify="right")
    if em_pixel_um:
        grid.add_column("EM px", justify="right")
    for row in table["landmarks"]:
        cells = [row["name"], f"{row['error_um']:.3f}"]
        if em_pixel_um:
            cells.append(f"{row['error_em_px']:.1f}")
        grid.add_row(*cells)
    out.print(grid)
    s = table["summary"]
    line = (f"{s['n']} landmarks: mean {s['mean_um']:.3f} µm, median {s['median_um']:.3f} µm, "
            f"max {s['max_um']:.3f} µm")
    if em_pixel_um:
        line += (f"  ({s['mean_em_px']:.1f} / {s['median_em_px']:.1f} / {s['max_em_px']:.1f} "
                 "EM px)")
    out.print(line)


@app.command()
@click.argument("transform", type=click.Path(path_type=Path))
@click.argument("points", type=click.Path(path_type=Path))
@click.option("--inverse", is_flag=True, help="Map LM points to EM (lm_to_em).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the mapped points as CSV here [default: print them].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def apply(transform: Path, points: Path, inverse: bool, output: Path | None,
          overwrite: bool) -> None:
    """Map POINTS.csv (name,x_um,y_um,z_um) from EM to LM with TRANSFORM (or LM to EM)."""
    import csv
    import io as _io

    from ..evaluation import read_points_csv
    from ..io import atomic_write_text
    from ..transform_io import read_transform

    em_to_lm = read_transform(transform)
    names, values = read_points_csv(points)
    mapped = (em_to_lm.inverse() if inverse else em_to_lm).apply(values)
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "x_um", "y_um", "z_um"])
    for name, p in zip(names, mapped, strict=True):
        writer.writerow([name, *(f"{v:.6f}" for v in p)])
    if output is None:
        print(buf.getvalue(), end="")
    else:
        atomic_write_text(output, buf.getvalue(), overwrite=overwrite)
        out.print(f"wrote {len(names)} points to {output}")


