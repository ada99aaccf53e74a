"""Reading and writing: every format keeps voxel sizes (to 1e-9 µm) and values."""

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
import zarr

from clemalign import InputError, Volume, read_volume, write_ome_tiff, write_volume
from clemalign.io import read_raw, unit_to_um
from clemalign.volume import check_image_values

TOL_UM = 1e-9


def _data(shape=(5, 6, 7), dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(dtype)


def _assert_same(vol: Volume, data, size_zyx, names=None):
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.voxel_size_um, size_zyx, rtol=0, atol=TOL_UM)
    if names is not None:
        assert vol.channel_names == tuple(names)


# ----------------------------------------------------------------- OME-TIFF
@pytest.mark.parametrize("unit, factor", [("nm", 1e-3), ("µm", 1.0), ("mm", 1e3)])
def test_ome_tiff_units(tmp_path, unit, factor):
    data = _data()
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 140.0 / factor / 1000, "PhysicalSizeXUnit": unit,
        "PhysicalSizeY": 150.0 / factor / 1000, "PhysicalSizeYUnit": unit,
        "PhysicalSizeZ": 50.0 / factor / 1000, "PhysicalSizeZUnit": unit})
    vol = read_volume(path)
    _assert_same(vol, data, (0.05, 0.15, 0.14))


def test_ome_tiff_round_trip_multichannel(tmp_path):
    data = _data((2, 4, 5, 6))
    vol = Volume(data, (0.6, 0.22, 0.2213), channel_names=("mito", "nuclei"))
    path = write_ome_tiff(tmp_path / "lm.ome.tif", vol)
    back = read_volume(path)
    _assert_same(back, data, (0.6, 0.22, 0.2213), ("mito", "nuclei"))
    with tifffile.TiffFile(path) as tif:  # what Fiji/Bio-Formats reads
        assert 'PhysicalSizeX="0.2213"' in tif.ome_metadata
        assert 'PhysicalSizeXUnit="µm"' in tif.ome_metadata


def test_ome_tiff_zcyx_order_is_reordered(tmp_path):
    data = _data((4, 2, 5, 6))  # z, c, y, x
    path = tmp_path / "zc.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZCYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1, "PhysicalSizeZ": 0.3})
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, data.transpose(1, 0, 2, 3))
    _assert_same(vol, data.transpose(1, 0, 2, 3), (0.3, 0.1, 0.1))


# ---------------------------------------------------------------- ImageJ TIFF
@pytest.mark.parametrize("unit, to_um", [("micron", 1.0), ("um", 1.0), ("nm", 1e-3),
                                         ("\\u00B5m", 1.0)])
def test_imagej_hyperstack_written_by_tifffile(tmp_path, unit, to_um):
    data = _data((4, 3, 5, 6))  # z, c, y, x as ImageJ orders them
    path = tmp_path / "hyper.tif"
    sx, sy, sz = 0.22 / to_um, 0.23 / to_um, 0.6 / to_um
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / sx, 1 / sy),
                     metadata={"axes": "ZCYX", "spacing": sz, "unit": unit})
    vol = read_volume(path)
    _assert_same(vol, data.transpose(1, 0, 2, 3), (0.6, 0.23, 0.22))
    assert vol.n_channels == 3


def test_imagej_round_trip_through_writer(tmp_path):
    data = _data((3, 5, 6), np.uint8)
    vol = Volume(data, (0.05, 0.14, 0.14))
    back = read_volume(write_volume(tmp_path / "em.tif", vol))
    _assert_same(back, data, (0.05, 0.14, 0.14))


