"""Commands that register: ``register`` (two files) and ``demo`` (a simulated pair)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from ..errors import InputError
from .app import POSITIVE, SEED, app, err, markup_safe, out, voxel_size_option
from .files import SCENE_OPTION, simulate_scene


def _parse_slices(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise InputError(f"--em-slices: expected comma-separated EM z indices, got {text!r}"
                         ) from None
    if not values:
        raise InputError("--em-slices: the list is empty; give EM z indices like 40,80,120")
    return values


def _run_registration(em_vol, lm_vol, config, outdir: Path, overwrite: bool, landmarks=None,
                      workers: int | None = None, outputs: str = "standard",
                      volume_format: str = "ome-tiff", em_grid=None,
                      input_timings_s: dict | None = None):
    """Register with a progress display per stage and write the outputs."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .._threads import resolve_workers, submit_in_background
    from ..io.output_folder import refuse_existing
    from ..outputs import OUTPUT_FILES, prepare_figures, write_registration
    from ..pipeline import register
    from ..volume import parse_roi

    refuse_existing(outdir, OUTPUT_FILES, overwrite=overwrite)  # before the expensive work
    columns = (TextColumn("{task.description:<22}"), BarColumn(), TimeElapsedColumn())
    # bars on a terminal only: a batch log gets the summary lines, not bar frames
    with Progress(*columns, console=err, transient=False,
                  disable=not err.is_terminal) as bar, ThreadPoolExecutor(1) as ahead:
        tasks = {"prealign": bar.add_task("pre-alignment", total=1.0),
                 "fine": bar.add_task("fine registration", total=1.0),
                 "write": bar.add_task("writing outputs", total=1.0)}
        figures_ahead, prealigned = [], []

        def progress(stage: str, fraction: float) -> None:
            bar.update(tasks[stage], completed=fraction)
            # the figures' EM grid and the pre-alignment's own figures are made on a
            # thread from the end of the 3D stage's rigid stages (its fraction 0.6):
            # the optimisers after them use one ITK thread; the z search before them
            # and the pre-alignment keep every core busy.  Below the 3D stage's own
            # work ahead, which it needs sooner.  Only when more than one worker is
            # allowed.
            if (stage == "fine" and fraction >= 0.6 and not figures_ahead
                    and outputs != "minimal" and resolve_workers(workers) > 1):
                figures_ahead.append(submit_in_background(
                    ahead, prepare_figures, em_vol, parse_roi(config.roi, em_vol.shape_zyx),
                    prealigned[0] if prealigned else None, lower_by=19))

        result = register(em_vol, lm_vol, config=config, progress=progress, workers=workers,
                          prealigned=prealigned.append)
        bar.update(tasks["prealign"], completed=1.0)
        bar.update(tasks["fine"], completed=1.0)
        paths = write_registration(outdir, result, em_vol, lm_vol, landmarks=landmarks,
                                   overwrite=overwrite, outputs=outputs,
                                   volume_format=volume_format, em_grid=em_grid,
                                   input_timings_s=input_timings_s,
                                   figures_ahead=figures_ahead[0].result() if figures_ahead
                                   else None)
        bar.update(tasks["write"], completed=1.0)
    return result, paths


