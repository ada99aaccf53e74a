"""3D registration and the orchestrator on small simulated pairs (TRE against the truth)."""

import numpy as np
import pytest

from clemalign import Volume, simulate_pair
from clemalign.evaluation import target_registration_error
from clemalign.outputs import resample_lm_to_em
from clemalign.pipeline import RegistrationConfig, register
from clemalign.registration import Registration3DConfig, register_3d, working_volume
from clemalign.transforms import Affine

# the label channel: these tests measure the registration, not the channel choice
LABEL = RegistrationConfig(lm_channel="mito")


def _tre(result, pair):
    return target_registration_error(result.em_to_lm, pair.landmarks_em_um,
                                      pair.landmarks_lm_um).mean()


@pytest.fixture(scope="module")
def stretched_pair():
    """Small pair with up to 8 % per-axis scale: a rigid transform cannot fit it."""
    return simulate_pair(seed=3, scale=0.3, max_scale_change=0.08)


@pytest.fixture(scope="module")
def affine_result(stretched_pair):
    return register(stretched_pair.em, stretched_pair.lm, config=LABEL)


def test_working_volume_keeps_positions():
    data = np.zeros((60, 50, 40), np.float32)
    data[30:36, 20:23, 11:14] = 1.0
    vol = Volume(data, (0.05, 0.14, 0.14), (3.0, -2.0, 7.0))
    work = working_volume(vol, (0.3, 0.44, 0.44))

    def centroid(v):
        kji = np.array(np.nonzero(v.data > 0), float)
        w = v.data[v.data > 0]
        return v.index_to_physical((kji * w).sum(1) / w.sum())

    assert work.voxel_size_um[0] == pytest.approx(0.3)
    assert work.voxel_size_um[1] == pytest.approx(0.44)
    np.testing.assert_allclose(centroid(work), centroid(vol), atol=0.03)
    cropped = working_volume(vol, (0.3, 0.44, 0.44), (slice(24, 60), slice(10, 50),
                                                      slice(0, 40)))
    np.testing.assert_allclose(centroid(cropped), centroid(vol), atol=0.03)


@pytest.mark.slow
def test_affine_registration_tre(affine_result, stretched_pair):
    result = affine_result
    # measured 0.13 µm (0.9 EM px); rigid only: 0.71 µm
    assert _tre(result, stretched_pair) < 0.4
    assert [s.name for s in result.fine.stages] == [
        "rigid", "affine", "affine at σ 0.5 µm (z 1 µm)", "affine at σ 0.5 µm"]
    assert result.fine.metric_final < result.fine.metric_initial  # MI went up
    assert result.confidence["verdict"] == "ok"
    assert result.confidence["score"] >= 0.5
    np.testing.assert_allclose(result.lm_to_em.matrix @ result.em_to_lm.matrix, np.eye(4),
                               atol=1e-9)


@pytest.mark.slow
def test_affine_gain_over_its_rigid_stage(affine_result, stretched_pair):
    rigid = affine_result.fine.stages[0]
    assert rigid.name == "rigid"
    linear = rigid.em_to_lm.linear
    np.testing.assert_allclose(linear @ linear.T, np.eye(3), atol=1e-9)  # a rotation
    tre_rigid = target_registration_error(rigid.em_to_lm, stretched_pair.landmarks_em_um,
                                          stretched_pair.landmarks_lm_um).mean()
    assert tre_rigid < 1.5
    assert _tre(affine_result, stretched_pair) < 0.8 * tre_rigid  # the truth has anisotropic scale
    # an XY pre-alignment: how EM z maps stays at the rigid result (see affine_z)
    affine = affine_result.fine.stages[1]
    assert affine.held == ("xz", "yz", "zz")
    np.testing.assert_allclose(affine.em_to_lm.linear[:, 2], linear[:, 2], atol=1e-12)


@pytest.mark.slow
def test_rigid_model_runs_the_rigid_stage_only(affine_result, stretched_pair):
    # from the rigid stage's own result, z known to ±1 µm: only the model is under test
    fine = register_3d(stretched_pair.em, stretched_pair.lm.channel("mito"),
                       affine_result.fine.stages[0].em_to_lm, z_range_um=1.0,
                       config=Registration3DConfig(model="rigid"))
    assert [s.name for s in fine.stages] == ["rigid"]
    linear = fine.em_to_lm.linear
    np.testing.assert_allclose(linear @ linear.T, np.eye(3), atol=1e-9)
    assert _tre(fine, stretched_pair) < 1.5


