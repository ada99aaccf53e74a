"""LoG transform and automatic scale selection against known answers."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from clemalign import InputError
from clemalign.evaluation import sample_on_em_plane
from clemalign.representation import (
    default_polarity,
    estimate_noise_sd,
    log_transform,
    select_log_scale,
)


def blob_image(shape, radius_px, n, seed, *, kind="disk", noise=0.1, blur_px=0.7):
    """Non-overlapping bright blobs of a given radius at random positions, plus noise.

    Disks are anti-aliased and blurred by ``blur_px`` (every microscope image is
    band-limited); Gaussian blobs of "radius" r have sigma r/√d, like a disk.
    """
    rng = np.random.default_rng(seed)
    shape = np.asarray(shape)
    img = np.zeros(tuple(shape), np.float32)
    grids = np.indices(tuple(shape), dtype=np.float32)
    centres = []
    for _ in range(5000):
        if len(centres) == n:
            break
        c = rng.uniform(2 * radius_px, shape - 2 * radius_px)
        if any(np.linalg.norm(c - o) < 2.5 * radius_px for o in centres):
            continue
        centres.append(c)
        d = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True)))
        if kind == "disk":
            img = np.maximum(img, np.clip(radius_px - d + 0.5, 0, 1))
        else:
            img += np.exp(-0.5 * d**2 / (radius_px**2 / len(shape)))
    if kind == "disk" and blur_px:
        img = ndi.gaussian_filter(img, blur_px)
    return img + noise * rng.standard_normal(img.shape).astype(np.float32)


@pytest.mark.parametrize("kind", ["disk", "gauss"])
@pytest.mark.parametrize("radius_px", [3.0, 5.0, 9.0])
def test_2d_blob_radius(kind, radius_px):
    img = blob_image((320, 320), radius_px, 30, int(radius_px * 10), kind=kind)
    sel = select_log_scale(img, 0.1, polarity="bright")
    assert sel.sigma_um * np.sqrt(2) == pytest.approx(radius_px * 0.1, rel=0.15)
    assert sel.blob_counts[sel.selected_index] >= 20
    assert sel.blob_radius_um == pytest.approx(sel.sigma_um * np.sqrt(2))


@pytest.mark.parametrize("radius_px", [3.0, 5.0])
def test_3d_sphere_radius(radius_px):
    img = blob_image((48, 80, 80), radius_px, 12, int(radius_px * 10))
    sel = select_log_scale(img, 0.2, polarity="bright")
    assert sel.sigma_um * np.sqrt(3) == pytest.approx(radius_px * 0.2, rel=0.15)


def test_3d_anisotropic_voxels():
    """Spheres of radius 1 µm sampled with 0.3 µm in z and 0.1 µm in y, x."""
    rng = np.random.default_rng(3)
    shape, spacing = np.array([30, 120, 120]), np.array([0.3, 0.1, 0.1])
    phys = np.indices(tuple(shape), dtype=np.float32) * spacing[:, None, None, None]
    img = np.zeros(tuple(shape), np.float32)
    for c in rng.uniform([2.5, 2, 2], shape * spacing - [2.5, 2, 2], (6, 3)):
        d = np.sqrt(sum((p - ci) ** 2 for p, ci in zip(phys, c, strict=True)))
        img = np.maximum(img, np.clip((1.0 - d) / 0.3 + 0.5, 0, 1))  # edge ~ a z voxel
    img += 0.05 * rng.standard_normal(img.shape).astype(np.float32)
    sel = select_log_scale(img, spacing, polarity="bright")
    assert sel.sigma_um * np.sqrt(3) == pytest.approx(1.0, rel=0.15)


def binary_blobs(shape, radius_px, n, seed, *, noise=0.0, touching=0.25, fill=0.1):
    """Hard-edged objects: binary disks (2D) or spheres (3D), not anti-aliased or blurred.

    ``n`` objects of one radius in an image of the given shape (``fill`` only sets how
    many placements are tried): each, with probability ``touching``, touches an earlier
    one, else lies at a random place; objects never overlap.  Contrast 1, plus Gaussian
    noise of standard deviation ``noise``.  Returns the image and the number placed.
    """
    rng = np.random.default_rng(seed)
    shape = np.asarray(shape)
    centres = np.empty((0, len(shape)))
    for _ in range(200 * n):
        if len(centres) == n:
            break
        if len(centres) and rng.uniform() < touching:
            direction = rng.standard_normal(len(shape))
            c = centres[rng.integers(len(centres))] + 2 * radius_px * direction / np.linalg.norm(
                direction)
        else:
            c = rng.uniform(radius_px + 1, shape - radius_px - 1)
        inside = np.all((c >= radius_px + 1) & (c <= shape - radius_px - 1))
        if inside and np.all(np.linalg.norm(centres - c, axis=1) >= 2 * radius_px - 1e-6):
            centres = np.vstack([centres, c])
    grid = np.indices(tuple(shape), dtype=np.float32).reshape(len(shape), -1).T
    dist, _ = cKDTree(centres).query(grid)  # to the nearest centre: objects don't overlap
    img = (dist <= radius_px).reshape(tuple(shape)).astype(np.float32)
    return img + noise * rng.standard_normal(img.shape).astype(np.float32), len(centres)


def _side(n, radius_px, ndim, fill=0.1):
    """Image side (px) for ``n`` objects to cover about ``fill`` of the image."""
    volume = np.pi * radius_px**2 if ndim == 2 else 4 / 3 * np.pi * radius_px**3
    return int(np.ceil((n * volume / fill) ** (1 / ndim)))


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.2])
@pytest.mark.parametrize(("radius_um", "pixel_um"),
                         [(0.6, 0.1), (0.6, 0.25), (1.2, 0.15), (2.5, 0.25), (2.5, 0.1)])
def test_2d_hard_edged_disks(radius_um, pixel_um, noise):
    """Binary disks: the pixel staircase of their edges must not outnumber them (issue 15)."""
    r = radius_um / pixel_um
    img, n = binary_blobs((_side(24, r, 2),) * 2, r, 24, int(10 * r + 100 * noise), noise=noise)
    sel = select_log_scale(img, pixel_um, polarity="bright")
    assert sel.sigma_um == pytest.approx(radius_um / np.sqrt(2), rel=0.15)
    assert sel.blob_counts[sel.selected_index] >= n / 2


@pytest.mark.parametrize("noise", [0.0, 0.2])
@pytest.mark.parametrize(("radius_um", "pixel_um"), [(0.6, 0.15), (1.0, 0.2), (1.5, 0.25)])
def test_3d_hard_edged_spheres(radius_um, pixel_um, noise):
    r = radius_um / pixel_um
    img, n = binary_blobs((_side(16, r, 3, fill=0.08),) * 3, r, 16, int(10 * r + 100 * noise),
                          noise=noise)
    sel = select_log_scale(img, pixel_um, polarity="bright")
    assert sel.sigma_um == pytest.approx(radius_um / np.sqrt(3), rel=0.15)
    assert sel.blob_counts[sel.selected_index] >= n / 2


def test_dark_hard_edged_disks():
    """EM-like: dark binary organelles on a lighter background, counted as dark blobs."""
    img, _ = binary_blobs((300, 300), 8.0, 30, 5, noise=0.1, touching=0.3)
    sel = select_log_scale(1.0 - img, 0.1, polarity="dark")
    assert sel.sigma_um == pytest.approx(0.8 / np.sqrt(2), rel=0.15)


def test_one_hard_edged_disk_is_one_blob():
    """The staircase maxima inside a disk are nested in its blob and not counted."""
    img, _ = binary_blobs((160, 160), 25.0, 1, 0)
    sel = select_log_scale(img, 1.0)
    assert sel.blob_counts.sum() == 1
    assert sel.nested_counts.sum() > 20  # what the count would otherwise have included
    assert sel.sigma_um == pytest.approx(25.0 / np.sqrt(2), rel=0.05)
    assert sel.to_dict()["nested_counts"] == sel.nested_counts.tolist()


def _render_gaussian_blobs(pixel_um, extent_um=40.0, sigma_um=0.7, seed=0):
    """The same physical scene (Gaussian blobs of sigma 0.7 µm) at a given pixel size."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(3, extent_um - 3, (40, 2))
    coords = (np.arange(int(extent_um / pixel_um)) + 0.5) * pixel_um
    y, x = np.meshgrid(coords, coords, indexing="ij")
    img = np.zeros(y.shape, np.float32)
    for cy, cx in centres:
        img += np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / sigma_um**2)
    return img + 0.05 * rng.standard_normal(img.shape).astype(np.float32)


