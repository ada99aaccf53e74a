"""Commands on files: ``info`` (describe), ``convert`` (format), ``check`` (registrable?),
``simulate``."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ..errors import InputError
from .app import FINITE, POSITIVE, SEED, app, err, markup_safe, out, voxel_size_option


@app.command()
@click.argument("file", type=click.Path(path_type=Path))
@voxel_size_option("--voxel-size", "Voxel size (z, y, x) in µm; replaces the file's.")
def info(file: Path, voxel_size: tuple[float, float, float] | None) -> None:
    """Describe FILE: format, shape, dtype, voxel size, channels and value ranges.

    FILE may be OME-TIFF, ImageJ TIFF, MRC/REC, OME-Zarr, NRRD, .npy, 2D PNG, or (with the
    formats extra) Zeiss .czi, Leica .lif, Nikon .nd2.
    """
    from ..io import override_voxel_size, read_raw

    raw = read_raw(file)
    size = raw.voxel_size_um
    if voxel_size is not None:
        size = override_voxel_size(voxel_size, flag="--voxel-size",
                                   n_planes=raw.data.shape[1], path=file)
    c, z, y, x = raw.data.shape
    out.print(f"[bold]{markup_safe(file)}[/bold]  ({raw.format})", markup=True)
    out.print(f"  shape (z, y, x): {z} × {y} × {x}   channels: {c}   dtype: {raw.data.dtype}")
    if size is None:
        out.print("  voxel size: [yellow]not recorded[/yellow] (pass --voxel-size Z Y X in µm)",
                  markup=True)
    else:
        extent = tuple(n * s for n, s in zip((z, y, x), size, strict=True))
        out.print("  voxel size (z, y, x): " + " × ".join(f"{s:.6g}" for s in size) + " µm")
        out.print("  extent (z, y, x):     " + " × ".join(f"{e:.4g}" for e in extent) + " µm")
    out.print("  origin (x, y, z):     " + ", ".join(f"{o:.6g}" for o in raw.origin_xyz_um)
               + " µm")
    if raw.format == "ome-zarr":
        from ..io.readers import ome_zarr_levels

        levels = ome_zarr_levels(file)
        if len(levels) > 1:
            out.print(f"  pyramid levels: {len(levels)} (" + "; ".join(
                f"{i}: {' × '.join(map(str, shape))} of {size[2]:.4g} µm"
                for i, (shape, size) in enumerate(levels)) + ")")
    names = raw.channel_names or tuple(f"C{i}" for i in range(c))
    problems = []
    for i, name in enumerate(names):
        values = raw.data[i]
        finite = np.isfinite(values) if values.dtype.kind in "fc" else None
        n_bad = 0 if finite is None else int(values.size - np.count_nonzero(finite))
        good = values if finite is None else values[finite]
        if good.size:
            lo, hi, mean = float(good.min()), float(good.max()), float(good.mean())
            line = (f"  channel {i} {markup_safe(repr(name))}: min {lo:.6g}  max {hi:.6g}  "
                    f"mean {mean:.6g}")
        else:
            lo = hi = float("nan")
            line = f"  channel {i} {markup_safe(repr(name))}: no finite values"
        if n_bad:
            line += f"  [red]{n_bad} NaN/Inf voxels[/red]"
            problems.append(f"channel {i} has {n_bad} NaN/Inf voxels")
        if good.size and lo == hi:
            line += "  [yellow]constant[/yellow]"
            problems.append(f"channel {i} is constant")
        out.print(line, markup=True)
    if problems:
        raise InputError(f"{file}: " + "; ".join(problems) + " — it cannot be registered")


@app.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@voxel_size_option("--voxel-size", "Voxel size (z, y, x) in µm; replaces the file's.")
@click.option("--channel", default=None,
              help="Keep one channel: index (0-based) or name [default: all].")
@click.option("--overwrite", is_flag=True, help="Replace TARGET if it exists.")
def convert(source: Path, target: Path, voxel_size: tuple[float, float, float] | None,
            channel: str | None, overwrite: bool) -> None:
    """Copy SOURCE into TARGET's format, keeping voxel size, origin and channels.

    The format follows TARGET's name: .ome.tif (Fiji, napari), .tif (ImageJ), .mrc,
    .zarr (OME-Zarr), .nrrd (ITK, SimpleITK, 3D Slicer; spacing in µm) or .npy.
    E.g. a Zeiss .czi to OME-TIFF, or an EM TIFF to NRRD for 3D Slicer.
    """
    from ..io import read_volume, write_volume
    from ..io.writers import ensure_writable

    ensure_writable(target, overwrite=overwrite)  # before reading a large file
    volume = read_volume(source, voxel_size_um=voxel_size)
    if channel is not None:
        try:
            volume = volume.channel(channel)
        except InputError as exc:  # the same choice, under this command's flag
            raise InputError(str(exc).replace("--lm-channel", "--channel")) from None
    path = write_volume(target, volume, overwrite=overwrite)
    size = " × ".join(f"{s:.6g}" for s in volume.voxel_size_um)
    out.print(f"wrote {path}: {volume.data.shape} {volume.data.dtype}, voxel (z, y, x) "
              f"{size} µm")


SCENE_OPTION = click.option(
    "--scene", type=click.Choice(["monolayer", "tissue", "section"]), default="monolayer",
    show_default=True,
    help="monolayer: adherent cells, SBF-SEM + confocal (0.14/0.14/0.05 and 0.22/0.22/0.6 "
         "µm); tissue: packed nuclei and vessels, microCT at 1 µm + two-photon "
         "(0.59/0.59/3 µm), with an --roi inside the LM field; section: a 1 µm EM "
         "section of the monolayer and the one LM plane it lies in.")


def simulate_scene(scene: str, *, seed: int, scale: float = 1.0, size: str = "small",
                    **overrides):
    """A simulated pair of either scene (``progress`` may be in ``overrides``)."""
    progress = overrides.pop("progress", None)
    if scene == "tissue":
        from ..synthetic import TissueConfig, simulate_tissue_pair

        base = TissueConfig.publication() if size == "publication" else TissueConfig()
        return simulate_tissue_pair(base, seed=seed, progress=progress, **overrides)
    from ..synthetic import SimulationConfig, section_of, simulate_pair

    pair = simulate_pair(SimulationConfig(seed=seed, scale=scale, **overrides),
                         progress=progress)
    return section_of(pair) if scene == "section" else pair


@app.command()
@click.argument("outdir", type=click.Path(path_type=Path, file_okay=False))
@SCENE_OPTION
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Random seed (same seed, same pair).")
@click.option("--scale", type=POSITIVE, default=1.0, show_default=True,
              help="monolayer: lateral size factor (0.3 gives a small, fast pair).")
@click.option("--size", type=click.Choice(["small", "publication"]), default="small",
              show_default=True,
              help="tissue: small (microCT 200×200×110 µm, LM 227×227×108 µm) or the "
                   "publication's (microCT 1084×896×1094, LM 2×1024×1024×107).")
@click.option("--rotation-deg", type=FINITE, default=None,
              help="In-plane rotation of the EM field in degrees [default: random in ±15 "
                   "(monolayer), over the full circle (tissue)].")
@click.option("--mirror", is_flag=True, help="Mirror the EM field (flip x).")
@click.option("--flip-z", is_flag=True,
              help="Reverse the EM's z (with --mirror: imaged from the other side).")
@click.option("--tilt-deg", type=(float, float), default=None, metavar="TX TY",
              help="Tilts of the EM block about x and y in degrees [default: random, "
                   "±2 (monolayer), ±10 (tissue)].")
@click.option("--placement", type=click.Choice(["anywhere", "cell", "border"]),
              default="anywhere", show_default=True,
              help="monolayer: where the EM field sits in the LM field.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def simulate(outdir: Path, scene: str, seed: int, scale: float, size: str,
             rotation_deg: float | None, mirror: bool, flip_z: bool,
             tilt_deg: tuple[float, float] | None, placement: str, overwrite: bool) -> None:
    """Simulate a CLEM pair with its ground truth into OUTDIR.

    Writes em.ome.tif, lm.ome.tif, truth.json (the em_to_lm matrix, and the --roi to give
    for a tissue pair) and landmarks.csv.
    """
    from ..io.output_folder import refuse_existing
    from ..synthetic import SIMULATED_FILES, write_simulated_pair

    overrides = {"rotation_deg": rotation_deg, "mirror": mirror, "flip_z": flip_z,
                 "tilt_deg": tilt_deg}
    if scene == "monolayer":
        overrides["placement"] = placement
    # fail before the expensive rendering if outputs exist
    refuse_existing(outdir, SIMULATED_FILES, overwrite=overwrite)
    start = time.perf_counter()
    with err.status("simulating") as status:
        pair = simulate_scene(scene, seed=seed, scale=scale, size=size,
                               progress=lambda step: status.update(f"rendering {step}"),
                               **overrides)
        status.update("writing")
        paths = write_simulated_pair(outdir, pair, overwrite=overwrite)
    p = pair.parameters
    centre = p.get("lm_centre_xyz_um") or p["roi_centre_lm_xyz_um"]
    out.print(f"simulated {scene} pair (seed {seed}) in {time.perf_counter() - start:.1f} s "
               f"→ {outdir}")
    out.print(f"  EM {pair.em.data.shape} @ {pair.em.voxel_size_um} µm;  "
               f"LM {pair.lm.data.shape} @ {pair.lm.voxel_size_um} µm")
    out.print(f"  truth: rotation {p['rotation_deg']:.2f}°, mirror {p['mirror']}, "
               f"reversed z {p.get('flip_z', False)}, tilt ({p['tilt_x_deg']:.1f}, "
               f"{p['tilt_y_deg']:.1f})°, EM {'ROI ' if pair.roi else ''}centre → LM "
               f"({centre[0]:.2f}, {centre[1]:.2f}, {centre[2]:.2f}) µm, "
               f"{p['n_landmarks']} landmarks")
    if pair.roi:
        out.print(f"  register with: --roi {pair.roi} --lm-channel "
                   f"{pair.lm.channel_names[0]}")
    for path in paths.values():
        out.print(f"  wrote {path}")


@app.command()
@click.argument("em", type=click.Path(path_type=Path))
@click.argument("lm", type=click.Path(path_type=Path))
@voxel_size_option("--em-voxel-size", "EM voxel size (z, y, x) in µm; replaces the file's.")
@voxel_size_option("--lm-voxel-size", "LM voxel size (z, y, x) in µm; replaces the file's.")
@click.option("--lm-channel", default=None,
              help="LM channel to align: index (0-based) or name [default: every channel is "
                   "tried and the clearest match is used].")
def check(em: Path, lm: Path, em_voxel_size: tuple[float, float, float] | None,
          lm_voxel_size: tuple[float, float, float] | None, lm_channel: str) -> None:
    """Check that EM and LM can be registered: both readable 3D stacks with voxel
    sizes, the LM channel present, no NaN/constant images.  Prints both fields."""
    from ..io import read_clem_pair

    em_vol, lm_vol, lm_chan = read_clem_pair(em, lm, em_voxel_size_um=em_voxel_size,
                                             lm_voxel_size_um=lm_voxel_size,
                                             lm_channel=lm_channel)
    for name, vol in (("EM", em_vol), ("LM", lm_chan)):
        z, y, x = vol.shape_zyx
        ez, ey, ex = vol.extent_um
        sz, sy, sx = vol.voxel_size_um
        out.print(f"{name}: {vol.source}  {x}×{y}×{z} voxels (x, y, z) of "
                   f"{sx:.4g}×{sy:.4g}×{sz:.4g} µm → field {ex:.1f}×{ey:.1f}×{ez:.2f} µm")
    names = lm_vol.channel_names or ("C0",)
    if lm_channel is None and lm_vol.n_channels > 1:
        out.print(f"LM channels {names}: each is tried at registration (--lm-channel "
                   "chooses one)")
    else:
        out.print(f"LM channel used: {lm_chan.channel_names[0]!r} of {names}")
    out.print("[green]inputs OK[/green]", markup=True)


