"""The peer wrappers of the benchmarks return em_to_lm in the package's convention.

A sign or direction slip there would make the comparison unfair, so each wrapper that is
installed registers a small pair from a start near the truth and must land near it.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from clemalign import Affine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
peers = pytest.importorskip("peers")


@pytest.fixture(scope="module")
def peer_case(small_pair):
    em, lm = peers.peer_inputs(small_pair.em, small_pair.lm.channel(0))
    c = small_pair.landmarks_em_um.mean(0)
    start = (Affine.from_translation(c + [1.0, -0.8, 0.0]) @ Affine.from_translation(-c)
             ) @ small_pair.em_to_lm
    return em, lm, start


def _tre(small_pair, tf):
    return np.linalg.norm(tf.apply(small_pair.landmarks_em_um) - small_pair.landmarks_lm_um,
                          axis=1).mean()


def test_point_map_fit_recovers_an_affine():
    a = Affine(np.array([[0.9, -0.2, 0.05, 3.0], [0.25, 1.1, 0.0, -2.0], [0.0, 0.1, 1.0, 0.5],
                         [0, 0, 0, 1]]))
    fit = peers.affine_from_point_map(lambda p: a.apply(p[None])[0], np.array([5.0, 6.0, 7.0]))
    np.testing.assert_allclose(fit.matrix, a.matrix, atol=1e-9)


@pytest.mark.slow
def test_sitk_peer_direction(small_pair, peer_case):
    em, lm, start = peer_case
    assert _tre(small_pair, start) > 1.0
    assert _tre(small_pair, peers.sitk_mi_affine(em, lm, start)) < 0.8


@pytest.mark.slow
@pytest.mark.parametrize("name", ["elastix", "ants"])
def test_optional_peer_direction(small_pair, peer_case, name):
    pytest.importorskip("itk" if name == "elastix" else "ants")
    em, lm, start = peer_case
    tf = peers.elastix_affine(em, lm, start) if name == "elastix" else \
        peers.ants_affine(em, lm, start)
    assert _tre(small_pair, tf) < 0.8