def test_imagej_without_unit_needs_voxel_size(tmp_path):
    path = tmp_path / "nounit.tif"
    tifffile.imwrite(path, _data(), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(InputError, match=r"does not record a voxel size; pass --em-voxel-size"):
        read_volume(path, voxel_size_flag="--em-voxel-size")
    vol = read_volume(path, voxel_size_um=(1, 2, 3))
    assert vol.voxel_size_um == (1.0, 2.0, 3.0)


# ----------------------------------------------------------------------- MRC
def test_mrc_written_by_mrcfile_in_angstrom(tmp_path):
    data = _data((6, 7, 8), np.float32)
    path = tmp_path / "tomo.rec"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (100.0, 100.0, 250.0)  # Å, x y z
    vol = read_volume(path)
    _assert_same(vol, data, (0.025, 0.01, 0.01))


def test_mrc_round_trip_through_writer(tmp_path):
    data = _data((5, 6, 7), np.uint8)
    vol = Volume(data, (0.05, 0.14, 0.14), origin_xyz_um=(1.0, 2.0, 3.0))
    back = read_volume(write_volume(tmp_path / "em.mrc", vol))
    _assert_same(back, data, (0.05, 0.14, 0.14))
    np.testing.assert_allclose(back.origin_xyz_um, (1.0, 2.0, 3.0), atol=1e-6)


def test_mrc_without_voxel_size(tmp_path):
    path = tmp_path / "bare.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_data((3, 4, 5), np.float32))
    with pytest.raises(InputError, match="--lm-voxel-size Z Y X"):
        read_volume(path, voxel_size_flag="--lm-voxel-size")


# ------------------------------------------------------------------ OME-Zarr
def test_ome_zarr_round_trip(tmp_path):
    data = _data((2, 4, 5, 6))
    vol = Volume(data, (0.6, 0.22, 0.22), origin_xyz_um=(5.0, 6.0, 7.0),
                 channel_names=("a", "b"))
    back = read_volume(write_volume(tmp_path / "lm.ome.zarr", vol))
    _assert_same(back, data, (0.6, 0.22, 0.22), ("a", "b"))
    assert back.origin_xyz_um == (5.0, 6.0, 7.0)


def test_ome_zarr_v05_nanometres(tmp_path):
    """NGFF 0.5 keeps its metadata under "ome" in a Zarr v3 group."""
    data = _data((4, 5, 6))
    group = zarr.open_group(str(tmp_path / "v05.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", shape=data.shape, dtype=data.dtype)[...] = data
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [50.0, 140.0, 140.0]}]}]}]}
    vol = read_volume(tmp_path / "v05.zarr")
    _assert_same(vol, data, (0.05, 0.14, 0.14))


# ----------------------------------------------------------------------- npy
def test_npy_needs_and_takes_voxel_size(tmp_path):
    data = _data()
    path = tmp_path / "a.npy"
    np.save(path, data)
    with pytest.raises(InputError, match="pass --em-voxel-size Z Y X"):
        read_volume(path, voxel_size_flag="--em-voxel-size")
    _assert_same(read_volume(path, voxel_size_um=(0.05, 0.14, 0.14)), data, (0.05, 0.14, 0.14))


def test_override_replaces_metadata(tmp_path):
    vol = Volume(_data(), (0.6, 0.22, 0.22))
    path = write_ome_tiff(tmp_path / "x.ome.tif", vol)
    assert read_volume(path, voxel_size_um=(1, 1, 1)).voxel_size_um == (1.0, 1.0, 1.0)
    with pytest.raises(InputError, match=r"--lm-voxel-size.*finite and positive"):
        read_volume(path, voxel_size_um=(0, 1, 1), voxel_size_flag="--lm-voxel-size")


# ---------------------------------------------------------------- bad input
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope.ome.tif: no such file"):
        read_volume(tmp_path / "nope.ome.tif")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type"):
        read_volume(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match=r"broken.tif: cannot read as tiff"):
        read_volume(path, voxel_size_um=(1, 1, 1))


