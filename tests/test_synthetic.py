"""The simulator's ground truth must be right, or every accuracy number is wrong."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from clemalign import InputError, simulate_pair


def _sample(volume, points_xyz_um, channel=None):
    """Trilinear sample of a (channel of a) volume at physical points."""
    data = volume.data if channel is None else volume.data[channel]
    idx = volume.physical_to_index(points_xyz_um).T
    return ndi.map_coordinates(data.astype(np.float32), idx, order=1)


def test_shapes_sizes_and_channels(small_pair):
    pair = small_pair
    assert pair.em.data.dtype == np.uint8 and pair.em.data.ndim == 3
    assert pair.em.voxel_size_um == (0.05, 0.14, 0.14)
    assert pair.lm.data.dtype == np.uint16 and pair.lm.data.shape[0] == 2
    assert pair.lm.channel_names == ("mito", "autofluorescence")
    assert pair.lm.voxel_size_um == (0.6, 0.22, 0.22)
    assert pair.em.shape_zyx == (247, 271, 200)  # scale 0.3 of 903×666 laterally


def test_landmarks_are_consistent_with_truth(small_pair):
    pair = small_pair
    assert len(pair.landmarks_em_um) >= 5
    np.testing.assert_allclose(pair.em_to_lm.apply(pair.landmarks_em_um),
                               pair.landmarks_lm_um, atol=1e-9)
    # landmarks lie inside the EM field
    extent_xyz = np.asarray(pair.em.extent_um[::-1])
    assert np.all((pair.landmarks_em_um > 0) & (pair.landmarks_em_um < extent_xyz))


def test_fluorescence_is_bright_at_truth_mapped_landmarks(small_pair):
    """The LM label is high where the truth sends EM mitochondrion centres."""
    pair = small_pair
    mapped = pair.em_to_lm.apply(pair.landmarks_em_um)
    at_landmarks = _sample(pair.lm, mapped, channel=0)
    label = pair.lm.data[0].astype(np.float32)
    assert np.median(at_landmarks) > np.percentile(label, 99)
    # a wrong transform (shifted by 3 µm) must not look as good
    shifted = _sample(pair.lm, mapped + [3.0, 0, 0], channel=0)
    assert np.median(shifted) < np.median(at_landmarks) - 20


def test_em_is_dark_at_landmarks(small_pair):
    """EM landmarks sit on mitochondria, which are electron dense (dark)."""
    pair = small_pair
    em = pair.em.data.astype(np.float32)
    smooth = ndi.uniform_filter(em, 3)
    values = ndi.map_coordinates(smooth, pair.em.physical_to_index(pair.landmarks_em_um).T,
                                 order=1)
    assert np.median(values) < 130 < np.median(em)


def test_em_field_inside_lm_field(small_pair):
    pair = small_pair
    z, y, x = (np.asarray(pair.em.shape_zyx) - 1) * pair.em.voxel_size_um
    corners = np.array([[cx, cy, z / 2] for cx in (0, x) for cy in (0, y)])
    mapped = pair.em_to_lm.apply(corners)
    lm_x, lm_y = pair.lm.extent_um[2], pair.lm.extent_um[1]
    assert np.all((mapped[:, 0] > 0) & (mapped[:, 0] < lm_x))
    assert np.all((mapped[:, 1] > 0) & (mapped[:, 1] < lm_y))


def test_deterministic_and_seed_dependent():
    a = simulate_pair(seed=3, scale=0.15)
    b = simulate_pair(seed=3, scale=0.15)
    c = simulate_pair(seed=4, scale=0.15)
    np.testing.assert_array_equal(a.em.data, b.em.data)
    np.testing.assert_array_equal(a.lm.data, b.lm.data)
    np.testing.assert_array_equal(a.em_to_lm.matrix, b.em_to_lm.matrix)
    assert not np.array_equal(a.em_to_lm.matrix, c.em_to_lm.matrix)


def test_em_rendered_in_slabs_equals_the_whole_volume_painted():
    """The EM is painted a few planes at a time (issue 22: no whole float volume); every
    voxel's value depends on its own position only, so any slab size gives the same
    volume, noise included (drawn plane by plane in order)."""
    from clemalign.synthetic import SimulationConfig
    from clemalign.synthetic.em import render_em
    from clemalign.synthetic.monolayer import Grid, _draw_truth, make_cells

    cfg = SimulationConfig(seed=5, scale=0.15)
    rng = np.random.default_rng(cfg.seed)
    em_shape, lm_shape = cfg.scaled_shape(cfg.em_shape_zyx), cfg.scaled_shape(cfg.lm_shape_zyx)
    em_extent = np.asarray(em_shape[::-1], float) * np.asarray(cfg.em_voxel_size_um[::-1])
    lm_extent = np.asarray(lm_shape[::-1], float) * np.asarray(cfg.lm_voxel_size_um[::-1])
    floor_z = float(rng.uniform(0.6, 1.2))
    cells = make_cells(rng, cfg, lm_extent[:2], floor_z, float(lm_extent[2]) - floor_z - 1.0)
    em_to_lm, _ = _draw_truth(rng, cfg, em_extent, lm_extent, cells, floor_z)
    grid = Grid(em_shape, cfg.em_voxel_size_um, em_to_lm.matrix)
    volumes = [render_em(cells, grid, cfg, np.random.default_rng(7), slab_planes=n)
               for n in (7, 16, em_shape[0])]
    assert volumes[0].std() > 5  # cells were drawn
    for other in volumes[1:]:
        np.testing.assert_array_equal(volumes[0], other)


@pytest.mark.parametrize("angle, mirror", [(40.0, False), (-120.0, True)])
def test_rotation_and_mirror_are_in_the_truth(angle, mirror):
    pair = simulate_pair(seed=1, scale=0.15, rotation_deg=angle, mirror=mirror,
                         max_tilt_deg=0.0, max_scale_change=0.0)
    lin = pair.em_to_lm.linear
    assert np.sign(np.linalg.det(lin)) == (-1 if mirror else 1)
    x_axis = lin @ [1, 0, 0]
    x_axis *= -1 if mirror else 1
    assert np.degrees(np.arctan2(x_axis[1], x_axis[0])) == pytest.approx(angle, abs=1e-9)
    assert pair.parameters["rotation_deg"] == angle


def test_bad_config():
    with pytest.raises(InputError, match="^scale: "):
        simulate_pair(scale=0.0)
