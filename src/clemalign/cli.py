"""The ``clemalign`` command line (thin: parse, call the library, write, report).

Errors in the input (files, flags, image content) print one line on stderr and exit
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

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


@app.command()
@click.argument("outdir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (same seed, same pair).")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Lateral size factor (0.3 gives a small, fast pair).")
@click.option("--rotation-deg", type=float, default=None,
              help="In-plane rotation of the EM field in degrees [default: random in ±15].")
@click.option("--mirror", is_flag=True, help="Mirror the EM field (flip x).")
@click.option("--placement", type=click.Choice(["anywhere", "cell", "border"]),
              default="anywhere", show_default=True,
              help="Where the EM field sits in the LM field.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def simulate(outdir: Path, seed: int, scale: float, rotation_deg: float | None, mirror: bool,
             placement: str, overwrite: bool) -> None:
    """Simulate a CLEM pair (EM + 2-channel LM) with its ground truth into OUTDIR.

    Writes em.ome.tif, lm.ome.tif, truth.json (the em_to_lm matrix) and landmarks.csv.
    """
    from .io import ensure_writable
    from .synthetic import SIMULATED_FILES, SimulationConfig, simulate_pair, write_simulated_pair

    config = SimulationConfig(seed=seed, scale=scale, rotation_deg=rotation_deg, mirror=mirror,
                              placement=placement)  # type: ignore[arg-type]
    # fail before the expensive rendering if outputs exist
    for name in SIMULATED_FILES:
        ensure_writable(outdir / name, overwrite=overwrite)
    start = time.perf_counter()
    with _err.status("simulating") as status:
        pair = simulate_pair(config, progress=lambda step: status.update(f"rendering {step}"))
        status.update("writing")
        paths = write_simulated_pair(outdir, pair, overwrite=overwrite)
    p = pair.parameters
    _out.print(f"simulated pair (seed {seed}) in {time.perf_counter() - start:.1f} s → {outdir}")
    _out.print(f"  EM {pair.em.data.shape} @ {pair.em.voxel_size_um} µm;  "
               f"LM {pair.lm.data.shape} @ {pair.lm.voxel_size_um} µm")
    _out.print(f"  truth: rotation {p['rotation_deg']:.2f}°, mirror {p['mirror']}, "
               f"EM centre → LM ({p['lm_centre_xyz_um'][0]:.2f}, "
               f"{p['lm_centre_xyz_um'][1]:.2f}, {p['lm_centre_xyz_um'][2]:.2f}) µm, "
               f"{p['n_landmarks']} landmarks")
    for path in paths.values():
        _out.print(f"  wrote {path}")


@app.command()
@click.argument("em", type=click.Path(path_type=Path))
@click.argument("lm", type=click.Path(path_type=Path))
@_voxel_size_option("--em-voxel-size", "EM voxel size (z, y, x) in µm; replaces the file's.")
@_voxel_size_option("--lm-voxel-size", "LM voxel size (z, y, x) in µm; replaces the file's.")
@click.option("--lm-channel", default="0", show_default=True,
              help="LM channel to align: index (0-based) or name.")
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
    _out.print(f"LM channel used: {lm_chan.channel_names[0]!r} of {lm_vol.channel_names or ('C0',)}")
    _out.print("[green]inputs OK[/green]")


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
        print(f"clemalign: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # report, never a bare traceback
        if debug:
            raise
        print(f"clemalign: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