def test_2d_images_are_read_as_one_plane(tmp_path):
    """A 2D image is a stack of one plane; with no z size its nominal thickness is the x
    pixel (a single plane needs none).  A stack without a z size still needs one."""
    import imageio.v3 as iio

    ome = tmp_path / "flat.ome.tif"
    tifffile.imwrite(ome, _data((5, 6)), ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.2})
    vol = read_volume(ome)
    assert vol.shape_zyx == (1, 5, 6)
    assert vol.voxel_size_um == pytest.approx((0.1, 0.2, 0.1))
    ij = tmp_path / "flat_ij.tif"
    tifffile.imwrite(ij, _data((5, 6)), imagej=True, resolution=(1 / 0.05, 1 / 0.05),
                     metadata={"unit": "um"})
    assert read_volume(ij).voxel_size_um == pytest.approx((0.05, 0.05, 0.05))
    png = tmp_path / "section.png"
    iio.imwrite(png, _data((5, 6)).astype(np.uint8))
    with pytest.raises(InputError, match=r"section.png: the file does not record a voxel "
                                         r"size; pass --em-voxel-size"):
        read_volume(png, voxel_size_flag="--em-voxel-size")
    vol = read_volume(png, voxel_size_um=(0.03, 0.03, 0.03))
    assert vol.shape_zyx == (1, 5, 6)
    np.testing.assert_array_equal(vol.data[0], _data((5, 6)).astype(np.uint8))
    colour = tmp_path / "colour.png"
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 0] = 200
    iio.imwrite(colour, rgb)
    with pytest.raises(InputError, match=r"colour.png: a colour PNG"):
        read_volume(colour, voxel_size_um=(0.03, 0.03, 0.03))
    stack = tmp_path / "stack_ij.tif"
    tifffile.imwrite(stack, _data((3, 5, 6)), imagej=True, resolution=(20.0, 20.0),
                     metadata={"unit": "um", "axes": "ZYX"})
    with pytest.raises(InputError, match=r"does not record a voxel size"):
        read_volume(stack)