def test_same_scene_two_pixel_sizes_same_sigma_um():
    fine = select_log_scale(_render_gaussian_blobs(0.1), 0.1)
    coarse = select_log_scale(_render_gaussian_blobs(0.23), 0.23)
    assert fine.sigma_um == pytest.approx(coarse.sigma_um, rel=0.15)
    assert fine.sigma_um == pytest.approx(0.7, rel=0.15)


def test_log_of_gaussian_blob_matches_theory_with_anisotropic_pixels():
    """∇²(G_s * A·exp(-r²/2t²)) at the centre is -2·A·t²/(t²+s²)² in 2D (per µm²)."""
    t, s, amplitude = 1.0, 0.8, 3.0
    spacing = np.array([0.05, 0.08])
    coords = [(np.arange(n) - n // 2) * h for n, h in zip((161, 101), spacing, strict=True)]
    y, x = np.meshgrid(*coords, indexing="ij")
    img = amplitude * np.exp(-0.5 * (x * x + y * y) / t**2)
    for fast in (False, True):
        out = log_transform(img, s, spacing, fast=fast)
        expected = -2 * amplitude * t**2 / (t**2 + s**2) ** 2
        assert out[80, 50] == pytest.approx(expected, rel=0.01)
        assert out.dtype == np.float32


def test_fast_path_matches_full_resolution():
    rng = np.random.default_rng(1)
    img = ndi.gaussian_filter(rng.standard_normal((480, 480)), 3).astype(np.float32)
    for sigma_px in (5.0, 12.0):
        m = int(4 * sigma_px)
        exact = log_transform(img, sigma_px, 1.0, fast=False)[m:-m, m:-m]
        fast = log_transform(img, sigma_px, 1.0, fast=True)[m:-m, m:-m]
        rel = np.sqrt(np.mean((fast - exact) ** 2) / np.mean(exact**2))
        assert rel < 0.04


def test_axes_filters_slices_independently():
    rng = np.random.default_rng(2)
    stack = rng.standard_normal((3, 40, 50)).astype(np.float32)
    out = log_transform(stack, 0.5, (1.0, 0.1, 0.1), axes=(1, 2))
    np.testing.assert_allclose(out[1], log_transform(stack[1], 0.5, (0.1, 0.1)), atol=1e-5)


def test_per_slice_adds_counts():
    img = blob_image((200, 200), 4.0, 15, 4)
    single = select_log_scale(img, 0.1)
    double = select_log_scale(np.stack([img, img]), (1.0, 0.1, 0.1), per_slice=True)
    np.testing.assert_array_equal(double.blob_counts, 2 * single.blob_counts)
    assert double.sigma_um == pytest.approx(single.sigma_um)
    assert double.n_dims == 2


def test_polarity():
    img = blob_image((200, 200), 4.0, 15, 5)
    bright = select_log_scale(img, 0.1, polarity="bright")
    dark_of_inverted = select_log_scale(-img, 0.1, polarity="dark")
    np.testing.assert_array_equal(bright.blob_counts, dark_of_inverted.blob_counts)
    # dark "blobs" are only the rings around the bright disks, fewer than the disks
    dark = select_log_scale(img, 0.1, polarity="dark")
    assert dark.blob_counts[bright.selected_index] < 0.5 * bright.blob_counts.max()
    assert default_polarity("em") == "dark" and default_polarity("lm") == "bright"


def test_noise_only_has_no_blobs():
    noise = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    assert select_log_scale(noise, 1.0).blob_counts.sum() <= 2


def test_noise_estimate():
    rng = np.random.default_rng(4)
    smooth = ndi.gaussian_filter(rng.standard_normal((300, 300)), 8) * 50
    img = smooth + 2.0 * rng.standard_normal(smooth.shape)
    assert estimate_noise_sd(img) == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("image, message", [
    (np.full((20, 20), 3.0), "constant"),
    (np.zeros((0, 20)), "empty"),
    (np.where(np.eye(20) > 0, np.nan, 1.0), "20 pixels are NaN or infinite"),
    (np.zeros(10), "2D or 3D"),
])
def test_bad_images(image, message):
    with pytest.raises(InputError, match=message):
        log_transform(image, 1.0, 1.0)
    with pytest.raises(InputError, match=message):
        select_log_scale(image, 1.0)


def test_bad_parameters():
    img = blob_image((40, 40), 3.0, 2, 0)
    with pytest.raises(InputError, match="sigma_um"):
        log_transform(img, -1.0, 1.0)
    with pytest.raises(InputError, match="spacing_um"):
        log_transform(img, 1.0, (1.0, 2.0, 3.0))
    with pytest.raises(InputError, match="polarity"):
        select_log_scale(img, 1.0, polarity="both")


# ------------------------------------------------------------ simulated CLEM
def _common_grid_samples(pair, em_image, lm_image, z_index, pixel_um):
    """Sample an EM-slice image and an LM-MIP image on one grid over the EM field."""
    return sample_on_em_plane(em_image, pair.em.voxel_size_um[1:], lm_image,
                              pair.lm.voxel_size_um[1:], pair.em_to_lm,
                              z_um=z_index * pair.em.voxel_size_um[0], pixel_um=pixel_um)


def test_simulated_pair_scales_and_correlation(small_pair):
    pair = small_pair
    em, lm = pair.em, pair.lm
    mip = lm.data[0].max(axis=0).astype(np.float32)
    lm_sel = select_log_scale(mip, lm.voxel_size_um[1:], polarity=default_polarity("lm"))
    slices = np.linspace(0, em.shape_zyx[0] - 1, 14).astype(int)[1:-1]
    em_sel = select_log_scale(em.data[slices].astype(np.float32), em.voxel_size_um,
                              polarity=default_polarity("em"), per_slice=True)
    # both pick organelle-sized blobs (mitochondria), within a factor 2 in µm
    assert 0.5 < em_sel.sigma_um / lm_sel.sigma_um < 2.0
    assert 0.1 < em_sel.sigma_um < 0.5 and 0.1 < lm_sel.sigma_um < 0.5

    # an EM slice 2.5 µm above the coverslip against the LM MIP, at the LM pixel size
    z = int(round((pair.parameters["coverslip_z_um"] + 2.5 - pair.em_to_lm.translation_um[2])
                  / em.voxel_size_um[0]))
    em_slice = em.data[z].astype(np.float32)
    pix = lm.voxel_size_um[1]
    raw = _common_grid_samples(pair, ndi.gaussian_filter(em_slice, 0.8), mip, z, pix)
    corr_raw = np.corrcoef(-raw[0], raw[1])[0, 1]  # EM organelles dark, LM label bright

    def corr_log(sigma_em, sigma_lm):
        e, m = _common_grid_samples(pair, log_transform(em_slice, sigma_em, em.voxel_size_um[1:]),
                                    log_transform(mip, sigma_lm, lm.voxel_size_um[1:]), z, pix)
        return np.corrcoef(e, -m)[0, 1]  # dark-blob LoG > 0, bright-blob LoG < 0

    # measured on this pair: raw 0.43; LoG at cell scale 0.78 (2.5 µm): the common
    # representation at the cell scale agrees across modalities better than raw intensities
    assert corr_log(2.5, 2.5) > corr_raw + 0.25
