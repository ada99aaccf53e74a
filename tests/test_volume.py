import numpy as np
import pytest
import SimpleITK as sitk

from clemalign import InputError, Volume, from_sitk, to_sitk


def _volume(**kw):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    return Volume(data, (0.5, 0.2, 0.1), **kw)


def test_known_voxel_maps_to_known_point_and_back():
    # worked example of docs/conventions.md: voxel (k, j, i) = (2, 3, 4)
    vol = _volume(origin_xyz_um=(10.0, 20.0, 30.0))
    p = vol.index_to_physical([2, 3, 4])
    np.testing.assert_allclose(p, [10.4, 20.6, 31.0], atol=1e-12)
    np.testing.assert_allclose(vol.physical_to_index(p), [2, 3, 4], atol=1e-12)
    many = np.array([[0, 0, 0], [3, 4, 5], [1.5, 0.25, 2.0]])
    np.testing.assert_allclose(vol.physical_to_index(vol.index_to_physical(many)), many)


def test_index_matrix_matches_index_to_physical():
    vol = _volume(origin_xyz_um=(1.0, -2.0, 3.0))
    ijk1 = np.array([4.0, 3.0, 2.0, 1.0])  # (i, j, k) = x, y, z index
    np.testing.assert_allclose(vol.index_to_physical_matrix() @ ijk1,
                               [*vol.index_to_physical([2, 3, 4]), 1.0])


def test_sitk_agrees_on_voxel_positions():
    vol = _volume(origin_xyz_um=(10.0, 20.0, 30.0))
    img = to_sitk(vol)
    assert img.GetSize() == (6, 5, 4)
    assert img.GetSpacing() == (0.1, 0.2, 0.5)
    # SimpleITK indexes (i, j, k); our arrays (k, j, i)
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((4, 3, 2)),
                               vol.index_to_physical([2, 3, 4]), atol=1e-12)
    assert img.GetPixel(4, 3, 2) == vol.data[2, 3, 4]


def test_sitk_round_trip_keeps_spacing_origin_values():
    vol = _volume(origin_xyz_um=(1.25, 2.5, -3.75))
    back = from_sitk(to_sitk(vol))
    assert back.voxel_size_um == vol.voxel_size_um
    assert back.origin_xyz_um == vol.origin_xyz_um
    np.testing.assert_array_equal(back.data, vol.data)


def test_from_sitk_refuses_rotated_direction():
    img = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    with pytest.raises(ValueError, match="identity direction"):
        from_sitk(img)


def test_extent_and_spacing_order():
    vol = _volume()
    assert vol.shape_zyx == (4, 5, 6)
    np.testing.assert_allclose(vol.extent_um, (2.0, 1.0, 0.6))
    np.testing.assert_allclose(vol.spacing_xyz_um, (0.1, 0.2, 0.5))


def test_channels_by_index_and_name():
    data = np.zeros((2, 3, 4, 5), np.uint16)
    data[1] = 7
    vol = Volume(data, (1, 1, 1), channel_names=("mito", "dapi"))
    assert vol.n_channels == 2
    assert vol.channel("dapi").data.max() == 7
    assert vol.channel(1).channel_names == ("dapi",)
    assert vol.channel("0").channel_names == ("mito",)
    with pytest.raises(InputError, match=r"channel 'gfp' not found; available channels: "
                                         r"0=mito, 1=dapi"):
        vol.channel("gfp")
    with pytest.raises(InputError, match="channel 2 not found"):
        vol.channel(2)


@pytest.mark.parametrize("size", [(0, 1, 1), (1, -1, 1), (1, float("nan"), 1), (1, 1),
                                  (1, 1, float("inf"))])
def test_bad_voxel_sizes_are_refused(size):
    with pytest.raises(InputError, match="voxel size"):
        Volume(np.zeros((2, 2, 2)), size)


def test_2d_is_refused_with_shape():
    with pytest.raises(InputError, match=r"3D stack is needed .* 2D image of shape \(5, 6\)"):
        Volume(np.zeros((5, 6)), (1, 1, 1))


def test_scale_axes_reads_input_at_factor_times_output_quietly():
    import warnings

    from clemalign.volume import scale_axes

    data = np.arange(20.0).reshape(4, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SciPy 1-D matrix warning leaks out
        out = scale_axes(data, [1.0, 2.0], [0.0, 0.5], output_shape=(4, 2))
    # output (r, c) = input (r, 2c + 0.5): linear interpolation along x
    np.testing.assert_allclose(out, data[:, [0, 2]] + 0.5)


def test_index_box_holds_the_points_plus_margin_and_clips():
    vol = Volume(np.zeros((10, 20, 30), np.uint8), (2.0, 0.5, 0.25), (1.0, 2.0, 3.0))
    pts = np.array([[2.0, 4.0, 7.0], [4.0, 5.0, 9.0]])  # (x, y, z) µm
    box = vol.index_box(pts, [0.5, 1.0, 2.0])
    # x 1.5–4.5 µm → i 2–14; y 3–6 µm → j 2–8; z 5–11 µm (origin 3) → k 1–4
    assert box == (slice(1, 5), slice(2, 9), slice(2, 15))
    whole = vol.index_box(pts, 1000.0)
    assert whole == (slice(0, 10), slice(0, 20), slice(0, 30))


def test_scale_axes_on_several_threads_equals_one_call():
    """Planes kept as they are (factor 1 along z): slabs of them are resampled on threads
    (issue 22), each voxel reading the same input position, so bit for bit the same;
    other first-axis factors run as one call."""
    from clemalign.volume import scale_axes

    data = np.random.default_rng(6).random((7, 50, 40)).astype(np.float32)
    for factors, offset in [((1.0, 1.0101, 0.93), 0.0), ((1.0, 1.3, 1.3), [0.0, 0.4, -0.2]),
                            ((1.25, 1.0, 1.0), 0.0)]:
        one = scale_axes(data, factors, offset, output_shape=(5, 38, 41), output=np.float32)
        for workers in (2, 3, 8):
            np.testing.assert_array_equal(
                scale_axes(data, factors, offset, output_shape=(5, 38, 41), output=np.float32,
                           workers=workers), one)