def test_time_series_is_refused(tmp_path):
    path = tmp_path / "t.ome.tif"
    tifffile.imwrite(path, _data((3, 4, 5, 6)), ome=True, metadata={
        "axes": "TZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1, "PhysicalSizeZ": 0.1})
    with pytest.raises(InputError, match=r"time series \(T=3\)"):
        read_volume(path)


@pytest.mark.parametrize("values, message", [
    (np.full((3, 4, 5), 7.0), "constant"),
    (np.zeros((0, 4, 5)), "empty"),
    (np.where(np.arange(60).reshape(3, 4, 5) == 5, np.nan, 1.0), "1 voxels are NaN"),
    (np.where(np.arange(60).reshape(3, 4, 5) < 2, np.inf, 1.0), "2 voxels are NaN or infinite"),
])
def test_unusable_values(values, message):
    with pytest.raises(InputError, match=message):
        check_image_values(values, what="x.tif")


def test_units():
    assert unit_to_um("Å", what="t") == 1e-4
    assert unit_to_um("micrometer", what="t") == 1.0
    with pytest.raises(InputError, match="unknown length unit 'inch'"):
        unit_to_um("inch", what="t")


# ------------------------------------------------------------ safe writing
def test_no_overwrite_without_flag(tmp_path):
    vol = Volume(_data(), (1, 1, 1))
    path = write_ome_tiff(tmp_path / "v.ome.tif", vol)
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        write_ome_tiff(path, Volume(_data(seed=1), (1, 1, 1)))
    assert path.read_bytes() == before
    write_ome_tiff(path, Volume(_data(seed=1), (1, 1, 1)), overwrite=True)
    np.testing.assert_array_equal(read_volume(path).data, _data(seed=1))


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        Path(args[0]).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", explode)
    with pytest.raises(OSError, match="disk full"):
        write_ome_tiff(tmp_path / "v.ome.tif", Volume(_data(), (1, 1, 1)))
    assert list(tmp_path.iterdir()) == []


def test_read_raw_without_voxel_size(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, _data((2, 3, 4, 5)))
    raw = read_raw(path)
    assert raw.voxel_size_um is None
    assert raw.data.shape == (2, 3, 4, 5)


def _memory_mapped(array: np.ndarray) -> bool:
    import mmap

    while array is not None:
        if isinstance(array, (np.memmap, mmap.mmap)):
            return True
        array = getattr(array, "base", None)
    return False


def test_uncompressed_files_are_memory_mapped_not_read(tmp_path):
    rng = np.random.default_rng(0)
    vol = Volume(rng.integers(0, 255, (6, 10, 12), dtype=np.uint8), (0.5, 0.2, 0.1),
                 (1.0, 2.0, 3.0))
    for name in ("v.ome.tif", "v.tif", "v.mrc", "v.npy"):
        path = tmp_path / name
        if name == "v.ome.tif":
            write_ome_tiff(path, vol)
        else:
            write_volume(path, vol)
        back = read_volume(path, voxel_size_um=(0.5, 0.2, 0.1) if name == "v.npy" else None)
        assert _memory_mapped(back.data), name
        np.testing.assert_array_equal(np.asarray(back.data), vol.data)
    compressed = tmp_path / "c.ome.tif"
    write_ome_tiff(compressed, vol, compression="zlib")
    back = read_volume(compressed)
    assert not _memory_mapped(back.data)  # compressed: read whole, still right
    np.testing.assert_array_equal(back.data, vol.data)


def test_clem_pair_checks_em_values_inside_the_roi_only(tmp_path):
    from clemalign.io import read_clem_pair

    em = np.full((5, 20, 20), 7.0, np.float32)
    em[:, 5:15, 5:15] = np.random.default_rng(1).random((5, 10, 10))
    em[0, 0, 0] = np.nan  # outside the ROI
    np.save(tmp_path / "em.npy", em)
    np.save(tmp_path / "lm.npy", np.random.default_rng(2).random((3, 8, 8)).astype(np.float32))
    kwargs = {"em_voxel_size_um": (0.1, 0.1, 0.1), "lm_voxel_size_um": (0.5, 0.3, 0.3)}
    with pytest.raises(InputError, match="NaN"):
        read_clem_pair(tmp_path / "em.npy", tmp_path / "lm.npy", **kwargs)
    em_vol, _, _ = read_clem_pair(tmp_path / "em.npy", tmp_path / "lm.npy",
                                  em_roi="0:5,5:15,5:15", **kwargs)
    assert em_vol.shape_zyx == (5, 20, 20)


def test_zeiss_czi_reads_with_voxel_size_and_channels(tmp_path):
    """A .czi written with Zeiss's own library (pylibCZIrw, installed with bioio-czi)
    reads through bioio with its voxel size (µm) and channel names."""
    pyczi = pytest.importorskip("pylibCZIrw.czi", reason="the formats extra is not installed")
    pytest.importorskip("bioio_czi", reason="the formats extra is not installed")
    path = tmp_path / "cells.czi"
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for z in range(3):
            czi.write(np.full((20, 30), 10 * z + 5, np.uint16), plane={"C": 0, "Z": z, "T": 0})
            czi.write(np.full((20, 30), 100 + z, np.uint16), plane={"C": 1, "Z": z, "T": 0})
        czi.write_metadata(document_name="cells", channel_names={0: "dna", 1: "mito"},
                           scale_x=0.1e-6, scale_y=0.12e-6, scale_z=0.3e-6)
    vol = read_volume(path)
    assert vol.voxel_size_um == pytest.approx((0.3, 0.12, 0.1))
    assert vol.channel_names == ("dna", "mito") and vol.data.shape == (2, 3, 20, 30)
    assert vol.data[0, 2, 0, 0] == 25 and vol.data[1, 1, 5, 5] == 101


def test_vendor_file_without_bioio_names_the_extra(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "scan.nd2"
    path.write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if not installed
    with pytest.raises(InputError, match=r"clemalign\[formats\]"):
        read_volume(path)


# ------------------------------------------------------------------ NRRD (ITK, 3D Slicer)


def test_nrrd_round_trip_and_simpleitk_reads_um(tmp_path):
    """A two-channel volume with an origin: we read back data, voxel size, origin and
    channel names; SimpleITK (ITK's reader, as 3D Slicer) reads spacing and origin as the
    same µm numbers and the channels as pixel components."""
    import SimpleITK as sitk

    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, (2, 5, 6, 7)).astype(np.uint16)
    vol = Volume(data, (0.6, 0.22, 0.2), (3.5, -1.25, 7.0), ("mito", "nuclei"))
    write_volume(tmp_path / "v.nrrd", vol)
    back = read_volume(tmp_path / "v.nrrd")
    np.testing.assert_array_equal(back.data, data)
    assert back.voxel_size_um == pytest.approx((0.6, 0.22, 0.2), rel=1e-12)
    assert back.origin_xyz_um == pytest.approx((3.5, -1.25, 7.0), rel=1e-12)
    assert back.channel_names == ("mito", "nuclei")
    image = sitk.ReadImage(str(tmp_path / "v.nrrd"))
    assert image.GetSpacing() == pytest.approx((0.2, 0.22, 0.6), rel=1e-12)
    assert image.GetOrigin() == pytest.approx((3.5, -1.25, 7.0), rel=1e-12)
    assert image.GetSize() == (7, 6, 5) and image.GetNumberOfComponentsPerPixel() == 2
    np.testing.assert_array_equal(np.moveaxis(sitk.GetArrayFromImage(image), -1, 0), data)
    # the physical point of voxel (k, j, i) is the same for both readers
    assert image.TransformIndexToPhysicalPoint((4, 3, 2)) == pytest.approx(
        tuple(back.index_to_physical(np.array([2, 3, 4], float))), rel=1e-12)


def test_nrrd_units_are_converted_and_a_unitless_nrrd_needs_a_voxel_size(tmp_path):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    image.SetSpacing((0.5, 0.5, 2.0))
    sitk.WriteImage(image, str(tmp_path / "plain.nrrd"))  # ITK writes no unit
    with pytest.raises(InputError, match="voxel size"):
        read_volume(tmp_path / "plain.nrrd")
    assert read_volume(tmp_path / "plain.nrrd", voxel_size_um=(2, 0.5, 0.5)).shape_zyx == (3, 4, 5)
    text = (tmp_path / "plain.nrrd").read_bytes()
    head, _, body = text.partition(b"\n\n")
    (tmp_path / "mm.nrrd").write_bytes(head + b'\nspace units: "mm" "mm" "mm"\n\n' + body)
    vol = read_volume(tmp_path / "mm.nrrd")
    assert vol.voxel_size_um == pytest.approx((2000.0, 500.0, 500.0))
    with pytest.raises(InputError, match="attached"):
        write_volume(tmp_path / "x.nhdr", vol)


def test_imagej_tiff_carries_the_calibration_imagej_reads(tmp_path):
    """What plain ImageJ (no Bio-Formats) reads: the ImageJ description's unit, z
    spacing and channel count, and the x/y resolution tags."""
    vol = Volume(np.zeros((2, 4, 6, 5), np.uint16), (0.05, 0.14, 0.12), channel_names=("a", "b"))
    write_volume(tmp_path / "v.tif", vol)
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        meta = tif.imagej_metadata
        assert meta["unit"] in ("um", "micron", "\\u00B5m", "µm")
        assert meta["spacing"] == pytest.approx(0.05) and meta["channels"] == 2
        assert meta["slices"] == 4
        page = tif.pages[0]
        num, den = page.tags["XResolution"].value
        assert den / num == pytest.approx(0.12, rel=1e-6)
        num, den = page.tags["YResolution"].value
        assert den / num == pytest.approx(0.14, rel=1e-6)