@pytest.mark.slow
def test_lm_of_another_sample_is_not_ok(small_pair):
    # EM of one simulated sample, LM of another
    other = simulate_pair(seed=11, scale=0.3)
    swapped = register(small_pair.em, other.lm)
    assert swapped.confidence["verdict"] != "ok"
    # 0.11 before issue 22's central-difference gradients, 0.15 since; registered pairs
    # reach 0.26 and more (benchmarks/results/orientation_confidence*.md)
    assert swapped.confidence["evidence"]["mi_contrast"] < 0.2


def test_affine_stage_not_run_without_overlap(stretched_pair):
    """A rigid result that leaves almost no EM voxel inside the LM (an unrelated LM can)
    must not crash ITK's histogram: the affine stage is reported as not run."""
    pair = stretched_pair
    lm = pair.lm.channel(0) if pair.lm.data.ndim == 4 else pair.lm
    # the EM block 2 µm above the LM stack's top plane
    far = Affine.from_translation([0.0, 0.0, (lm.extent_um[0] + pair.em.extent_um[0]) / 2 + 2.0]
                                  ) @ pair.em_to_lm
    result = register_3d(pair.em, lm, far, z_range_um=1.0,
                         config=Registration3DConfig(rigid_iterations=5))
    affine = result.stages[-1]
    assert affine.name == "affine" and not affine.kept
    assert affine.stop_condition.startswith("not run")
    np.testing.assert_allclose(result.em_to_lm.matrix, result.stages[0].em_to_lm.matrix)
    # forcing the same path on a pair that overlaps
    near = register_3d(pair.em, lm, pair.em_to_lm, z_range_um=1.0, config=Registration3DConfig(
        rigid_iterations=5, min_overlap_fraction=1.01))
    assert near.stages[-1].stop_condition.startswith("not run")


def test_stage_that_loses_the_overlap_reports_it():
    """SimpleITK raises when every sample maps outside the LM: the stage keeps its start
    and says so (``lost_overlap``), it does not pass for a converged result."""
    from clemalign.registration.stages import StageImages, run_stage
    from clemalign.volume import to_sitk

    rng = np.random.default_rng(0)
    fixed = Volume(rng.random((16, 24, 24)).astype(np.float32), (1.0, 1.0, 1.0))
    moving = Volume(rng.random((16, 24, 24)).astype(np.float32), (1.0, 1.0, 1.0))
    images = StageImages(to_sitk(fixed), to_sitk(moving), fixed, moving,
                         np.array([12.0, 12.0, 8.0]))
    far = Affine.from_translation([500.0, 0.0, 0.0])
    stage = run_stage("rigid", images, far, Registration3DConfig(
        samples=2000, shrink_factors=(1,), smoothing_sigmas_um=(0.0,)))
    assert stage.lost_overlap and stage.to_dict()["lost_overlap"]
    assert stage.stop_condition.startswith("lost the overlap")
    np.testing.assert_allclose(stage.em_to_lm.matrix, far.matrix, atol=1e-9)


@pytest.mark.slow
def test_resampled_lm_lands_on_em_landmarks(affine_result, stretched_pair):
    pair = stretched_pair
    overlay = resample_lm_to_em(pair.lm, pair.em, affine_result.em_to_lm)
    assert overlay.data.shape == (2,) + pair.em.shape_zyx
    assert overlay.voxel_size_um == pair.em.voxel_size_um
    mito = overlay.data[0].astype(float)
    kji = np.round(pair.em.physical_to_index(pair.landmarks_em_um)).astype(int)
    at_landmarks = mito[kji[:, 0], kji[:, 1], kji[:, 2]]
    # the mitochondrial label sits on the EM mitochondria
    assert np.median(at_landmarks) > np.percentile(mito, 95)


@pytest.mark.slow
def test_inverted_em_and_label_in_channel_1_found_without_being_told(affine_result,
                                                                      stretched_pair):
    """Bright membranes and organelles (raw backscatter) and the label in the LM's second
    channel, neither told: both found, and the result is the original's."""
    data = stretched_pair.em.data
    inverted = stretched_pair.em.with_data((255 - data).astype(data.dtype))
    other = simulate_pair(seed=11, scale=0.3).lm.data[0]
    label = stretched_pair.lm.data[0]
    z, y, x = (min(a, b) for a, b in zip(other.shape, label.shape, strict=True))
    lm = Volume(np.stack([np.resize(other[:z, :y, :x], label.shape), label]),
                stretched_pair.lm.voxel_size_um, stretched_pair.lm.origin_xyz_um,
                ("other sample", "mito"))
    result = register(inverted, lm)
    assert result.lm_channel == 1
    assert [c.matches for c in result.channel_scores] == [True, False]
    assert result.scales.em_polarity == "bright" and result.scales.em_polarity_how == "found"
    assert result.prealign.polarity.em == "bright"
    assert abs(_tre(result, stretched_pair) - _tre(affine_result, stretched_pair)) < 0.05


