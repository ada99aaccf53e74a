"""The command line, called in-process: outputs, exit codes, one-line errors."""

import json

import numpy as np
import pytest

from clemalign import Volume, read_volume, write_ome_tiff
from clemalign.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "info" in out and "simulate" in out


def test_simulate_writes_pair(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["simulate", str(out), "--seed", "5", "--scale", "0.15",
                 "--rotation-deg", "10"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["em.ome.tif", "landmarks.csv",
                                                     "lm.ome.tif", "truth.json"]
    truth = json.loads((out / "truth.json").read_text())
    em_to_lm = np.array(truth["em_to_lm"])
    lm_to_em = np.array(truth["lm_to_em"])
    np.testing.assert_allclose(em_to_lm @ lm_to_em, np.eye(4), atol=1e-12)
    assert truth["parameters"]["rotation_deg"] == 10.0
    lines = (out / "landmarks.csv").read_text().splitlines()
    assert lines[0] == "name,em_x_um,em_y_um,em_z_um,lm_x_um,lm_y_um,lm_z_um"
    row = np.array(lines[1].split(",")[1:], dtype=float)
    np.testing.assert_allclose(em_to_lm[:3, :3] @ row[:3] + em_to_lm[:3, 3], row[3:], atol=1e-9)
    em = read_volume(out / "em.ome.tif")
    assert em.voxel_size_um == (0.05, 0.14, 0.14)
    assert "wrote" in capsys.readouterr().out


def test_simulate_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "truth.json").write_text("keep me")
    assert main(["simulate", str(out), "--scale", "0.15"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; pass --overwrite" in err
    assert (out / "truth.json").read_text() == "keep me"
    assert not (out / "em.ome.tif").exists()


def test_info_describes_file(tmp_path, capsys):
    vol = Volume(np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5),
                 (0.6, 0.22, 0.22), channel_names=("mito", "auto"))
    path = write_ome_tiff(tmp_path / "lm.ome.tif", vol)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 × 4 × 5" in out and "channels: 2" in out
    assert "0.6 × 0.22 × 0.22 µm" in out and "'auto'" in out


def test_info_without_voxel_size(tmp_path, capsys):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert main(["info", str(path)]) == 0
    assert "not recorded" in capsys.readouterr().out
    assert main(["info", str(path), "--voxel-size", "1", "2", "3"]) == 0
    assert "1 × 2 × 3 µm" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: np.save(p, np.zeros(5, np.float32)), "expected a (y, x), (z, y, x)"),
    (lambda p: np.save(p, np.full((2, 4, 5), np.nan, np.float32)), "NaN/Inf"),
    (lambda p: np.save(p, np.ones((2, 4, 5), np.float32)), "constant"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, make, message):
    path = tmp_path / "bad.npy"
    make(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.npy" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_voxel_size_flag(tmp_path, capsys):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert main(["info", str(path), "--voxel-size", "0", "1", "nan"]) == 2
    assert "--voxel-size" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    from clemalign import InputError

    with pytest.raises(InputError):
        main(["--debug", "info", str(tmp_path / "missing.tif")])


@pytest.fixture()
def pair_files(tmp_path):
    em = Volume(np.random.default_rng(0).integers(0, 255, (6, 8, 9)).astype(np.uint8),
                (0.05, 0.14, 0.14))
    lm = Volume(np.random.default_rng(1).integers(0, 999, (2, 4, 10, 10)).astype(np.uint16),
                (0.6, 0.22, 0.22), channel_names=("mito", "auto"))
    write_ome_tiff(tmp_path / "em.ome.tif", em)
    write_ome_tiff(tmp_path / "lm.ome.tif", lm)
    np.save(tmp_path / "em.npy", em.data)
    return tmp_path


def test_check_pair_ok(pair_files, capsys):
    assert main(["check", str(pair_files / "em.ome.tif"), str(pair_files / "lm.ome.tif"),
                 "--lm-channel", "auto"]) == 0
    out = capsys.readouterr().out
    assert "inputs OK" in out and "'auto'" in out and "9×8×6 voxels" in out


@pytest.mark.parametrize("args, message", [
    (["em.npy", "lm.ome.tif"], "em.npy: the file does not record a voxel size; pass "
                               "--em-voxel-size Z Y X"),
    (["em.ome.tif", "lm.ome.tif", "--lm-channel", "gfp"],
     "channel 'gfp' not found; available channels: 0=mito, 1=auto"),
    (["em.ome.tif", "lm.ome.tif", "--lm-channel", "5"], "channel '5' not found"),
    (["em.ome.tif", "lm.ome.tif", "--lm-voxel-size", "0.6", "-1", "0.2"],
     "--lm-voxel-size: voxel sizes must be finite and positive"),
    (["em.ome.tif", "missing.tif"], "missing.tif: no such file"),
])
def test_check_pair_bad_input(pair_files, capsys, args, message):
    argv = ["check"] + [str(pair_files / a) if a.endswith((".npy", ".tif")) else a
                        for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_check_pair_voxel_size_override(pair_files, capsys):
    assert main(["check", str(pair_files / "em.npy"), str(pair_files / "lm.ome.tif"),
                 "--em-voxel-size", "0.05", "0.14", "0.14"]) == 0
    assert "0.14×0.14×0.05 µm" in capsys.readouterr().out


class _Stop(Exception):
    """Raised by the stand-in for ``register``: the configuration has been seen."""


class _Seen(list):
    """The configurations the stand-in saw; ``workers``: the ``workers`` of each call."""

    def __init__(self):
        super().__init__()
        self.workers: list = []


@pytest.fixture()
def seen_config(monkeypatch):
    """``clemalign.pipeline.register`` replaced by a stand-in that records the
    configuration the CLI built and stops: flag wiring without a registration."""
    import clemalign.pipeline

    seen = _Seen()

    def stand_in(em, lm, *, config=None, progress=None, workers=None, prealigned=None):
        seen.append(config)
        seen.workers.append(workers)
        raise _Stop

    monkeypatch.setattr(clemalign.pipeline, "register", stand_in)
    return seen


def test_register_flags_reach_the_configuration(pair_files, seen_config):
    em, lm = str(pair_files / "em.ome.tif"), str(pair_files / "lm.ome.tif")
    with pytest.raises(_Stop):
        main(["--debug", "register", em, lm, "-o", str(pair_files / "r"), "--model", "rigid",
              "--em-slices", "1,3,5", "--max-rotation-deg", "30", "--no-mirror",
              "--lm-channel", "auto", "--roi", "1:5,0:8,0:9", "--no-flip-z",
              "--em-polarity", "bright", "--lm-polarity", "dark", "--workers", "1"])
    config = seen_config[-1]
    assert config.fine.model == "rigid"
    assert config.prealign.slices.em_slices == (1, 3, 5)
    assert config.prealign.orientation.max_rotation_deg == 30.0
    assert config.prealign.orientation.mirror is False
    assert config.prealign3d.max_rotation_deg == 30.0 and config.prealign3d.mirror is False
    assert config.lm_channel == "auto" and config.roi == "1:5,0:8,0:9"
    assert config.flip_z is False
    assert config.prealign.em_polarity == "bright" and config.prealign.lm_polarity == "dark"
    assert seen_config.workers[-1] == 1
    # the defaults: affine, every slice choice and orientation left to the method
    with pytest.raises(_Stop):
        main(["--debug", "register", em, lm, "-o", str(pair_files / "d")])
    config = seen_config[-1]
    assert config.fine.model == "affine" and config.prealign.slices.em_slices is None
    assert config.prealign.orientation.max_rotation_deg == 180.0
    assert config.prealign.orientation.mirror is True and config.flip_z is True
    # channel, polarities and threads found, not assumed
    assert config.lm_channel is None and seen_config.workers[-1] is None
    assert config.prealign.em_polarity == "auto" and config.prealign.lm_polarity == "auto"


@pytest.mark.parametrize("flags, message", [
    (["--roi", "0:10,0:10"], "--roi"),
    (["--em-slices", "a,b"], "--em-slices"),
    (["--em-slices", ","], "--em-slices"),
    (["--lm-channel", "7"], "channel"),
    (["--max-rotation-deg", "200"], "--max-rotation-deg"),
    (["--em-polarity", "grey"], "--em-polarity"),
    (["--workers", "0"], "--workers"),
])
def test_register_bad_flags_exit_2(pair_files, seen_config, capsys, flags, message):
    em, lm = str(pair_files / "em.ome.tif"), str(pair_files / "lm.ome.tif")
    assert main(["register", em, lm, "-o", str(pair_files / "x")] + flags) == 2
    assert message in capsys.readouterr().err
    assert not seen_config  # refused before any registration
    assert not (pair_files / "x").exists()


# ------------------------------------------------------------------ end to end
def _main_keeping_result(argv):
    """``main(argv)`` with its stdout and stderr captured and the result of its
    registration kept: (status, result, stdout, stderr)."""
    import contextlib
    import io

    import clemalign.pipeline

    results = []
    real_register = clemalign.pipeline.register

    def keep(*args, **kwargs):
        results.append(real_register(*args, **kwargs))
        return results[-1]

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        mp.setattr(clemalign.pipeline, "register", keep)
        status = main(argv)
    assert len(results) == 1
    return status, results[0], out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """One ``clemalign register`` run on a simulated pair (seed 3, scale 0.3), with its
    landmarks: the tests below read its outputs."""
    root = tmp_path_factory.mktemp("registered")
    data = root / "pair"
    assert main(["simulate", str(data), "--seed", "3", "--scale", "0.3"]) == 0
    out = root / "out"
    args = ["register", str(data / "em.ome.tif"), str(data / "lm.ome.tif"), "-o", str(out),
            "--lm-channel", "mito", "--landmarks", str(data / "landmarks.csv"),
            "--outputs", "all"]
    status, result, _, _ = _main_keeping_result(args)
    assert status == 0
    return {"data": data, "out": out, "args": args, "result": result,
            "truth": json.loads((data / "truth.json").read_text()),
            "record": json.loads((out / "transform.json").read_text())}


@pytest.mark.slow
def test_register_writes_outputs(registered):
    from clemalign.outputs import OUTPUT_FILES

    out, record = registered["out"], registered["record"]
    assert sorted(p.name for p in out.iterdir()) == sorted(set(OUTPUT_FILES)
                                                           - {"lm_in_em.nrrd", "lm_in_em.ome.zarr"})
    em_to_lm, lm_to_em = np.array(record["em_to_lm"]), np.array(record["lm_to_em"])
    np.testing.assert_allclose(em_to_lm @ lm_to_em, np.eye(4), atol=1e-9)
    assert record["em_voxel_size_um"] == [0.05, 0.14, 0.14]
    assert set(record["stages"]) == {"rigid", "affine", "affine at σ 0.5 µm (z 1 µm)",
                                     "affine at σ 0.5 µm"}
    assert {"shift_xy_um", "confidence", "angle_deg"} <= set(record["prealign"])
    overlay = read_volume(out / "lm_in_em.ome.tif")
    assert overlay.data.shape[0] == 2 and overlay.voxel_size_um == (0.05, 0.14, 0.14)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["lm_channel"] == "mito" and run["config"]["fine"]["model"] == "affine"
    # where the seconds went: reading, both stages, each output (issue 22's profile)
    timings = run["timings_s"]
    assert {"read", "prealign", "fine", "total", "outputs"} <= set(timings)
    assert {"figure grid", "image files (after the figures)", "orientation.png",
            "report.html", "transform files", "total"} <= set(timings["outputs"])
    # the pre-alignment's figures are rendered while the 3D stage runs (several cores)
    ahead = timings["outputs"].get("made ahead", {})
    assert "prealign.png" in ahead or "prealign.png" in timings["outputs"]
    # the LM is resampled onto the EM grid and written on a thread while the figures
    # render: listed apart
    beside = timings["outputs"]["beside the figures"]
    assert set(beside) == {"lm_in_em resampling", "lm_in_em.ome.tif", "overlay.ome.tif"}
    assert all(0 < s < timings["outputs"]["total"] for s in beside.values())
    steps = sum(v for k, v in timings["outputs"].items()
                if k not in ("total", "beside the figures", "made ahead"))
    assert steps == pytest.approx(timings["outputs"]["total"], rel=0.05, abs=0.05)


@pytest.mark.slow
def test_register_lands_on_the_truth(registered):
    data, record = registered["data"], registered["record"]
    em_to_lm = np.array(record["em_to_lm"])
    # landmark error of the written transform against the simulation's truth
    lines = (data / "landmarks.csv").read_text().splitlines()[1:]
    pts = np.array([line.split(",")[1:] for line in lines], float)
    mapped = pts[:, :3] @ em_to_lm[:3, :3].T + em_to_lm[:3, 3]
    assert np.linalg.norm(mapped - pts[:, 3:], axis=1).mean() < 0.5
    assert np.allclose(registered["truth"]["em_to_lm"], em_to_lm, atol=0.5)
    # the evaluation went into transform.json
    assert record["evaluation"]["summary"]["mean_um"] < 0.5
    assert record["confidence"]["verdict"] == "ok"
    assert record["confidence"]["thresholds"]["ok_above"] > 0


@pytest.mark.slow
def test_register_report_embeds_every_figure(registered):
    import re

    page = (registered["out"] / "report.html").read_text()
    # the seven figures, and the overlay again in the summary
    assert page.count("data:image/png;base64,") == 8 and "Landmark evaluation" in page
    # a biologist's part first, the technical details folded after it
    order = [page.index(h) for h in ("<h2>Summary</h2>", "<h2>How to open these results</h2>",
                                     "Files</h2>", "<h2>Technical details</h2><details>",
                                     "<h2>Confidence evidence</h2>", "<h2>Orientation</h2>")]
    assert order == sorted(order)
    assert "Step too small" not in page[:order[3]] and "nats" not in page[:order[3]]
    # every link points at a file written beside the report
    links = set(re.findall(r"href='([^']+)'", page))
    assert {"overlay.ome.tif", "bigwarp_landmarks.csv", "ecclem_transform.xml"} <= links
    assert all((registered["out"] / name).is_file() for name in links)


@pytest.mark.slow
def test_figures_made_ahead_are_used_only_for_their_prealignment(registered, tmp_path):
    """The CLI renders the pre-alignment's figures while the 3D stage runs (issue 22):
    ``write_registration`` writes those bytes, and draws them again for a result of
    another pre-alignment."""
    from dataclasses import replace

    from clemalign.outputs import prepare_figures, write_registration

    result = registered["result"]
    em = read_volume(registered["data"] / "em.ome.tif")
    lm = read_volume(registered["data"] / "lm.ome.tif")
    ahead = prepare_figures(em, result.roi, result.prealign)
    assert set(ahead.rendered) == {"Pre-alignment", "Scale selection"}

    def outputs_timed(out):
        return json.loads((out / "run.json").read_text())["timings_s"]["outputs"]

    write_registration(tmp_path / "a", result, em, lm, figures_ahead=ahead)
    assert (tmp_path / "a" / "prealign.png").read_bytes() == ahead.rendered["Pre-alignment"][1]
    timed = outputs_timed(tmp_path / "a")
    assert "prealign.png" not in timed and "scale_selection.png" not in timed
    assert "orientation.png" in timed
    write_registration(tmp_path / "b", result, em, lm,
                       figures_ahead=replace(ahead, prealign=object()))
    assert "prealign.png" in outputs_timed(tmp_path / "b")
    page = (tmp_path / "a" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 8  # the seven, one again in the summary


@pytest.mark.slow
def test_register_exports_the_itk_transform(registered):
    import SimpleITK as sitk

    em_to_lm = np.array(registered["record"]["em_to_lm"])
    tx = sitk.ReadTransform(str(registered["out"] / "transform.tfm"))
    np.testing.assert_allclose(tx.TransformPoint((10.0, 20.0, 3.0)),
                               em_to_lm[:3, :3] @ [10, 20, 3] + em_to_lm[:3, 3], atol=1e-9)


@pytest.mark.slow
def test_register_refuses_to_overwrite(registered, seen_config, capsys):
    before = (registered["out"] / "transform.json").read_text()
    assert main(registered["args"]) == 2
    assert "exists" in capsys.readouterr().err
    assert not seen_config  # refused before the expensive work
    assert (registered["out"] / "transform.json").read_text() == before


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory):
    """``register --strict`` of a tiny simulated EM (scale 0.15) against Poisson noise,
    with a restricted search; the result of the registration is kept."""
    root = tmp_path_factory.mktemp("failed")
    data = root / "pair"
    assert main(["simulate", str(data), "--seed", "3", "--scale", "0.15"]) == 0
    lm = read_volume(data / "lm.ome.tif")
    rng = np.random.default_rng(1)
    noise = Volume(rng.poisson(20, lm.data.shape).astype(np.uint16), lm.voxel_size_um)
    write_ome_tiff(root / "noise.ome.tif", noise)
    args = ["register", str(data / "em.ome.tif"), str(root / "noise.ome.tif"),
            "--max-rotation-deg", "30", "--no-mirror"]
    status, result, out, err = _main_keeping_result(args + ["-o", str(root / "b"), "--strict"])
    return {"root": root, "args": args, "status": status, "out": out, "err": err,
            "result": result}


@pytest.mark.slow
def test_register_strict_exit_status_on_failure(failed_run):
    result = failed_run["result"]
    assert result.confidence["verdict"] == "failed" and result.confidence["reasons"]
    assert np.all(np.isfinite(result.em_to_lm.matrix))
    assert failed_run["status"] == 3
    assert "failed" in failed_run["out"] and "warning" in failed_run["err"]
    # the outputs are still written for inspection, with the restriction recorded
    b = failed_run["root"] / "b"
    run = json.loads((b / "run.json").read_text())
    assert run["config"]["prealign"]["orientation"]["max_rotation_deg"] == 30.0
    assert run["config"]["prealign"]["orientation"]["mirror"] is False
    assert (b / "report.html").exists()


@pytest.mark.slow
def test_register_failure_without_strict_is_a_warning(failed_run, monkeypatch, capsys):
    """The same failed result, without --strict: exit 0 and a warning, not an error."""
    import clemalign.pipeline

    monkeypatch.setattr(clemalign.pipeline, "register",
                        lambda *a, **k: failed_run["result"])
    a = failed_run["root"] / "a"
    assert main(failed_run["args"] + ["-o", str(a)]) == 0
    captured = capsys.readouterr()
    assert "failed" in captured.out and "warning" in captured.err
    assert (a / "transform.json").exists()


@pytest.mark.slow
def test_demo_prints_error_and_repeats_the_register_run(registered, tmp_path, capsys):
    """``demo --seed 3 --scale 0.3`` simulates the pair the ``registered`` run read from
    files and registers it in memory: the same transform (same input, same output), and
    its TRE against the truth printed."""
    status, result, out, _ = _main_keeping_result(
        ["demo", "-o", str(tmp_path / "d"), "--seed", "3", "--scale", "0.3"])
    assert status == 0
    assert "landmark error vs truth" in out
    mean_um = float(out.split("mean ")[1].split(" µm")[0])
    assert mean_um < 0.5
    demo_data = tmp_path / "d" / "data"
    assert (demo_data / "truth.json").read_text() == (registered["data"] / "truth.json").read_text()
    assert np.array_equal(read_volume(demo_data / "em.ome.tif").data,
                          read_volume(registered["data"] / "em.ome.tif").data)
    # fixed sampling seeds; only multi-threaded summation order may differ
    np.testing.assert_allclose(result.em_to_lm.matrix, registered["result"].em_to_lm.matrix,
                               atol=1e-6)


def test_evaluate_and_apply(tmp_path, capsys):
    data = tmp_path / "pair"
    assert main(["simulate", str(data), "--seed", "2", "--scale", "0.15"]) == 0
    truth, landmarks = data / "truth.json", data / "landmarks.csv"
    capsys.readouterr()
    # the truth itself has zero error
    assert main(["evaluate", str(truth), str(landmarks), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["summary"]["max_um"] < 1e-9 and table["summary"]["em_pixel_um"] == 0.14
    assert main(["evaluate", str(truth), str(landmarks)]) == 0
    assert "landmarks: mean 0.000 µm" in capsys.readouterr().out
    points = tmp_path / "p.csv"
    points.write_text("name,x_um,y_um,z_um\na,1,2,3\n")
    out = tmp_path / "mapped.csv"
    assert main(["apply", str(truth), str(points), "-o", str(out)]) == 0
    em_to_lm = np.array(json.loads(truth.read_text())["em_to_lm"])
    mapped = np.array(out.read_text().splitlines()[1].split(",")[1:], float)
    np.testing.assert_allclose(mapped, em_to_lm[:3, :3] @ [1, 2, 3] + em_to_lm[:3, 3], atol=1e-5)
    back = tmp_path / "back.csv"
    assert main(["apply", str(truth), str(out), "--inverse", "-o", str(back)]) == 0
    np.testing.assert_allclose(np.array(back.read_text().splitlines()[1].split(",")[1:], float),
                               [1, 2, 3], atol=1e-5)
    capsys.readouterr()
    assert main(["apply", str(truth), str(points), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("name,em_x_um,em_y_um,em_z_um,lm_x_um,lm_y_um,lm_z_um\na,1,2,3,4,5\n")
    assert main(["evaluate", str(truth), str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err


@pytest.mark.slow  # simulates a whole (small) tissue pair: several seconds
def test_simulate_tissue_scene_gives_the_roi_to_register(tmp_path, capsys):
    out = tmp_path / "tissue"
    assert main(["simulate", str(out), "--scene", "tissue", "--seed", "2", "--mirror",
                 "--flip-z", "--tilt-deg", "4", "-3", "--rotation-deg", "100"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["scene"] == "tissue"
    p = truth["parameters"]
    assert (p["mirror"], p["flip_z"], p["tilt_x_deg"], p["tilt_y_deg"],
            p["rotation_deg"]) == (True, True, 4.0, -3.0, 100.0)
    printed = capsys.readouterr().out
    assert f"--roi {truth['roi']} --lm-channel nuclei" in printed
    em, lm = read_volume(out / "em.ome.tif"), read_volume(out / "lm.ome.tif")
    assert em.voxel_size_um == (1.0, 1.0, 1.0) and lm.voxel_size_um == (3.0, 0.59, 0.59)
    assert lm.channel_names == ("nuclei", "vessels")
    em_to_lm = np.array(truth["em_to_lm"])
    assert np.linalg.det(em_to_lm[:3, :3]) > 0 and em_to_lm[2, 2] < 0  # a 180° turn


def test_register_refuses_an_unknown_prealignment(tmp_path, capsys):
    assert main(["register", "em.tif", "lm.tif", "-o", str(tmp_path / "o"),
                 "--prealign", "2d"]) == 2
    assert "--prealign" in capsys.readouterr().err