def _print_result(result, paths) -> None:
    from ..prealign3d import Prealign3DResult
    from ..transforms import decompose

    pre = result.prealign
    conf = result.confidence
    colour = {"ok": "green", "uncertain": "yellow"}.get(conf["verdict"], "red")
    choice = result.prealign_choice
    for c in result.channel_scores:
        out.print(f"LM channel {c.channel} ({markup_safe(c.name)}): peak margin {c.margin:.2f}"
                   + ("" if c.matches else " — matches nothing")
                   + (" [bold]← used[/bold]" if c.channel == result.lm_channel else ""),
                   markup=True)
    if result.scales is not None:
        sc, pol = result.scales, getattr(pre, "polarity", None)
        em_pol = f"{pol.em} ({pol.em_how})" if pol else f"{sc.em_polarity} ({sc.em_polarity_how})"
        out.print(f"polarity: EM {em_pol}, LM {sc.lm_polarity} ({sc.lm_polarity_how})")
    out.print(f"pre-alignment {choice.get('mode', 'xy')}: {choice.get('reason', '')}")
    if isinstance(pre, Prealign3DResult):
        c = pre.initial_em_to_lm.apply(pre.em_roi_centre_xyz_um)
        rx, ry, rz = decompose(pre.initial_em_to_lm)["rotation_deg"]
        h = pre.hypotheses[0]
        out.print(f"3D pre-alignment: EM ROI centre → LM ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) "
                   f"µm, rotation about x/y/z {rx:.1f}/{ry:.1f}/{rz:.1f}°"
                   f"{', EM mirrored' if h.mirrored else ''}"
                   f"{', z reversed' if h.flipped_z else ''}, {pre.timings_s['total']:.1f} s")
    else:
        out.print(f"XY pre-alignment: EM ROI centre → LM ({pre.centre_lm_xy_um[0]:.2f}, "
                   f"{pre.centre_lm_xy_um[1]:.2f}) µm, angle {pre.angle_deg:.1f}°"
                   f"{', EM mirrored' if pre.mirrored else ''}, "
                   f"{pre.timings_s['total']:.1f} s")
    start = next((st for st in result.fine.starts if st["chosen"]), {})
    search = result.fine.z_search
    if search.get("mode") == "in-plane":
        out.print(f"in-plane refinement ({search['reason']}): EM on LM plane "
                  f"{search['lm_plane']} (z {search['lm_plane_z_um']:.2f} µm), kept: "
                  f"{search['kept']}")
    else:
        out.print(f"3D stage start: z offset {result.fine.z_offset_um:.2f} µm"
                  f"{', z reversed' if start.get('reversed_z') else ''}"
                  + (f", tilt ({search['tilt_deg'][0]:.1f}, {search['tilt_deg'][1]:.1f})°"
                     if search.get("tilt_deg") else ""))
    for stage in result.fine.stages:
        out.print(f"{stage.name}: metric {stage.metric:.4f} after {stage.iterations} "
                   f"iterations ({stage.seconds:.1f} s)"
                   + ("" if stage.kept else f" — {stage.stop_condition.split(';')[0]}"))
    out.print(f"confidence: [{colour}]{conf['score']:.2f} ({conf['verdict']})[/{colour}]",
              markup=True)
    if conf["verdict"] != "ok":
        err.print(f"[{colour}]warning:[/{colour}] the result is {conf['verdict']}: "
                   + markup_safe("; ".join(conf["reasons"]))
                   + ". Check the overlays in report.html, or restrict the search (--roi, "
                   "--max-rotation-deg, --no-mirror).", markup=True)
    out.print("em_to_lm (µm):")
    for row in result.em_to_lm.matrix:
        out.print("  " + "  ".join(f"{v:10.5f}" for v in row))
    out.print(f"total {result.timings_s['total']:.1f} s")
    for path in paths.values():
        out.print(f"  wrote {path}")


@app.command("register")
@click.argument("em", type=click.Path(path_type=Path))
@click.argument("lm", type=click.Path(path_type=Path))
@click.option("-o", "--outdir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Output folder: transform.json, lm_in_em.ome.tif (or lm_in_em.nrrd, "
                   "lm_in_em.ome.zarr), "
                   "overlay.ome.tif (with --outputs all), "
                   "report.html, run.json, transform.tfm, ngff_transform.json, "
                   "bigwarp_landmarks.csv, napari_affine.json, ecclem_transform.xml and the "
                   "figures prealign.png, "
                   "orientation.png, scale_selection.png, overlay_slices.png, "
                   "orthogonal_views.png, projection_overlay.png, checkerboard.png.")
@voxel_size_option("--em-voxel-size", "EM voxel size (z, y, x) in µm; replaces the file's.")
@voxel_size_option("--lm-voxel-size", "LM voxel size (z, y, x) in µm; replaces the file's.")
@click.option("--lm-channel", default=None,
              help="LM channel to align: index (0-based) or name [default: every channel is "
                   "tried and the clearest match is used].")
@click.option("--roi", default=None, metavar="z0:z1,y0:y1,x0:x1",
              help="EM region of interest in EM voxel indices [default: whole EM].")