_REPEAT_SCRIPT = """
import json
from clemalign import simulate_pair
from clemalign.registration import register_3d
from clemalign.transforms import Affine
pair = simulate_pair(seed=3, scale=0.3, max_scale_change=0.08)
lm = pair.lm.channel(0) if pair.lm.data.ndim == 4 else pair.lm
start = Affine.from_translation([0.8, -0.6, 0.4]) @ pair.em_to_lm
result = register_3d(pair.em, lm, start, z_range_um=2.0)
print(json.dumps(result.em_to_lm.to_list()))
"""


@pytest.mark.slow
def test_3d_stage_gives_the_same_result_in_another_process():
    """Same input, same output, run after run: ITK's multi-threaded Mattes MI is not
    reproducible (TREs 0.13–0.20 µm apart on one input), so the stage runs it on one
    thread.  Within one process it repeated even before; a new process did not."""
    import json
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _REPEAT_SCRIPT], capture_output=True,
                           text=True, check=True).stdout for _ in range(3)]
    matrices = [np.array(json.loads(out.strip().splitlines()[-1])) for out in runs]
    for other in matrices[1:]:
        np.testing.assert_array_equal(other, matrices[0])


def test_affine_stage_holds_its_z_terms_when_asked():
    """``affine_z="rigid"``: the z row and column stay at the start; ``"em_z"``: the z
    column (how EM z maps; a monolayer does not fix it); ``"free"`` fits them (here a
    10 % z stretch)."""
    from scipy import ndimage

    from clemalign.registration.config import AFFINE_EM_Z_TERMS, AFFINE_Z_TERMS
    from clemalign.registration.stages import StageImages, run_stage
    from clemalign.volume import to_sitk

    rng = np.random.default_rng(1)
    data = ndimage.gaussian_filter(rng.random((40, 40, 40)), 2.0).astype(np.float32)
    fixed = Volume(data, (0.5, 0.5, 0.5))
    # moving = fixed stretched 10 % along z about the centre
    zz = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1.1]])
    centre = np.array([9.75, 9.75, 9.75])
    stretch = Affine.from_linear_translation(zz, centre - zz @ centre)
    moving = Volume(ndimage.affine_transform(
        data, np.diag([1 / 1.1, 1, 1]), offset=(19.5 - 19.5 / 1.1, 0, 0), order=1
    ).astype(np.float32), (0.5, 0.5, 0.5))
    images = StageImages(to_sitk(fixed), to_sitk(moving), fixed, moving, centre)
    start = Affine.identity()
    base = dict(samples=20_000, shrink_factors=(1,), smoothing_sigmas_um=(0.0,))
    held = run_stage("affine", images, start, Registration3DConfig(affine_z="rigid", **base))
    em_z = run_stage("affine", images, start, Registration3DConfig(affine_z="em_z", **base))
    free = run_stage("affine", images, start, Registration3DConfig(affine_z="free", **base))
    plane = run_stage("affine", images, start, Registration3DConfig(affine_z="in_plane", **base))
    assert held.held == AFFINE_Z_TERMS and em_z.held == AFFINE_EM_Z_TERMS and free.held == ()
    assert plane.held == (*AFFINE_Z_TERMS, "tz")
    # in-plane: LM z of every EM point is its start's (z row untouched, z translation too)
    np.testing.assert_array_equal(plane.em_to_lm.matrix[2], start.matrix[2])
    lin = held.em_to_lm.linear
    np.testing.assert_array_equal(lin[2, :], [0, 0, 1])
    np.testing.assert_array_equal(lin[:, 2], [0, 0, 1])
    np.testing.assert_array_equal(em_z.em_to_lm.linear[:, 2], [0, 0, 1])
    assert free.em_to_lm.linear[2, 2] == pytest.approx(stretch.linear[2, 2], abs=0.01)
    with pytest.raises(Exception, match="affine_z"):
        Registration3DConfig(affine_z="z")
    with pytest.raises(Exception, match="final_affine_z"):
        Registration3DConfig(final_affine_z="z")


