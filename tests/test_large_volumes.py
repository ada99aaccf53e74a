"""Volumes larger than memory (issue 19): lazy reading, chunk-by-chunk reductions, and
the LM on the EM grid written as multiscale OME-Zarr a slab at a time.  The inputs here
are small and forced down the large-volume paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from clemalign import Volume, read_volume, write_ome_tiff, write_volume
from clemalign.cli import main
from clemalign.lazy import block_mean, depth_mean, is_lazy, value_summary


@pytest.fixture(scope="module")
def pair():
    from clemalign.synthetic import simulate_pair

    return simulate_pair(seed=2, scale=0.3)


@pytest.fixture(scope="module")
def registered(pair):
    """A finished 3D registration of the small pair (EM in memory) and its inputs."""
    from clemalign import RegistrationConfig, register

    return register(pair.em, pair.lm, config=RegistrationConfig(lm_channel="mito")), \
        pair.em, pair.lm


def test_lazy_reads_match_the_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (2, 30, 200, 150)).astype(np.uint8)
    vol = Volume(data, (0.5, 0.1, 0.1), (1.0, 2.0, 3.0), ("a", "b"))
    write_volume(tmp_path / "v.zarr", vol)
    tifffile.imwrite(tmp_path / "v.ome.tif", data, compression="zlib", tile=(64, 64), ome=True,
                     metadata={"axes": "CZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1,
                               "PhysicalSizeZ": 0.5})
    for name in ("v.zarr", "v.ome.tif"):
        lazy = read_volume(tmp_path / name, lazy=True)
        assert is_lazy(lazy.data) and lazy.voxel_size_um == (0.5, 0.1, 0.1)
        np.testing.assert_array_equal(np.asarray(lazy.data), data)
        assert not is_lazy(read_volume(tmp_path / name).data)  # small: read whole
    lazy = read_volume(tmp_path / "v.zarr", lazy=True).channel(1).data
    np.testing.assert_allclose(depth_mean(lazy, (slice(3, 20), slice(None), slice(5, 90))),
                               data[1, 3:20, :, 5:90].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(block_mean(lazy[:30, :200, :150], (3, 4, 5)),
                               block_mean(data[1], (3, 4, 5)), rtol=1e-6)
    assert value_summary(lazy) == (0, float(data[1].min()), float(data[1].max()))
    bad = data[1].astype(np.float32)
    bad[4, 5, 6] = np.nan
    import dask.array as da

    assert value_summary(da.from_array(bad, chunks=(8, 64, 64)))[0] == 1


@pytest.mark.slow
def test_a_lazy_em_registers_exactly_like_one_in_memory(pair, registered, tmp_path):
    """The EM read on demand from OME-Zarr (a dask array) gives the same transform as
    the same EM in memory: the reductions it goes through are the same sums."""
    from clemalign import RegistrationConfig, register

    write_volume(tmp_path / "em.zarr", pair.em)
    em = read_volume(tmp_path / "em.zarr", lazy=True)
    assert is_lazy(em.data)
    in_memory = registered[0]
    lazy = register(em, pair.lm, config=RegistrationConfig(lm_channel="mito"))
    points = pair.landmarks_em_um
    moved = np.linalg.norm(in_memory.em_to_lm.apply(points) - lazy.em_to_lm.apply(points), axis=1)
    assert moved.max() < 1e-6


def test_lm_in_em_as_multiscale_ome_zarr(registered, tmp_path, monkeypatch):
    """--volume-format ome-zarr: level 0 is the LM on the whole EM grid (voxel for voxel
    what the in-memory path resamples), lower levels halve y and x with their block
    centres as translation; figures still written; --overwrite replaces the folder."""
    import clemalign.pipeline
    from clemalign.outputs import resample_lm_to_em

    result, em, lm = registered
    write_ome_tiff(tmp_path / "em.ome.tif", em)
    write_ome_tiff(tmp_path / "lm.ome.tif", lm)
    monkeypatch.setattr(clemalign.pipeline, "register", lambda *a, **k: result)
    monkeypatch.setattr("clemalign.io.writers._ZARR_MIN_LEVEL_SIDE_PX", 64)
    out = tmp_path / "out"
    args = ["register", str(tmp_path / "em.ome.tif"), str(tmp_path / "lm.ome.tif"), "-o",
            str(out), "--lm-channel", "mito", "--volume-format", "ome-zarr"]
    assert main(args) == 0
    assert not (out / "overlay.ome.tif").exists() and (out / "overlay_slices.png").exists()
    back = read_volume(out / "lm_in_em.ome.zarr")
    em_file = read_volume(tmp_path / "em.ome.tif")
    assert back.shape_zyx == em_file.shape_zyx and back.n_channels == 2
    assert back.voxel_size_um == pytest.approx(em_file.voxel_size_um)
    whole = resample_lm_to_em(lm, em_file, result.em_to_lm)
    np.testing.assert_array_equal(back.data, whole.data)
    group = zarr.open_group(str(out / "lm_in_em.ome.zarr"), mode="r")
    datasets = group.attrs["multiscales"][0]["datasets"]
    assert len(datasets) >= 3
    level1 = np.asarray(group["1"])
    s0, s1 = (d["coordinateTransformations"][0]["scale"] for d in datasets[:2])
    t1 = datasets[1]["coordinateTransformations"][1]["translation"]
    fz = 2 if s0[1] * 2 <= s0[2] else 1  # z halves too while its voxel stays shorter
    assert s1[1:] == pytest.approx([fz * s0[1], 2 * s0[2], 2 * s0[3]])
    assert t1[1:] == pytest.approx([em_file.origin_xyz_um[2] + (fz - 1) * s0[1] / 2,
                                    em_file.origin_xyz_um[1] + s0[2] / 2,
                                    em_file.origin_xyz_um[0] + s0[3] / 2])
    nz, ny, nx = level1.shape[1:]
    expected = whole.data[:, :fz * nz, :2 * ny, :2 * nx].reshape(
        2, nz, fz, ny, 2, nx, 2).mean(axis=(2, 4, 6))
    np.testing.assert_allclose(level1, np.rint(expected), atol=0.5 + 1e-9)
    record = json.loads((out / "transform.json").read_text())
    assert record["lm_in_em"]["file"] == "lm_in_em.ome.zarr"
    assert main(args) != 0  # refuses without --overwrite
    assert main(args + ["--overwrite"]) == 0
    np.testing.assert_array_equal(read_volume(out / "lm_in_em.ome.zarr").data, whole.data)


def test_block_means_from_several_threads_equal_one(monkeypatch):
    """Threads share the block rows of a large array (issue 22): each block's mean is
    computed as alone, so the result is the same bit for bit, on a strided crop too."""
    import clemalign.lazy as lazy

    monkeypatch.setattr(lazy, "_PARALLEL_MIN_VALUES", 1000)
    data = np.random.default_rng(2).integers(0, 255, (61, 90, 70), dtype=np.uint8)
    crop = data[1:61, 3:87, 2:67]  # not contiguous
    one = block_mean(crop, (6, 3, 5))
    for workers in (2, 3, 4):
        np.testing.assert_array_equal(block_mean(crop, (6, 3, 5), workers=workers), one)
    np.testing.assert_allclose(one[1, 2, 3], crop[6:12, 6:9, 15:20].mean(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.float32])
def test_integer_block_means_are_numpys_float32_means_bit_for_bit(dtype, monkeypatch):
    """8/16-bit blocks are summed exactly in integers a plane at a time (issue 22): the
    means equal numpy's float32 mean bit for bit; floats and blocks whose sums float32
    cannot hold exactly (16-bit × 512 values) keep numpy's reduction."""
    import clemalign.lazy as lazy

    monkeypatch.setattr(lazy, "_PARALLEL_MIN_VALUES", 1000)
    rng = np.random.default_rng(3)
    if np.dtype(dtype).kind == "f":
        data = rng.standard_normal((48, 40, 32)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, (48, 40, 32), endpoint=True).astype(dtype)
    for block in [(1, 1, 1), (2, 2, 2), (6, 3, 3), (3, 1, 2), (1, 4, 1), (8, 8, 8),
                  (16, 4, 4)]:
        shape = [n // b * b for n, b in zip(data.shape, block, strict=True)]
        crop = data[:shape[0], :shape[1], :shape[2]]
        nz, ny, nx = (n // b for n, b in zip(shape, block, strict=True))
        expected = crop.reshape(nz, block[0], ny, block[1], nx, block[2]).mean(
            axis=(1, 3, 5), dtype=np.float32)
        for workers in (1, 3):
            np.testing.assert_array_equal(block_mean(crop, block, workers=workers), expected)


def test_figures_of_a_large_roi_use_block_means_placed_exactly(monkeypatch):
    import clemalign.outputs as outputs
    from clemalign.volume import Roi

    data = np.arange(4 * 64 * 48, dtype=np.uint16).reshape(4, 64, 48)
    em = Volume(data, (0.05, 0.1, 0.1), (1.0, 2.0, 3.0))
    monkeypatch.setattr(outputs, "FIGURE_MIN_SIDE_PX", 16)
    fig = outputs.figure_grid(em, Roi(0, 4, 0, 64, 0, 48))
    # 4 × 4 pixels a block; z by 4 (no more than the ROI's 4 planes)
    assert fig.shape_zyx == (1, 16, 12)
    assert fig.voxel_size_um == pytest.approx((0.2, 0.4, 0.4))
    # the first output voxel is the centre of the first block
    assert fig.origin_xyz_um == pytest.approx((1.15, 2.15, 3.075))
    np.testing.assert_allclose(fig.data[0, 0, 0], data[:, :4, :4].mean(), rtol=1e-6)


@pytest.mark.slow
def test_em_level_auto_reads_the_pyramid_level_the_registration_needs(pair, registered,
                                                                      tmp_path, capfd):
    """The small pair's EM ×2 per axis as multiscale OME-Zarr: --em-level auto picks the
    level at the original resolution (the LM pixel bounds it), says so, converts --roi,
    and registers exactly as the original."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "large_volume", Path(__file__).resolve().parents[1] / "benchmarks" / "large_volume.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench._write_upsampled(tmp_path / "em2.ome.zarr", pair.em, 2)
    write_ome_tiff(tmp_path / "lm.ome.tif", pair.lm)
    from clemalign.io.readers import choose_em_level, ome_zarr_levels, roi_at_level

    levels = ome_zarr_levels(tmp_path / "em2.ome.zarr")
    assert levels[1][1] == pytest.approx(pair.em.voxel_size_um)
    assert choose_em_level(levels, 0.22) == 1
    level1 = read_volume(tmp_path / "em2.ome.zarr", level=1)
    np.testing.assert_array_equal(level1.data, pair.em.data)
    assert level1.origin_xyz_um == pytest.approx(pair.em.origin_xyz_um, abs=1e-9)
    assert roi_at_level("3:9,10:21,0:5", (40, 60, 80), (20, 30, 40)) == "1:5,5:11,0:3"
    nz, ny, nx = pair.em.shape_zyx
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "em2.ome.zarr"), str(tmp_path / "lm.ome.tif"),
                 "-o", str(out), "--lm-channel", "mito", "--em-level", "auto", "--roi",
                 f"0:{2 * nz},0:{2 * ny},0:{2 * nx}", "--outputs", "minimal"]) == 0
    assert "EM pyramid level 1" in capfd.readouterr().out
    em_to_lm = np.array(json.loads((out / "transform.json").read_text())["em_to_lm"])
    points = pair.landmarks_em_um
    from clemalign import Affine

    moved = Affine(em_to_lm).apply(points) - registered[0].em_to_lm.apply(points)
    assert np.linalg.norm(moved, axis=1).max() < 1e-6


@pytest.mark.slow
def test_an_em_too_large_to_hold_is_registered_on_its_block_means(pair, registered, tmp_path,
                                                                   monkeypatch, capfd):
    """A single-scale EM ×2 per axis read on demand (the size limit lowered to 0 here):
    register reduces it to the LM's pixel by block means, which reproduces the original
    EM, so the result is the original's; lm_in_em is on the full-resolution grid."""
    monkeypatch.setattr("clemalign.io.readers.LAZY_ABOVE_BYTES", 0)
    em = pair.em
    up = np.asarray(em.data).repeat(2, 0).repeat(2, 1).repeat(2, 2)
    origin = tuple(o - s / 4 for o, s in zip(em.origin_xyz_um, em.voxel_size_um[::-1],
                                             strict=True))
    big = Volume(up, tuple(v / 2 for v in em.voxel_size_um), origin)
    write_volume(tmp_path / "em2.zarr", big)
    write_ome_tiff(tmp_path / "lm.ome.tif", pair.lm)
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "em2.zarr"), str(tmp_path / "lm.ome.tif"),
                 "-o", str(out), "--lm-channel", "mito", "--volume-format", "ome-zarr",
                 "--outputs", "standard"]) == 0
    assert "EM reduced by 2 × 2 × 2" in capfd.readouterr().out
    record = json.loads((out / "transform.json").read_text())
    points = pair.landmarks_em_um
    from clemalign import Affine

    moved = Affine(np.array(record["em_to_lm"])).apply(points) - \
        registered[0].em_to_lm.apply(points)
    assert np.linalg.norm(moved, axis=1).max() < 1e-6
    assert record["lm_in_em"]["shape_zyx"] == list(up.shape)
    assert record["lm_in_em"]["origin_xyz_um"] == pytest.approx(origin)
    assert read_volume(out / "lm_in_em.ome.zarr").shape_zyx == up.shape