@click.option("--model", type=click.Choice(["rigid", "affine"]), default="affine",
              show_default=True, help="Final 3D transform model.")
@click.option("--em-slices", default=None, metavar="Z1,Z2,...",
              help="EM z indices used by the pre-alignment [default: 12 around the ROI middle].")
@click.option("--landmarks", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Landmark pairs CSV (see `clemalign evaluate --help`): their errors go "
                   "into transform.json and the report.")
@click.option("--max-rotation-deg", type=click.FloatRange(0, 180), default=180.0,
              show_default=True, help="Largest in-plane rotation EM → LM searched.")
@click.option("--no-mirror", is_flag=True,
              help="Do not consider a mirrored EM (when the set-up keeps handedness).")
@click.option("--no-flip-z", is_flag=True,
              help="Do not consider a reversed z (EM and LM imaged from the same side).")
@click.option("--em-polarity", type=click.Choice(["auto", "dark", "bright"]), default="auto",
              show_default=True,
              help="EM structures to match: dark (stained membranes, organelles on light "
                   "resin), bright (inverted contrast, e.g. raw backscatter), auto: found by "
                   "the pre-alignment's match.")
@click.option("--lm-polarity", type=click.Choice(["auto", "dark", "bright"]), default="auto",
              show_default=True,
              help="LM structures to match: bright (fluorescence), dark (transmitted light), "
                   "auto: from the LM's intensity distribution.")
@click.option("--prealign", "prealign_mode", type=click.Choice(["auto", "xy", "3d"]),
              default="auto", show_default=True,
              help="Pre-alignment: xy (LM projection; monolayers, sections), 3d (LM volume; "
                   "thick specimens), auto: 3d when the LM stack is deeper than the EM ROI "
                   "by more than a cell layer.")
@click.option("--workers", type=click.IntRange(1, None), default=None,
              help="Threads to use [default: the machine's cores, at most 4]; the result "
                   "does not depend on it.")
@click.option("--strict", is_flag=True,
              help="Exit with status 3 when the verdict is 'failed' (outputs are still written).")
@click.option("--max-memory", type=POSITIVE, default=None, metavar="GIB",
              help="Largest array allowed, GiB [default: the memory available]; a run that "
                   "would need more stops before allocating, naming what is too large.")
@click.option("--outputs", type=click.Choice(["all", "standard", "minimal"]),
              default="standard", show_default=True,
              help="Files to write: standard (everything but overlay.ome.tif); all (also "
                   "overlay.ome.tif, the EM and the LM on the EM grid in one file for Fiji: "
                   "a second copy of the LM on the EM grid, ~20 % more time); minimal "
                   "(transform files and run.json only: no image resampled, for batch runs).")
@click.option("--volume-format", type=click.Choice(["ome-tiff", "nrrd", "ome-zarr"]),
              default="ome-tiff", show_default=True,
              help="The LM on the EM grid as lm_in_em.ome.tif (Fiji, napari), lm_in_em.nrrd "
                   "(ITK, SimpleITK, 3D Slicer: spacing and origin in µm, read there as plain "
                   "numbers, like transform.tfm's) or lm_in_em.ome.zarr (multiscale, written "
                   "a slab at a time). Above 4 GiB (or what memory holds) OME-Zarr is "
                   "written in any case, without overlay.ome.tif.")