@pytest.mark.slow
def test_final_levels_refine_from_the_affine_result(stretched_pair):
    """``final_levels_um``: affine levels at finer LoGs after the usual stages, each from
    the one before and kept only if it raises the MI at its own scale; the confidence
    evidence is the stages' above."""
    from dataclasses import replace

    def run(levels):
        config = replace(LABEL, fine=replace(LABEL.fine, final_levels_um=levels))
        return register(stretched_pair.em, stretched_pair.lm, config=config)

    without, result = run(()), run(((1.0, 0.5), (0.5, 0.5)))
    names = [s.name for s in result.fine.stages]
    assert names == ["rigid", "affine", "affine at σ 0.5 µm (z 1 µm)", "affine at σ 0.5 µm"]
    assert result.fine.mutual_information_perturbed == \
        without.fine.mutual_information_perturbed
    assert result.confidence["verdict"] == without.confidence["verdict"]
    np.testing.assert_allclose(result.fine.stages[1].em_to_lm.matrix,
                               without.em_to_lm.matrix, atol=1e-12)
    expected = result.fine.stages[1].em_to_lm  # each level from the last kept result
    for stage in result.fine.stages[2:]:
        expected = stage.em_to_lm if stage.kept else expected
    np.testing.assert_allclose(result.em_to_lm.matrix, expected.matrix, atol=1e-12)
    # measured: 0.111 µm without the levels, 0.172 µm with them (0.100 / 0.112 before
    # issue 22's central-difference gradients): this small pair with 8 % scale gains
    # nothing; the suites in benchmarks/results/final_level_ablation_*.md do
    assert _tre(result, stretched_pair) < _tre(without, stretched_pair) + 0.1
    for bad in (((0.0, 0.5),), ((1.0,),)):
        with pytest.raises(Exception, match="final_levels_um"):
            Registration3DConfig(final_levels_um=bad)


def test_one_worker_gives_the_result_of_several(stretched_pair):
    """With several workers the final levels' EM side is computed on a thread while the
    rigid and affine stages run (issue 22); with one it is computed in turn.  Same
    numbers either way."""
    one, two = (register(stretched_pair.em, stretched_pair.lm, config=LABEL, workers=n)
                for n in (1, 2))
    np.testing.assert_array_equal(one.em_to_lm.matrix, two.em_to_lm.matrix)
    assert [s.name for s in one.fine.stages] == [s.name for s in two.fine.stages]
    assert len(one.fine.stages) == 4 and "final levels" in one.fine.timings_s


@pytest.mark.parametrize("keep_first", [False, True])
def test_final_level_run_ahead_gives_the_levels_in_turn(stretched_pair, monkeypatch,
                                                        keep_first):
    """Issue 22: while a final level runs, the next one runs on a thread from the same
    start; its result is used when the level is not kept and it is stopped when the
    level is.  Either way the stages are those of the levels run in turn (one worker)."""
    from dataclasses import replace

    import clemalign.registration.core as core

    captured = {}
    monkeypatch.setattr(core, "_final_levels", lambda *a, **k: captured.setdefault("a", a)[3])
    register(stretched_pair.em, stretched_pair.lm, config=LABEL)
    monkeypatch.undo()
    em, lm, roi, before, grid, config, polarity = captured["a"][:7]
    fixed = core._FinalFixed.compute(em, roi, *core._FinalFixed.plan(em, lm, grid, config),
                                     config, polarity)
    real, calls = core._affine_if_better, []

    def forced(ws, frame, start, config, before="after rigid", stop=None):
        level = 0 if ws.fixed_arr is fixed.sides[0].arr else 1
        calls.append((level, stop is not None))
        stage = real(ws, frame, start, config, before, stop)
        return replace(stage, kept=keep_first) if level == 0 else stage

    monkeypatch.setattr(core, "_affine_if_better", forced)
    results = {}
    for n in (1, 2):
        calls.clear()
        results[n] = core._final_levels(em, lm, roi, before, grid, config, polarity, fixed,
                                        workers=n)
        if n == 2:  # level 1 ran ahead; again in turn only after a kept level 0
            assert sorted(calls) == ([(0, False), (1, False), (1, True)] if keep_first
                                     else [(0, False), (1, True)])
    one, two = results[1], results[2]
    np.testing.assert_array_equal(one.em_to_lm.matrix, two.em_to_lm.matrix)
    assert len(one.stages) == len(before.stages) + 2
    for a, b in zip(one.stages, two.stages, strict=True):
        assert (a.name, a.kept, a.iterations) == (b.name, b.kept, b.iterations)
        np.testing.assert_array_equal(a.em_to_lm.matrix, b.em_to_lm.matrix)


