"""Landmark files and target registration error (TRE).

Landmark CSV (header required; one pair per row; extra columns are ignored):

* physical µm: ``name, em_x_um, em_y_um, em_z_um, lm_x_um, lm_y_um, lm_z_um`` (what
  ``clemalign simulate`` writes), or
* voxel indices: ``name, em_k, em_j, em_i, lm_k, lm_j, lm_i`` (array order z, y, x;
  fractional allowed) with the voxel sizes given (``--em-voxel-size``/``--lm-voxel-size``);
  voxel ``(k, j, i)`` is at ``origin + (i·sx, j·sy, k·sz)`` (origin 0 here).

Point CSV for :func:`read_points_csv`: ``x_um, y_um, z_um`` (optionally ``name``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError, reading_text
from .transforms import Affine
from .volume import check_voxel_size

__all__ = ["Landmarks", "read_landmarks_csv", "read_points_csv", "tre_table",
           "sample_on_em_plane", "PHYSICAL_COLUMNS", "INDEX_COLUMNS"]

PHYSICAL_COLUMNS = ("em_x_um", "em_y_um", "em_z_um", "lm_x_um", "lm_y_um", "lm_z_um")
INDEX_COLUMNS = ("em_k", "em_j", "em_i", "lm_k", "lm_j", "lm_i")


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Pairs of corresponding points, physical µm ``(x, y, z)``."""

    names: tuple[str, ...]
    em_um: np.ndarray
    lm_um: np.ndarray


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with reading_text(path, "landmarks file"), open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = None
        rows = []
        for line_no, row in enumerate(reader, start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [h.strip() for h in row]
            else:
                rows.append((line_no, row))
    if header is None:
        raise InputError(f"{path}: the file is empty")
    return header, rows


def _numbers(path: Path, header: list[str], rows, columns: Sequence[str]) -> np.ndarray:
    index = [header.index(c) for c in columns]
    out = np.empty((len(rows), len(columns)))
    for r, (line_no, row) in enumerate(rows):
        if len(row) < len(header):
            raise InputError(f"{path}, line {line_no}: {len(row)} fields, the header has "
                             f"{len(header)}")
        for c, (col, i) in enumerate(zip(columns, index, strict=True)):
            try:
                out[r, c] = float(row[i])
            except ValueError:
                raise InputError(f"{path}, line {line_no}: field {col!r} is {row[i]!r}, "
                                 "not a number") from None
            if not np.isfinite(out[r, c]):
                raise InputError(f"{path}, line {line_no}: field {col!r} is not finite")
    return out


def read_landmarks_csv(path: str | os.PathLike, *,
                       em_voxel_size_um: Sequence[float] | None = None,
                       lm_voxel_size_um: Sequence[float] | None = None) -> Landmarks:
    """Read landmark pairs (physical µm columns, or voxel-index columns with sizes).

    Raises
    ------
    InputError
        Missing columns, a non-numeric field (names the line and column), no rows, or
        index columns without voxel sizes.
    """
    path = Path(path)
    header, rows = _rows(path)
    if not rows:
        raise InputError(f"{path}: no landmark rows under the header")
    names = tuple(row[header.index("name")] if "name" in header else f"P{k}"
                  for k, (_, row) in enumerate(rows))
    if all(c in header for c in PHYSICAL_COLUMNS):
        values = _numbers(path, header, rows, PHYSICAL_COLUMNS)
        return Landmarks(names, values[:, :3], values[:, 3:])
    if all(c in header for c in INDEX_COLUMNS):
        if em_voxel_size_um is None or lm_voxel_size_um is None:
            raise InputError(f"{path}: voxel-index columns need --em-voxel-size and "
                             "--lm-voxel-size (µm, z y x)")
        em_size = np.array(check_voxel_size(em_voxel_size_um, what="--em-voxel-size",
                                            flag="--em-voxel-size"))
        lm_size = np.array(check_voxel_size(lm_voxel_size_um, what="--lm-voxel-size",
                                            flag="--lm-voxel-size"))
        values = _numbers(path, header, rows, INDEX_COLUMNS)
        # (k, j, i) · (sz, sy, sx), reversed to (x, y, z)
        return Landmarks(names, (values[:, :3] * em_size)[:, ::-1],
                         (values[:, 3:] * lm_size)[:, ::-1])
    missing = [c for c in PHYSICAL_COLUMNS if c not in header]
    raise InputError(f"{path}: header lacks {', '.join(missing)}; expected columns "
                     f"name,{','.join(PHYSICAL_COLUMNS)} (µm) or name,{','.join(INDEX_COLUMNS)}")


def read_points_csv(path: str | os.PathLike) -> tuple[tuple[str, ...], np.ndarray]:
    """Points ``x_um, y_um, z_um`` (optional ``name``) → (names, (n, 3) array)."""
    path = Path(path)
    header, rows = _rows(path)
    columns = ("x_um", "y_um", "z_um")
    if not all(c in header for c in columns):
        raise InputError(f"{path}: header must contain x_um,y_um,z_um (optionally name)")
    if not rows:
        raise InputError(f"{path}: no point rows under the header")
    names = tuple(row[header.index("name")] if "name" in header else f"P{k}"
                  for k, (_, row) in enumerate(rows))
    return names, _numbers(path, header, rows, columns)


def target_registration_error(em_to_lm: Affine, landmarks_em_um: np.ndarray,
                              landmarks_lm_um: np.ndarray) -> np.ndarray:
    """Distance (µm) between mapped EM landmarks and their LM counterparts.

    Parameters
    ----------
    em_to_lm : Affine
    landmarks_em_um, landmarks_lm_um : ndarray, shape (n, 3)
        Corresponding physical points ``(x, y, z)`` in µm.

    Returns
    -------
    ndarray, shape (n,)
        ``|em_to_lm(em point) − lm point|`` in LM µm.
    """
    mapped = em_to_lm.apply(np.asarray(landmarks_em_um, float))
    return np.linalg.norm(mapped - np.asarray(landmarks_lm_um, float), axis=1)


def tre_table(em_to_lm: Affine, landmarks: Landmarks, *, em_pixel_um: float | None = None
              ) -> dict:
    """Per-landmark errors and summary (µm; EM pixels when ``em_pixel_um`` is given).

    The error of a pair is ``|em_to_lm(em point) − lm point|`` in LM physical µm.
    """
    mapped = em_to_lm.apply(landmarks.em_um)
    errors = target_registration_error(em_to_lm, landmarks.em_um, landmarks.lm_um)
    rows = [{"name": n, "error_um": float(e), "mapped_lm_um": m.tolist()}
            for n, e, m in zip(landmarks.names, errors, mapped, strict=True)]
    summary = {"n": int(errors.size), "mean_um": float(errors.mean()),
               "median_um": float(np.median(errors)), "max_um": float(errors.max())}
    if em_pixel_um:
        for row in rows:
            row["error_em_px"] = row["error_um"] / em_pixel_um
        summary.update(em_pixel_um=float(em_pixel_um),
                       mean_em_px=summary["mean_um"] / em_pixel_um,
                       median_em_px=summary["median_um"] / em_pixel_um,
                       max_em_px=summary["max_um"] / em_pixel_um)
    return {"landmarks": rows, "summary": summary}


def sample_on_em_plane(em_image: np.ndarray, em_spacing_yx_um: Sequence[float],
                       lm_image: np.ndarray, lm_spacing_yx_um: Sequence[float],
                       em_to_lm: Affine, *, z_um: float, pixel_um: float,
                       box_yx_um: tuple[float, float, float, float] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Sample an EM-plane image and an LM-plane image at the same physical points.

    A regular grid of ``pixel_um`` spacing over the EM field (or ``box_yx_um``) in the EM
    plane at height ``z_um`` is mapped to the LM by ``em_to_lm``; both images are read by
    linear interpolation (EM pixel ``(j, i)`` at ``(i·sx, j·sy)``, the LM likewise; only
    the LM point's x and y are used, so ``lm_image`` is a projection or one plane).
    Used to compare representations (raw, LoG) of a known-aligned pair.

    Parameters
    ----------
    em_image : ndarray, shape (y, x)
        An EM slice or projection (or a function of it, e.g. its LoG).
    em_spacing_yx_um : sequence of float
        EM pixel size ``(y, x)`` in µm.
    lm_image : ndarray, shape (y, x)
        An LM plane or projection (or its LoG).
    lm_spacing_yx_um : sequence of float
        LM pixel size ``(y, x)`` in µm.
    em_to_lm : Affine
        The true transform, EM physical µm → LM physical µm.
    z_um : float
        Height of the EM plane in the EM's physical frame (µm).
    pixel_um : float
        Spacing of the common grid (µm).
    box_yx_um : (y0, y1, x0, x1), optional
        Region of the EM plane to sample, in µm (default: the whole EM image).

    Returns
    -------
    em_values, lm_values : ndarray
        Paired samples (points outside the LM read 0).
    """
    em_image = np.asarray(em_image, dtype=np.float32)
    lm_image = np.asarray(lm_image, dtype=np.float32)
    if em_image.ndim != 2 or lm_image.ndim != 2:
        raise InputError("sample_on_em_plane: expected two 2D images")
    sy, sx = (float(v) for v in em_spacing_yx_um)
    ly, lx = (float(v) for v in lm_spacing_yx_um)
    if box_yx_um is None:
        box_yx_um = (0.0, (em_image.shape[0] - 1) * sy, 0.0, (em_image.shape[1] - 1) * sx)
    y0, y1, x0, x1 = box_yx_um
    x, y = np.meshgrid(np.arange(x0 + pixel_um / 2, x1, pixel_um),
                       np.arange(y0 + pixel_um / 2, y1, pixel_um))
    pts = np.stack([x.ravel(), y.ravel(), np.full(x.size, float(z_um))], axis=1)
    em_values = ndi.map_coordinates(em_image, [pts[:, 1] / sy, pts[:, 0] / sx], order=1)
    lm_pts = em_to_lm.apply(pts)
    lm_values = ndi.map_coordinates(lm_image, [lm_pts[:, 1] / ly, lm_pts[:, 0] / lx],
                                    order=1)
    return em_values, lm_values