@click.option("--em-level", default="auto", show_default=True, metavar="N|auto",
              help="Pyramid level of a multiscale OME-Zarr EM to register (0: full "
                   "resolution); auto: the coarsest whose pixel is no larger than the LM's "
                   "(the registration's finest grid), and for an EM too large to hold "
                   "(read on demand) without levels, its block means to that pixel. --roi "
                   "stays in full-resolution indices; lm_in_em is on the full-resolution "
                   "grid.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def register_command(max_memory: float | None, **options) -> None:
    """Register EM to LM: pre-alignment (XY or 3D), then 3D mutual-information registration.

    EM and LM are 3D stacks (OME-TIFF, ImageJ TIFF, MRC, OME-Zarr, NRRD or .npy) with voxel
    sizes in their metadata or given in µm.  Writes the transform (both directions), every
    LM channel resampled onto the EM grid, the run configuration and a figure.
    """
    from ..resources import memory_limit

    with memory_limit(max_memory):
        _register(**options)


def _register(em: Path, lm: Path, outdir: Path, em_voxel_size: tuple[float, float, float] | None,
              lm_voxel_size: tuple[float, float, float] | None, lm_channel: str,
              roi: str | None, model: str, em_slices: str | None, landmarks: Path | None,
              max_rotation_deg: float, no_mirror: bool, no_flip_z: bool, em_polarity: str,
              lm_polarity: str, prealign_mode: str, workers: int | None, strict: bool,
              outputs: str, volume_format: str, em_level: str, overwrite: bool) -> None:
    from ..io import read_clem_pair, read_volume
    from ..io.readers import roi_at_level
    from ..lazy import is_lazy, reduce_to_level
    from ..pipeline import RegistrationConfig

    t0 = time.perf_counter()
    level, roi = _em_level(em, lm, em_level, roi, em_voxel_size, lm_voxel_size)
    em_vol, lm_vol, _ = read_clem_pair(em, lm, em_voxel_size_um=em_voxel_size,
                                       lm_voxel_size_um=lm_voxel_size, lm_channel=lm_channel,
                                       em_roi=roi, em_level=level)
    em_grid = None  # the full-resolution grid lm_in_em is written on, when not em_vol's
    if level:
        em_grid = read_volume(em, lazy=True)
    elif em_level == "auto" and is_lazy(em_vol.data):
        # a file too large to hold, at a finer pixel than the registration uses: its
        # block means (the pyramid level it would have), read once, a chunk at a time
        reduced, factors = reduce_to_level(em_vol, min(lm_vol.voxel_size_um[1:]))
        if factors != (1, 1, 1):
            out.print(f"EM reduced by {' × '.join(map(str, factors))} (z, y, x) block means "
                      f"for the registration: {' × '.join(map(str, reduced.shape_zyx))} "
                      f"voxels of {' × '.join(f'{v:.4g}' for v in reduced.voxel_size_um)} µm")
            if roi:
                roi = roi_at_level(roi, em_vol.shape_zyx, reduced.shape_zyx)
            em_grid, em_vol = em_vol, reduced
    points = None
    if landmarks is not None:
        from ..evaluation import read_landmarks_csv

        points = read_landmarks_csv(landmarks, em_voxel_size_um=em_vol.voxel_size_um,
                                    lm_voxel_size_um=lm_vol.voxel_size_um)
    config = RegistrationConfig.from_options(
        lm_channel=_parse_channel(lm_channel), roi=roi, model=model,  # type: ignore[arg-type]
        max_rotation_deg=max_rotation_deg, mirror=not no_mirror, flip_z=not no_flip_z,
        em_polarity=em_polarity, lm_polarity=lm_polarity,  # type: ignore[arg-type]
        prealign_mode=prealign_mode, em_slices=_parse_slices(em_slices))  # type: ignore[arg-type]
    read_s = time.perf_counter() - t0
    result, paths = _run_registration(em_vol, lm_vol, config, outdir, overwrite, points, workers,
                                      outputs, volume_format, em_grid, {"read": read_s})
    _print_result(result, paths)
    if points is not None:
        s = json.loads(paths["transform.json"].read_text())["evaluation"]["summary"]
        out.print(f"landmark error ({s['n']}): mean {s['mean_um']:.3f} µm, median "
                   f"{s['median_um']:.3f} µm, max {s['max_um']:.3f} µm")
    if strict and result.confidence["verdict"] == "failed":
        raise click.exceptions.Exit(3)


def _em_level(em: Path, lm: Path, em_level: str, roi: str | None,
              em_voxel_size, lm_voxel_size) -> tuple[int, str | None]:
    """The EM pyramid level to read (printed when not 0) and the ROI in its indices."""
    from ..io import read_raw
    from ..io.metadata import file_format
    from ..io.readers import choose_em_level, ome_zarr_levels, roi_at_level

    if em_level == "0":
        return 0, roi
    levels = ome_zarr_levels(em) if file_format(em) == "ome-zarr" else []
    if em_level == "auto" and len(levels) < 2:
        return 0, roi
    if em_voxel_size is not None:
        raise InputError("--em-level: --em-voxel-size gives the full-resolution voxel; use "
                         "one or the other")
    if em_level == "auto":
        # the LM's voxel size from its metadata (its pixels are not read here)
        size = lm_voxel_size or read_raw(lm, lazy=True).voxel_size_um
        if size is None:
            raise InputError(f"{lm}: the file does not record a voxel size; pass "
                             "--lm-voxel-size Z Y X (in µm)")
        level = choose_em_level(levels, min(size[1:]))
    else:
        try:
            level = int(em_level)
        except ValueError:
            raise InputError(f"--em-level: expected a level number or auto, got "
                             f"{em_level!r}") from None
    if level == 0:
        return 0, roi
    if level >= len(levels):
        raise InputError(f"--em-level: {em} has levels 0 to {max(len(levels), 1) - 1}")
    shape, size = levels[level]
    out.print(f"EM pyramid level {level}: {' × '.join(map(str, shape))} voxels of "
              f"{' × '.join(f'{v:.4g}' for v in size)} µm (z, y, x)")
    return level, (roi_at_level(roi, levels[0][0], shape) if roi else None)


@app.command()
@click.option("-o", "--outdir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("clemalign-demo"), show_default=True, help="Output folder.")
@SCENE_OPTION
@click.option("--seed", type=SEED, default=0, show_default=True, help="Simulation seed.")
@click.option("--scale", type=POSITIVE, default=1.0, show_default=True,
              help="monolayer: lateral size factor of the simulated pair (0.3: small and fast).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def demo(outdir: Path, scene: str, seed: int, scale: float, overwrite: bool) -> None:
    """Simulate a CLEM pair with a known answer, register it, and print the error.

    The pair is written to OUTDIR/data (em.ome.tif, lm.ome.tif, truth.json,
    landmarks.csv), read back like user files, registered (a tissue pair with its --roi
    and the nuclei channel), and the result written to OUTDIR.  The landmark error (TRE)
    against the simulation's truth is printed.
    """
    from ..evaluation import target_registration_error
    from ..io import read_clem_pair
    from ..io.output_folder import refuse_existing
    from ..outputs import OUTPUT_FILES
    from ..pipeline import RegistrationConfig
    from ..synthetic import SIMULATED_FILES, write_simulated_pair

    data_dir = outdir / "data"
    refuse_existing(data_dir, SIMULATED_FILES, overwrite=overwrite)
    refuse_existing(outdir, OUTPUT_FILES, overwrite=overwrite)
    start = time.perf_counter()
    with err.status(f"simulating a {scene} CLEM pair"):
        pair = simulate_scene(scene, seed=seed, scale=scale)
        files = write_simulated_pair(data_dir, pair, overwrite=overwrite)
    simulate_s = time.perf_counter() - start
    out.print(f"simulated {scene} pair (seed {seed}) in {simulate_s:.1f} s → {data_dir}")
    channel = pair.lm.channel_names[0]
    em_vol, lm_vol, _ = read_clem_pair(files["em.ome.tif"], files["lm.ome.tif"],
                                       lm_channel=channel, em_roi=pair.roi)
    from ..evaluation import read_landmarks_csv

    points = read_landmarks_csv(files["landmarks.csv"])
    read_s = time.perf_counter() - start - simulate_s
    config = RegistrationConfig(roi=pair.roi, lm_channel=channel)
    if pair.roi:
        out.print(f"registering with --roi {pair.roi} --lm-channel {channel}")
    result, paths = _run_registration(em_vol, lm_vol, config, outdir, overwrite, points,
                                      input_timings_s={"simulate": simulate_s, "read": read_s})
    _print_result(result, paths)
    tre = target_registration_error(result.em_to_lm, pair.landmarks_em_um, pair.landmarks_lm_um)
    em_px = float(pair.em.voxel_size_um[2])
    out.print(f"[bold]landmark error vs truth ({tre.size} landmarks):[/bold] mean "
               f"{tre.mean():.3f} µm ({tre.mean() / em_px:.1f} EM px), median "
               f"{np.median(tre):.3f} µm, max {tre.max():.3f} µm", markup=True)



def _parse_channel(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else text

