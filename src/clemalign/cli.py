"""The ``clemalign`` command line (thin: parse, call the library, write, report).

Errors in the input (files, flags, image content) print one line on stderr and exit
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console

from .errors import InputError

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _voxel_size_option(name: str, help_text: str):
    return click.option(name, type=(float, float, float), default=None, metavar="Z Y X",
                        help=help_text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="clemalign")
def app(debug: bool) -> None:
    """Automatic overlay of 3D correlative light and electron microscopy stacks."""


@app.command()
@click.argument("file", type=click.Path(path_type=Path))
@_voxel_size_option("--voxel-size", "Voxel size (z, y, x) in µm; replaces the file's.")
def info(file: Path, voxel_size: tuple[float, float, float] | None) -> None:
    """Describe FILE: format, shape, dtype, voxel size, channels and value ranges.

    FILE may be OME-TIFF, ImageJ TIFF, MRC/REC, OME-Zarr or .npy.
    """
    from .io import read_raw
    from .volume import check_voxel_size

    raw = read_raw(file)
    size = raw.voxel_size_um
    if voxel_size is not None:
        size = check_voxel_size(voxel_size, what="--voxel-size", flag="--voxel-size")
    c, z, y, x = raw.data.shape
    _out.print(f"[bold]{file}[/bold]  ({raw.format})")
    _out.print(f"  shape (z, y, x): {z} × {y} × {x}   channels: {c}   dtype: {raw.data.dtype}")
    if size is None:
        _out.print("  voxel size: [yellow]not recorded[/yellow] (pass --voxel-size Z Y X in µm)")
    else:
        extent = tuple(n * s for n, s in zip((z, y, x), size, strict=True))
        _out.print("  voxel size (z, y, x): " + " × ".join(f"{s:.6g}" for s in size) + " µm")
        _out.print("  extent (z, y, x):     " + " × ".join(f"{e:.4g}" for e in extent) + " µm")
    _out.print("  origin (x, y, z):     " + ", ".join(f"{o:.6g}" for o in raw.origin_xyz_um)
               + " µm")
    names = raw.channel_names or tuple(f"C{i}" for i in range(c))
    problems = []
    for i, name in enumerate(names):
        values = raw.data[i]
        finite = np.isfinite(values) if values.dtype.kind in "fc" else None
        n_bad = 0 if finite is None else int(values.size - np.count_nonzero(finite))
        good = values if finite is None else values[finite]
        if good.size:
            lo, hi, mean = float(good.min()), float(good.max()), float(good.mean())
            line = f"  channel {i} {name!r}: min {lo:.6g}  max {hi:.6g}  mean {mean:.6g}"
        else:
            lo = hi = float("nan")
            line = f"  channel {i} {name!r}: no finite values"
        if n_bad:
            line += f"  [red]{n_bad} NaN/Inf voxels[/red]"
            problems.append(f"channel {i} has {n_bad} NaN/Inf voxels")
        if good.size and lo == hi:
            line += "  [yellow]constant[/yellow]"
            problems.append(f"channel {i} is constant")
        _out.print(line)
    if problems:
        raise InputError(f"{file}: " + "; ".join(problems) + " — it cannot be registered")


_SCENE_OPTION = click.option(
    "--scene", type=click.Choice(["monolayer", "tissue"]), default="monolayer",
    show_default=True,
    help="monolayer: adherent cells, SBF-SEM + confocal (0.14/0.14/0.05 and 0.22/0.22/0.6 "
         "µm); tissue: packed nuclei and vessels, microCT at 1 µm + two-photon "
         "(0.59/0.59/3 µm), with an --roi inside the LM field.")


def _simulate_scene(scene: str, *, seed: int, scale: float = 1.0, size: str = "small",
                    **overrides):
    """A simulated pair of either scene (``progress`` may be in ``overrides``)."""
    progress = overrides.pop("progress", None)
    if scene == "tissue":
        from .synthetic_tissue import TissueConfig, simulate_tissue_pair

        base = TissueConfig.publication() if size == "publication" else TissueConfig()
        return simulate_tissue_pair(base, seed=seed, progress=progress, **overrides)
    from .synthetic import SimulationConfig, simulate_pair

    return simulate_pair(SimulationConfig(seed=seed, scale=scale, **overrides),
                         progress=progress)


@app.command()
@click.argument("outdir", type=click.Path(path_type=Path, file_okay=False))
@_SCENE_OPTION
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (same seed, same pair).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="monolayer: lateral size factor (0.3 gives a small, fast pair).")
@click.option("--size", type=click.Choice(["small", "publication"]), default="small",
              show_default=True,
              help="tissue: small (microCT 200×200×110 µm, LM 227×227×108 µm) or the "
                   "publication's (microCT 1084×896×1094, LM 2×1024×1024×107).")
@click.option("--rotation-deg", type=float, default=None,
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
    from .io import ensure_writable
    from .synthetic import SIMULATED_FILES, write_simulated_pair

    overrides = {"rotation_deg": rotation_deg, "mirror": mirror, "flip_z": flip_z,
                 "tilt_deg": tilt_deg}
    if scene == "monolayer":
        overrides["placement"] = placement
    # fail before the expensive rendering if outputs exist
    for name in SIMULATED_FILES:
        ensure_writable(outdir / name, overwrite=overwrite)
    start = time.perf_counter()
    with _err.status("simulating") as status:
        pair = _simulate_scene(scene, seed=seed, scale=scale, size=size,
                               progress=lambda step: status.update(f"rendering {step}"),
                               **overrides)
        status.update("writing")
        paths = write_simulated_pair(outdir, pair, overwrite=overwrite)
    p = pair.parameters
    centre = p.get("lm_centre_xyz_um") or p["roi_centre_lm_xyz_um"]
    _out.print(f"simulated {scene} pair (seed {seed}) in {time.perf_counter() - start:.1f} s "
               f"→ {outdir}")
    _out.print(f"  EM {pair.em.data.shape} @ {pair.em.voxel_size_um} µm;  "
               f"LM {pair.lm.data.shape} @ {pair.lm.voxel_size_um} µm")
    _out.print(f"  truth: rotation {p['rotation_deg']:.2f}°, mirror {p['mirror']}, "
               f"reversed z {p.get('flip_z', False)}, tilt ({p['tilt_x_deg']:.1f}, "
               f"{p['tilt_y_deg']:.1f})°, EM {'ROI ' if pair.roi else ''}centre → LM "
               f"({centre[0]:.2f}, {centre[1]:.2f}, {centre[2]:.2f}) µm, "
               f"{p['n_landmarks']} landmarks")
    if pair.roi:
        _out.print(f"  register with: --roi {pair.roi} --lm-channel "
                   f"{pair.lm.channel_names[0]}")
    for path in paths.values():
        _out.print(f"  wrote {path}")


@app.command()
@click.argument("em", type=click.Path(path_type=Path))
@click.argument("lm", type=click.Path(path_type=Path))
@_voxel_size_option("--em-voxel-size", "EM voxel size (z, y, x) in µm; replaces the file's.")
@_voxel_size_option("--lm-voxel-size", "LM voxel size (z, y, x) in µm; replaces the file's.")
@click.option("--lm-channel", default=None,
              help="LM channel to align: index (0-based) or name [default: every channel is "
                   "tried and the clearest match is used].")
def check(em: Path, lm: Path, em_voxel_size: tuple[float, float, float] | None,
          lm_voxel_size: tuple[float, float, float] | None, lm_channel: str) -> None:
    """Check that EM and LM can be registered: both readable 3D stacks with voxel
    sizes, the LM channel present, no NaN/constant images.  Prints both fields."""
    from .io import read_clem_pair

    em_vol, lm_vol, lm_chan = read_clem_pair(em, lm, em_voxel_size_um=em_voxel_size,
                                             lm_voxel_size_um=lm_voxel_size,
                                             lm_channel=lm_channel)
    for name, vol in (("EM", em_vol), ("LM", lm_chan)):
        z, y, x = vol.shape_zyx
        ez, ey, ex = vol.extent_um
        sz, sy, sx = vol.voxel_size_um
        _out.print(f"{name}: {vol.source}  {x}×{y}×{z} voxels (x, y, z) of "
                   f"{sx:.4g}×{sy:.4g}×{sz:.4g} µm → field {ex:.1f}×{ey:.1f}×{ez:.2f} µm")
    names = lm_vol.channel_names or ("C0",)
    if lm_channel is None and lm_vol.n_channels > 1:
        _out.print(f"LM channels {names}: each is tried at registration (--lm-channel "
                   "chooses one)")
    else:
        _out.print(f"LM channel used: {lm_chan.channel_names[0]!r} of {names}")
    _out.print("[green]inputs OK[/green]")


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
                      workers: int | None = None):
    """Register with a progress display per stage and write the outputs."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .io import ensure_writable
    from .outputs import OUTPUT_FILES, write_registration
    from .pipeline import register

    for name in OUTPUT_FILES:  # refuse before the expensive work
        ensure_writable(outdir / name, overwrite=overwrite)
    columns = (TextColumn("{task.description:<22}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_err, transient=False) as bar:
        tasks = {"prealign": bar.add_task("pre-alignment", total=1.0),
                 "fine": bar.add_task("3D registration", total=1.0),
                 "write": bar.add_task("writing outputs", total=1.0)}

        def progress(stage: str, fraction: float) -> None:
            bar.update(tasks[stage], completed=fraction)

        result = register(em_vol, lm_vol, config=config, progress=progress, workers=workers)
        bar.update(tasks["prealign"], completed=1.0)
        bar.update(tasks["fine"], completed=1.0)
        paths = write_registration(outdir, result, em_vol, lm_vol, landmarks=landmarks,
                                   overwrite=overwrite)
        bar.update(tasks["write"], completed=1.0)
    return result, paths


def _print_result(result, paths) -> None:
    from .prealign3d import Prealign3DResult
    from .transforms import decompose

    pre = result.prealign
    conf = result.confidence
    colour = {"ok": "green", "uncertain": "yellow"}.get(conf["verdict"], "red")
    choice = result.prealign_choice
    for c in result.channel_scores:
        _out.print(f"LM channel {c.channel} ({_markup_safe(c.name)}): peak margin {c.margin:.2f}"
                   + ("" if c.matches else " — matches nothing")
                   + (" [bold]← used[/bold]" if c.channel == result.lm_channel else ""))
    if result.scales is not None:
        sc, pol = result.scales, getattr(pre, "polarity", None)
        em_pol = f"{pol.em} ({pol.em_how})" if pol else f"{sc.em_polarity} ({sc.em_polarity_how})"
        _out.print(f"polarity: EM {em_pol}, LM {sc.lm_polarity} ({sc.lm_polarity_how})")
    _out.print(f"pre-alignment {choice.get('mode', 'xy')}: {choice.get('reason', '')}")
    if isinstance(pre, Prealign3DResult):
        c = pre.initial_em_to_lm.apply(pre.em_roi_centre_xyz_um)
        rx, ry, rz = decompose(pre.initial_em_to_lm)["rotation_deg"]
        h = pre.hypotheses[0]
        _out.print(f"3D pre-alignment: EM ROI centre → LM ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) "
                   f"µm, rotation about x/y/z {rx:.1f}/{ry:.1f}/{rz:.1f}°"
                   f"{', EM mirrored' if h.mirrored else ''}"
                   f"{', z reversed' if h.flipped_z else ''}, {pre.timings_s['total']:.1f} s")
    else:
        _out.print(f"XY pre-alignment: EM ROI centre → LM ({pre.centre_lm_xy_um[0]:.2f}, "
                   f"{pre.centre_lm_xy_um[1]:.2f}) µm, angle {pre.angle_deg:.1f}°"
                   f"{', EM mirrored' if pre.mirrored else ''}, "
                   f"{pre.timings_s['total']:.1f} s")
    start = next((st for st in result.fine.starts if st["chosen"]), {})
    _out.print(f"3D stage start: z offset {result.fine.z_offset_um:.2f} µm"
               f"{', z reversed' if start.get('reversed_z') else ''}"
               + (f", tilt ({result.fine.z_search['tilt_deg'][0]:.1f}, "
                  f"{result.fine.z_search['tilt_deg'][1]:.1f})°"
                  if result.fine.z_search.get("tilt_deg") else ""))
    for stage in result.fine.stages:
        _out.print(f"{stage.name}: metric {stage.metric:.4f} after {stage.iterations} "
                   f"iterations ({stage.seconds:.1f} s)"
                   + ("" if stage.kept else f" — {stage.stop_condition.split(';')[0]}"))
    _out.print(f"confidence: [{colour}]{conf['score']:.2f} ({conf['verdict']})[/{colour}]")
    if conf["verdict"] != "ok":
        _err.print(f"[{colour}]warning:[/{colour}] the result is {conf['verdict']}: "
                   + "; ".join(conf["reasons"]) + ". Check the overlays in report.html, or "
                   "restrict the search (--roi, --max-rotation-deg, --no-mirror).")
    _out.print("em_to_lm (µm):")
    for row in result.em_to_lm.matrix:
        _out.print("  " + "  ".join(f"{v:10.5f}" for v in row))
    _out.print(f"total {result.timings_s['total']:.1f} s")
    for path in paths.values():
        _out.print(f"  wrote {path}")


@app.command("register")
@click.argument("em", type=click.Path(path_type=Path))
@click.argument("lm", type=click.Path(path_type=Path))
@click.option("-o", "--outdir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Output folder (transform.json, lm_in_em.ome.tif, run.json, prealign.png).")
@_voxel_size_option("--em-voxel-size", "EM voxel size (z, y, x) in µm; replaces the file's.")
@_voxel_size_option("--lm-voxel-size", "LM voxel size (z, y, x) in µm; replaces the file's.")
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
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def register_command(em: Path, lm: Path, outdir: Path,
                     em_voxel_size: tuple[float, float, float] | None,
                     lm_voxel_size: tuple[float, float, float] | None, lm_channel: str,
                     roi: str | None, model: str, em_slices: str | None,
                     landmarks: Path | None, max_rotation_deg: float, no_mirror: bool,
                     no_flip_z: bool, em_polarity: str, lm_polarity: str, prealign_mode: str,
                     workers: int | None, strict: bool, overwrite: bool) -> None:
    """Register EM to LM: pre-alignment (XY or 3D), then 3D mutual-information registration.

    EM and LM are 3D stacks (OME-TIFF, ImageJ TIFF, MRC, OME-Zarr or .npy) with voxel
    sizes in their metadata or given in µm.  Writes the transform (both directions), every
    LM channel resampled onto the EM grid, the run configuration and a figure.
    """
    from dataclasses import replace

    from .io import read_clem_pair
    from .pipeline import RegistrationConfig

    em_vol, lm_vol, _ = read_clem_pair(em, lm, em_voxel_size_um=em_voxel_size,
                                       lm_voxel_size_um=lm_voxel_size, lm_channel=lm_channel,
                                       em_roi=roi)
    points = None
    if landmarks is not None:
        from .evaluation import read_landmarks_csv

        points = read_landmarks_csv(landmarks, em_voxel_size_um=em_vol.voxel_size_um,
                                    lm_voxel_size_um=lm_vol.voxel_size_um)
    base = RegistrationConfig()
    config = RegistrationConfig(
        lm_channel=_parse_channel(lm_channel),
        roi=roi, prealign_mode=prealign_mode, flip_z=not no_flip_z,  # type: ignore[arg-type]
        prealign=replace(base.prealign, em_polarity=em_polarity,  # type: ignore[arg-type]
                         lm_polarity=lm_polarity,  # type: ignore[arg-type]
                         slices=replace(base.prealign.slices, em_slices=_parse_slices(em_slices)),
                         orientation=replace(base.prealign.orientation,
                                             max_rotation_deg=max_rotation_deg,
                                             mirror=not no_mirror)),
        prealign3d=replace(base.prealign3d, max_rotation_deg=max_rotation_deg,
                           mirror=not no_mirror),
        fine=replace(base.fine, model=model))  # type: ignore[arg-type]
    result, paths = _run_registration(em_vol, lm_vol, config, outdir, overwrite, points, workers)
    _print_result(result, paths)
    if points is not None:
        s = json.loads(paths["transform.json"].read_text())["evaluation"]["summary"]
        _out.print(f"landmark error ({s['n']}): mean {s['mean_um']:.3f} µm, median "
                   f"{s['median_um']:.3f} µm, max {s['max_um']:.3f} µm")
    if strict and result.confidence["verdict"] == "failed":
        raise click.exceptions.Exit(3)


@app.command()
@click.option("-o", "--outdir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("clemalign-demo"), show_default=True, help="Output folder.")
@_SCENE_OPTION
@click.option("--seed", type=int, default=0, show_default=True, help="Simulation seed.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="monolayer: lateral size factor of the simulated pair (0.3: small and fast).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def demo(outdir: Path, scene: str, seed: int, scale: float, overwrite: bool) -> None:
    """Simulate a CLEM pair with a known answer, register it, and print the error.

    The pair is written to OUTDIR/data (em.ome.tif, lm.ome.tif, truth.json,
    landmarks.csv), read back like user files, registered (a tissue pair with its --roi
    and the nuclei channel), and the result written to OUTDIR.  The landmark error (TRE)
    against the simulation's truth is printed.
    """
    from .evaluation import target_registration_error
    from .io import ensure_writable, read_clem_pair
    from .pipeline import RegistrationConfig
    from .synthetic import SIMULATED_FILES, write_simulated_pair

    data_dir = outdir / "data"
    for name in SIMULATED_FILES:
        ensure_writable(data_dir / name, overwrite=overwrite)
    start = time.perf_counter()
    with _err.status(f"simulating a {scene} CLEM pair"):
        pair = _simulate_scene(scene, seed=seed, scale=scale)
        files = write_simulated_pair(data_dir, pair, overwrite=overwrite)
    _out.print(f"simulated {scene} pair (seed {seed}) in {time.perf_counter() - start:.1f} s "
               f"→ {data_dir}")
    channel = pair.lm.channel_names[0]
    em_vol, lm_vol, _ = read_clem_pair(files["em.ome.tif"], files["lm.ome.tif"],
                                       lm_channel=channel, em_roi=pair.roi)
    from .evaluation import read_landmarks_csv

    points = read_landmarks_csv(files["landmarks.csv"])
    config = RegistrationConfig(roi=pair.roi, lm_channel=channel)
    if pair.roi:
        _out.print(f"registering with --roi {pair.roi} --lm-channel {channel}")
    result, paths = _run_registration(em_vol, lm_vol, config, outdir, overwrite, points)
    _print_result(result, paths)
    tre = target_registration_error(result.em_to_lm, pair.landmarks_em_um, pair.landmarks_lm_um)
    em_px = float(pair.em.voxel_size_um[2])
    _out.print(f"[bold]landmark error vs truth ({tre.size} landmarks):[/bold] mean "
               f"{tre.mean():.3f} µm ({tre.mean() / em_px:.1f} EM px), median "
               f"{np.median(tre):.3f} µm, max {tre.max():.3f} µm")


@app.command()
@click.argument("transform", type=click.Path(path_type=Path))
@click.argument("landmarks", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--em-pixel-um", type=float, default=None,
              help="EM pixel size (µm) to also report errors in EM pixels [default: the "
                   "x voxel size in transform.json when present].")
@_voxel_size_option("--em-voxel-size", "EM voxel size (z, y, x) µm, for voxel-index columns.")
@_voxel_size_option("--lm-voxel-size", "LM voxel size (z, y, x) µm, for voxel-index columns.")
def evaluate(transform: Path, landmarks: Path, as_json: bool, em_pixel_um: float | None,
             em_voxel_size, lm_voxel_size) -> None:
    """Landmark error of TRANSFORM on LANDMARKS.csv (per landmark; mean/median/max).

    TRANSFORM: clemalign transform.json, ITK .tfm, BigWarp landmarks .csv or eC-CLEM .xml.
    LANDMARKS.csv: name,em_x_um,em_y_um,em_z_um,lm_x_um,lm_y_um,lm_z_um (µm) or
    name,em_k,em_j,em_i,lm_k,lm_j,lm_i (voxel indices, with --em/--lm-voxel-size).
    """
    import json

    from .evaluation import read_landmarks_csv, tre_table
    from .transform_io import read_transform

    em_to_lm = read_transform(transform)
    if em_pixel_um is None and transform.suffix.lower() == ".json":
        sizes = json.loads(transform.read_text()).get("em_voxel_size_um")
        em_pixel_um = float(sizes[2]) if sizes else None
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
    _out.print(grid)
    s = table["summary"]
    line = (f"{s['n']} landmarks: mean {s['mean_um']:.3f} µm, median {s['median_um']:.3f} µm, "
            f"max {s['max_um']:.3f} µm")
    if em_pixel_um:
        line += (f"  ({s['mean_em_px']:.1f} / {s['median_em_px']:.1f} / {s['max_em_px']:.1f} "
                 "EM px)")
    _out.print(line)


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

    from .evaluation import read_points_csv
    from .io import atomic_write_text
    from .transform_io import read_transform

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
        _out.print(f"wrote {len(names)} points to {output}")


# library parameter names → the flags that set them (library errors speak Python)
_FLAGS = {"roi": "--roi", "em_slices": "--em-slices", "max_rotation_deg": "--max-rotation-deg",
          "model": "--model", "lm_channel": "--lm-channel", "em_polarity": "--em-polarity",
          "lm_polarity": "--lm-polarity", "prealign_mode": "--prealign"}


def _as_flags(message: str) -> str:
    """An error message that starts with a parameter name, with the flag named instead."""
    name, sep, rest = message.partition(":")
    return f"{_FLAGS[name]}:{rest}" if sep and name in _FLAGS else message


def _markup_safe(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def _parse_channel(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a script, exits with) the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = app.main(args=args, prog_name="clemalign", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        _err.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except InputError as exc:
        if debug:
            raise
        print(f"clemalign: error: {_as_flags(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # report, never a bare traceback
        if debug:
            raise
        print(f"clemalign: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0