def test_overlap_mask_matches_mapping_every_voxel():
    """The per-row interval of :func:`overlap_mask` equals mapping each fixed voxel centre
    into the moving grid and testing it against the margins, for rotated, sheared and
    axis-aligned placements (a moving index constant along x rows included)."""
    from clemalign.registration.stages import overlap_mask

    fixed = Volume(np.zeros((7, 23, 19), np.float32), (0.3, 0.2, 0.2), (1.0, -2.0, 0.5))
    moving = Volume(np.zeros((5, 17, 15), np.float32), (0.6, 0.22, 0.22), (0.0, 0.3, -0.4))
    margin = (1.0, 2.0, 2.0)
    k, j, i = np.indices(fixed.shape_zyx).reshape(3, -1)
    points = fixed.index_to_physical(np.stack([k, j, i], axis=1).astype(float))
    rng = np.random.default_rng(5)
    partial = 0
    for t in range(60):
        angle = 0.0 if t % 4 == 0 else rng.uniform(-np.pi, np.pi)
        c, s = np.cos(angle), np.sin(angle)
        linear = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        if t % 2:
            linear = linear @ (np.eye(3) + rng.normal(0.0, 0.1, (3, 3)))
        placement = Affine.from_linear_translation(linear, rng.uniform(-2.0, 3.0, 3))
        mapped = moving.physical_to_index(placement.apply(points))  # (k, j, i)
        lo = np.array(margin)
        hi = np.array(moving.shape_zyx) - 1 - lo
        expected = np.all((mapped >= lo) & (mapped <= hi), axis=1).reshape(fixed.shape_zyx)
        mask = overlap_mask(fixed, placement, moving, margin)
        assert mask.dtype == np.uint8 and mask.shape == fixed.shape_zyx
        assert np.array_equal(mask.astype(bool), expected)
        partial += 0 < expected.mean() < 1
    assert partial >= 20  # the borders were exercised, not only all-in / all-out cases


def test_mi_profile_does_not_depend_on_the_thread_count():
    """Placements are scored on several threads (issue 22); each as alone, so the values
    are the same bit for bit, also when some placements leave the moving grid."""
    from clemalign.registration.metric import Samples, mi_profile

    rng = np.random.default_rng(5)
    fixed = Volume(rng.random((12, 40, 36)).astype(np.float32), (0.5, 0.2, 0.2))
    moving = Volume(rng.random((10, 50, 44)).astype(np.float32), (0.6, 0.22, 0.22))
    samples = Samples.draw(fixed, 3000, seed=1)
    placements = [Affine.from_linear_translation(np.eye(3) + 0.02 * rng.standard_normal((3, 3)),
                                                 rng.uniform(-1.5, 1.5, 3)) for _ in range(9)]
    placements.append(Affine.from_linear_translation(np.eye(3), [40.0, 0.0, 0.0]))  # outside
    one = mi_profile(samples, fixed.data, moving, moving.data, placements, 24)
    assert one[-1] == 0.0 and np.all(one[:-1] < 0)
    for workers in (2, 4):
        np.testing.assert_array_equal(
            mi_profile(samples, fixed.data, moving, moving.data, placements, 24, workers), one)


def test_metric_context_ranges_give_the_profile_computed_alone():
    """MetricContext bins with ranges found once per fixed array (issue 22): the values
    are those mi_profile computes from scratch, for the full and the coarse samples and
    for a second fixed array of the same shape."""
    from clemalign.registration.metric import MetricContext, Samples, mi_profile

    rng = np.random.default_rng(7)
    fixed = Volume(rng.random((12, 40, 36)).astype(np.float32), (0.5, 0.2, 0.2))
    moving = Volume(rng.normal(size=(10, 50, 44)).astype(np.float32), (0.6, 0.22, 0.22))
    samples = Samples.draw(fixed, 3000, seed=1)
    ctx = MetricContext(samples, samples.head(3), moving, moving.data, 24, 2)
    placements = [Affine.from_linear_translation(np.eye(3), rng.uniform(-1, 1, 3))
                  for _ in range(4)]
    other = (fixed.data ** 2).astype(np.float32)
    for arr in (fixed.data, other, fixed.data):  # each array's own ranges, also on reuse
        for coarse in (False, True):
            alone = mi_profile(samples.head(3) if coarse else samples, arr, moving,
                               moving.data, placements, 24)
            np.testing.assert_array_equal(ctx.profile(arr, placements, coarse), alone)
