"""End to end on simulated monolayers turned, mirrored, seen from the other side or
tilted: the orientation is found, not assumed (TRE against the truth)."""

import numpy as np
import pytest

from clemalign import Volume, simulate_pair
from clemalign.evaluation import target_registration_error
from clemalign.pipeline import RegistrationConfig, register
from clemalign.registration import mirror_x

# the label channel: these tests measure the registration, not the channel choice
LABEL = RegistrationConfig(lm_channel="mito")


def _tre(result, pair):
    return target_registration_error(result.em_to_lm, pair.landmarks_em_um,
                                      pair.landmarks_lm_um).mean()


def test_mirror_map_is_an_involution():
    vol = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), (0.5, 0.2, 0.3),
                 (1.0, 2.0, 3.0))
    flip = mirror_x(vol)
    np.testing.assert_allclose((flip @ flip).matrix, np.eye(4), atol=1e-12)
    # voxel i' of the reversed copy holds voxel nx-1-i' of the original
    flipped = vol.with_data(vol.data[:, :, ::-1])
    p = flipped.index_to_physical(np.array([[1.0, 2.0, 0.0]]))  # (k, j, i') = (1, 2, 0)
    k, j, i = np.round(vol.physical_to_index(flip.apply(p))[0]).astype(int)
    assert flipped.data[1, 2, 0] == vol.data[k, j, i]


@pytest.fixture(scope="module")
def mirrored_pair():
    """Small pair, EM mirrored and rotated far beyond the old ±30° window."""
    return simulate_pair(seed=7, scale=0.3, rotation_deg=110.0, mirror=True)


@pytest.mark.slow
def test_any_rotation_and_mirror_found(mirrored_pair):
    result = register(mirrored_pair.em, mirrored_pair.lm, config=LABEL)
    assert result.prealign.mirrored and result.fine.mirrored
    assert np.linalg.det(result.em_to_lm.linear) < 0
    assert abs(result.prealign.angle_deg - 110.0) < 5.0
    assert _tre(result, mirrored_pair) < 0.5
    assert result.confidence["verdict"] == "ok"
    assert result.prealign.orientation["hypotheses"]  # the scan ran and proposed


@pytest.mark.slow
def test_restricted_search_cannot_fit_a_mirror_and_says_so(mirrored_pair):
    from dataclasses import replace

    base = LABEL
    config = replace(base, prealign=replace(base.prealign, orientation=replace(
        base.prealign.orientation, max_rotation_deg=30.0, mirror=False)))
    result = register(mirrored_pair.em, mirrored_pair.lm, config=config)
    assert not result.prealign.orientation  # no scan when restricted to the window
    assert np.linalg.det(result.em_to_lm.linear) > 0
    assert _tre(result, mirrored_pair) > 2.0
    assert result.confidence["verdict"] != "ok"


def test_3d_stage_registers_from_a_mirrored_start(mirrored_pair):
    from clemalign.registration import register_3d
    from clemalign.transforms import Affine

    pair = mirrored_pair
    # truth moved by 1.5 µm in x and 2° about z: a mirrored start (det < 0)
    c = pair.landmarks_em_um.mean(0)
    cz, sz = np.cos(np.radians(2)), np.sin(np.radians(2))
    nudge = (Affine.from_translation(c + [1.5, 0, 0])
             @ Affine.from_linear_translation(np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]),
                                              [0, 0, 0]) @ Affine.from_translation(-c))
    start = nudge @ pair.em_to_lm
    assert np.linalg.det(start.linear) < 0
    lm = pair.lm.channel(0)
    fine = register_3d(pair.em, lm, start)
    assert fine.mirrored
    tre = target_registration_error(fine.em_to_lm, pair.landmarks_em_um, pair.landmarks_lm_um)
    assert tre.mean() < 0.5


@pytest.mark.slow
def test_monolayer_seen_from_the_other_side_gets_z_reversed():
    """x mirror + reversed z (a 180° turn about y): the XY search sees a mirror, the 3D
    stage must find that z runs the other way (measured 0.05 µm)."""
    pair = simulate_pair(seed=7, scale=0.3, rotation_deg=120.0, mirror=True, flip_z=True)
    result = register(pair.em, pair.lm, config=LABEL)
    assert result.prealign.mirrored
    assert np.linalg.det(result.em_to_lm.linear) > 0  # a turn, no mirror left
    assert result.em_to_lm.linear[2, 2] < -0.8  # z reversed
    chosen = next(s for s in result.fine.starts if s["chosen"])
    assert chosen["reversed_z"]
    assert chosen["mi_by_z_direction"]["reversed_z"] > chosen["mi_by_z_direction"]["direct"]
    assert _tre(result, pair) < 0.4
    assert result.confidence["verdict"] == "ok"


@pytest.mark.slow
def test_tilted_monolayer_block_is_found_by_the_tilt_search():
    """An EM block cut 8° off the coverslip plane (measured 0.10 µm)."""
    pair = simulate_pair(seed=7, scale=0.3, tilt_deg=(0.0, 8.1))
    result = register(pair.em, pair.lm, config=LABEL)
    tilt = result.fine.z_search["tilt_deg"]
    assert abs(tilt[1] - 8.1) < 3.0 and abs(tilt[0]) < 3.0
    assert _tre(result, pair) < 0.4
    assert result.confidence["verdict"] == "ok"
