"""Bad input and interruptions (issue 17): one clear line, the right exit status, and an
output folder left exactly as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from clemalign import InputError, Volume, write_ome_tiff
from clemalign.cli import main

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Small inputs (an EM, an LM, their copies and odd files) and a results folder
    holding an earlier run's file."""
    root = tmp_path_factory.mktemp("bad")
    em = Volume(RNG.integers(0, 255, (6, 40, 40)).astype(np.uint8), (0.05, 0.03, 0.03))
    lm = Volume(RNG.integers(0, 999, (2, 4, 30, 30)).astype(np.uint16), (0.3, 0.12, 0.12),
                channel_names=("dna", "auto"))
    write_ome_tiff(root / "em.ome.tif", em)
    write_ome_tiff(root / "lm.ome.tif", lm)
    (root / "em_copy.ome.tif").write_bytes((root / "em.ome.tif").read_bytes())
    np.save(root / "structured.npy", np.zeros((4, 5), dtype=[("a", "f4"), ("b", "i4")]))
    np.save(root / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(root / "complex.npy", np.ones((3, 4, 5), np.complex64))
    np.save(root / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    os.mkfifo(root / "pipe.tif")
    # a 200-byte TIFF that declares 2 × 100000² 16-bit pixels (compressed)
    with tifffile.TiffWriter(root / "huge.tif") as tif:
        tif.write(np.zeros((8, 8), np.uint16), compression="zlib")
    data = bytearray((root / "huge.tif").read_bytes())
    with tifffile.TiffFile(root / "huge.tif") as tif:
        for tag in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            t = tif.pages[0].tags[tag]
            data[t.valueoffset:t.valueoffset + 4] = (100000).to_bytes(4, "little")
    (root / "huge.tif").write_bytes(bytes(data))
    # text inputs
    truth = {"em_to_lm": np.eye(4).tolist()}
    (root / "t.json").write_text(json.dumps(truth))
    (root / "latin1.csv").write_bytes("name,x_um,y_um,z_um\ncaf\xe9,1,2,3\n".encode("latin-1"))
    (root / "binary.json").write_bytes(bytes(range(256)))
    (root / "nested.json").write_text("[" * 100000 + "]" * 100000)
    (root / "big_field.csv").write_text("name,x_um,y_um,z_um\n" + "a" * 200_000 + ",1,2,3\n")
    (root / "nan_bigwarp.csv").write_text("".join(
        f'"p{k}","true","{x}","{y}","{z}","{x}","{y}","{z}"\n'
        for k, (x, y, z) in enumerate([(0, 0, 0), (1, 0, 0), (0, 1, 0), ("NaN", 0, 1)])))
    (root / "inf_bigwarp.csv").write_text("".join(
        f'"p{k}","true","{x}","{y}","{z}","{x}","{y}","{z}"\n'
        for k, (x, y, z) in enumerate([(0, 0, 0), (1, 0, 0), (0, 1, 0), ("Infinity", 0, 1)])))
    (root / "points.csv").write_text("name,x_um,y_um,z_um\na,1,2,3\n")
    whole = (root / "lm.ome.tif").read_bytes()
    (root / "cut.ome.tif").write_bytes(whole[:len(whole) // 3])
    import SimpleITK as sitk

    sitk.WriteTransform(sitk.AffineTransform(2), str(root / "t2d.tfm"))
    (root / "bad_sizes.json").write_text(json.dumps({**truth, "em_voxel_size_um": "abc"}))
    (root / "afile").write_text("not a folder")
    out = root / "results"
    out.mkdir()
    (out / "transform.json").write_text("an earlier run\n")
    return root


def _snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (hidden ones too) with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _one_line_exit(capsys, argv: list[str], status: int, *needles: str) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


REGISTER = ["register", "{em}", "{lm}", "-o", "{out}"]

CASES = {
    # name: (argv with {root} placeholders, text the one line must hold)
    "same file twice": (["register", "{root}/em.ome.tif", "{root}/em.ome.tif", "-o",
                         "{root}/results"], ["same image as the EM"]),
    "a copy of the EM as LM": (["register", "{root}/em.ome.tif", "{root}/em_copy.ome.tif",
                                "-o", "{root}/results"], ["same image as the EM"]),
    "named pipe": (["info", "{root}/pipe.tif"], ["pipe.tif", "not a regular file"]),
    "structured npy": (["info", "{root}/structured.npy", "--voxel-size", "1", "1", "1"],
                       ["structured.npy", "not numbers"]),
    "text npy": (["info", "{root}/text.npy", "--voxel-size", "1", "1", "1"],
                 ["text.npy", "not numbers"]),
    "complex npy": (["info", "{root}/complex.npy", "--voxel-size", "1", "1", "1"],
                    ["complex.npy", "complex"]),
    "pickled npy": (["info", "{root}/pickled.npy"], ["pickled.npy"]),
    "markup in a missing path": (["info", "{root}/[/red]x[bold].tif"],
                                 ["[/red]x[bold].tif", "no such file"]),
    "file name too long": (["info", "{root}/" + "a" * 300 + ".tif"], ["aaaa"]),
    "EM voxel 1e-12 µm": (REGISTER + ["--em-voxel-size", "1e-12", "1e-12", "1e-12"],
                          ["--em-voxel-size", "range"]),
    "LM voxel 1e9 µm": (REGISTER + ["--lm-voxel-size", "1e9", "1e9", "1e9"],
                        ["--lm-voxel-size", "range"]),
    "negative seed": (["simulate", "{root}/sim", "--seed", "-1"], ["--seed"]),
    "NaN scale": (["demo", "-o", "{root}/demo", "--scale", "nan"], ["--scale"]),
    "negative EM pixel": (["evaluate", "{root}/t.json", "{root}/latin1.csv", "--em-pixel-um",
                           "-0.14"], ["--em-pixel-um"]),
    "NaN EM pixel": (["evaluate", "{root}/t.json", "{root}/latin1.csv", "--em-pixel-um",
                      "nan"], ["--em-pixel-um"]),
    "output folder under a file": (["register", "{root}/em.ome.tif", "{root}/lm.ome.tif",
                                    "-o", "{root}/afile/sub"], ["afile", "is a file"]),
    "apply output under a file": (["apply", "{root}/t.json", "{root}/points.csv", "-o",
                                   "{root}/afile/x.csv"], ["afile"]),
    "Latin-1 CSV": (["evaluate", "{root}/t.json", "{root}/latin1.csv"],
                    ["latin1.csv", "UTF-8"]),
    "binary JSON": (["apply", "{root}/binary.json", "{root}/points.csv"],
                    ["binary.json"]),
    "deeply nested JSON": (["apply", "{root}/nested.json", "{root}/points.csv"],
                           ["nested.json", "nested too deeply"]),
    "CSV field over 128 KiB": (["apply", "{root}/t.json", "{root}/big_field.csv"],
                               ["big_field.csv"]),
    "BigWarp CSV with NaN": (["apply", "{root}/nan_bigwarp.csv", "{root}/points.csv"],
                             ["nan_bigwarp.csv", "finite"]),
    "BigWarp CSV with inf": (["apply", "{root}/inf_bigwarp.csv", "{root}/points.csv"],
                             ["inf_bigwarp.csv", "finite"]),
    "TIFF declaring 18 GiB in 200 bytes": (["info", "{root}/huge.tif"],
                                           ["huge.tif", "truncated or corrupt"]),
    "truncated OME-TIFF": (["info", "{root}/cut.ome.tif"], ["cut.ome.tif", "truncated"]),
    "2D ITK transform": (["apply", "{root}/t2d.tfm", "{root}/points.csv"], ["t2d.tfm", "2D"]),
    "bad voxel sizes in a transform JSON": (["evaluate", "{root}/bad_sizes.json",
                                             "{root}/points.csv"],
                                            ["bad_sizes.json", "em_voxel_size_um"]),
    "an array over --max-memory": (["register", "{root}/em.ome.tif", "{root}/lm.ome.tif",
                                    "-o", "{root}/fresh", "--max-memory", "0.000001"],
                                   ["--max-memory"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_one_line_exit_2_folder_unchanged(files, capsys, name):
    argv_t, needles = CASES[name]
    fill = {"root": files, "em": files / "em.ome.tif", "lm": files / "lm.ome.tif",
            "out": files / "results"}
    argv = [a.format(**fill) for a in argv_t]
    before = _snapshot(files / "results")
    _one_line_exit(capsys, argv, 2, *needles)
    assert _snapshot(files / "results") == before
    for made in ("sim", "demo", "afile/sub", "fresh"):
        assert not (files / made).is_dir()


def test_dangling_link_is_not_replaced_without_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "transform.json").symlink_to(tmp_path / "unmounted" / "transform.json")
    before = os.readlink(out / "transform.json")
    _one_line_exit(capsys, ["register", str(files / "em.ome.tif"), str(files / "lm.ome.tif"),
                            "-o", str(out)], 2, "transform.json", "--overwrite")
    assert os.readlink(out / "transform.json") == before


# ----------------------------------------------------------------------- interruptions


@pytest.fixture(scope="module")
def section_result(small_pair):
    """A finished registration of a one-plane EM section (fast: the in-plane path) and
    the volumes it came from: what the writer gets."""
    from clemalign.pipeline import RegistrationConfig, register

    em = small_pair.em
    k = em.shape_zyx[0] // 2
    data = em.data[k - 10:k + 10].mean(axis=0, keepdims=True).astype(em.data.dtype)
    origin = em.index_to_physical(np.array([[k - 0.5, 0.0, 0.0]]))[0]
    sec = Volume(data, (1.0, *em.voxel_size_um[1:]), tuple(origin))
    lm = small_pair.lm.channel("mito")
    ny, nx = sec.shape_zyx[1:]
    centre = sec.index_to_physical(np.array([[0, (ny - 1) / 2, (nx - 1) / 2]]))
    plane = int(round(lm.physical_to_index(small_pair.em_to_lm.apply(centre))[0, 0]))
    lm = Volume(lm.data[plane:plane + 1], lm.voxel_size_um,
                tuple(lm.index_to_physical(np.array([[plane, 0.0, 0.0]]))[0]))
    return register(sec, lm, config=RegistrationConfig(lm_channel=0)), sec, lm


def _stand_in_run(section_result, tmp_path, monkeypatch, earlier: dict) -> tuple[Path, list]:
    """The section's files, an output folder holding ``earlier`` files, and ``register``
    replaced by the section's finished result: (folder, the register argv)."""
    import clemalign.pipeline

    result, em, lm = section_result
    for vol, name in ((em, "em.ome.tif"), (lm, "lm.ome.tif")):
        write_ome_tiff(tmp_path / name, vol)
    out = tmp_path / "results"
    out.mkdir()
    for name, text in earlier.items():
        (out / name).write_text(text)
    monkeypatch.setattr(clemalign.pipeline, "register", lambda *a, **k: result)
    return out, ["register", str(tmp_path / "em.ome.tif"), str(tmp_path / "lm.ome.tif"), "-o",
                 str(out), "--em-voxel-size", *map(str, em.voxel_size_um), "--lm-voxel-size",
                 *map(str, lm.voxel_size_um)]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGINT", "disk full"])
def test_interrupted_write_leaves_the_folder_as_it_was(section_result, tmp_path, capsys,
                                                       monkeypatch, how):
    """A signal (or a full disk) while the outputs are written: exit 130 (2), nothing
    new in the folder, the earlier run's file intact, no temporary folder left."""
    import errno

    import clemalign.outputs as outputs

    _, argv = _stand_in_run(section_result, tmp_path, monkeypatch,
                            {"transform.json": "an earlier run\n"})
    real = outputs.write_itk_tfm

    def interrupted(path, *args, **kwargs):
        real(path, *args, **kwargs)  # some files are complete by now
        if how == "disk full":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        os.kill(os.getpid(), getattr(signal, how))

    monkeypatch.setattr(outputs, "write_itk_tfm", interrupted)
    before = _snapshot(tmp_path)
    status = main(argv + ["--overwrite"])
    err = capsys.readouterr().err
    if how == "disk full":
        assert status == 2 and "no space left" in err
    else:
        assert status == 130 and "aborted" in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_only_a_complete_result(section_result, tmp_path, monkeypatch):
    from clemalign.outputs import OUTPUT_FILES

    out, argv = _stand_in_run(section_result, tmp_path, monkeypatch,
                              {"orientation.png": "an earlier run's figure",
                               "notes.txt": "the user's own file"})
    assert main(argv) == 2  # orientation.png exists
    assert main(argv + ["--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" in names and names <= set(OUTPUT_FILES) | {"notes.txt"}
    assert "transform.json" in names and not any(n.startswith(".") for n in names)
    # the earlier figure is this run's or gone, never the stale one
    if (out / "orientation.png").exists():
        assert (out / "orientation.png").read_bytes() != b"an earlier run's figure"


def test_new_output_folder_appears_complete_with_usual_permissions(section_result, tmp_path,
                                                                   monkeypatch):
    results, argv = _stand_in_run(section_result, tmp_path, monkeypatch, {})
    results.rmdir()
    out = tmp_path / "new" / "results"
    assert main([str(out) if a == str(results) else a for a in argv]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask
    assert [p.name for p in out.parent.iterdir()] == ["results"]


@pytest.mark.slow  # a fresh interpreter
def test_ctrl_c_while_loading_exits_130_without_traceback(tmp_path):
    """SIGINT arrives while the command line's modules load (before ``main`` can catch
    anything): one line, exit 130."""
    script = tmp_path / "run.py"
    script.write_text(
        "import os, signal, sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'clemalign.cli':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['clemalign', '--help']\n"
        "from clemalign._entry import run\n"
        "run()\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "clemalign: aborted"


def test_read_only_output_folder(files, tmp_path, capsys, monkeypatch):
    """A read-only file system (as root, permissions do not stop writes: simulated at
    the one place the output folder is first written)."""
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    out = tmp_path / "mnt" / "out"
    _one_line_exit(capsys, ["register", str(files / "em.ome.tif"), str(files / "lm.ome.tif"),
                            "-o", str(out)], 2, "read-only", "-o")
    assert not (tmp_path / "mnt").exists()  # the parents it made are gone again


@pytest.mark.slow  # fresh interpreters under an address-space limit
@pytest.mark.parametrize("argv", [
    ["info", "{root}/huge.tif"],
    ["register", "{root}/em.ome.tif", "{root}/lm.ome.tif", "-o", "{root}/fresh",
     "--em-voxel-size", "1e-5", "1e-5", "1e-5"],
    ["register", "{root}/em.ome.tif", "{root}/lm.ome.tif", "-o", "{root}/fresh",
     "--lm-voxel-size", "1e4", "1e4", "1e4"],
])
def test_guards_stop_before_allocating(files, argv):
    """Under a 3 GiB address-space limit the extreme inputs still end with exit 2 and a
    message, not a MemoryError (each alone asked numpy for 14 TiB, 213 GiB or 18.6 GiB)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    proc = subprocess.run([sys.executable, "-m", "clemalign",
                           *[a.format(root=files) for a in argv]],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("clemalign: error:") and proc.stderr.count("\n") == 1, \
        proc.stderr


@pytest.mark.slow  # a fresh interpreter that registers a small section
def test_file_size_limit_while_writing_leaves_nothing(section_result, tmp_path):
    """A real write failure (``ulimit -f``: the outputs outgrow the allowed file size):
    exit 2 naming the folder, and no output folder, no temporary folder left behind."""
    import resource

    _, em, lm = section_result
    for vol, name in ((em, "em.ome.tif"), (lm, "lm.ome.tif")):
        write_ome_tiff(tmp_path / name, vol)
    before = _snapshot(tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run(
        [sys.executable, "-m", "clemalign", "register", str(tmp_path / "em.ome.tif"),
         str(tmp_path / "lm.ome.tif"), "-o", str(tmp_path / "out"), "--lm-channel", "0"],
        capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr
    assert "out" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert _snapshot(tmp_path) == before


def test_markup_in_channel_and_landmark_names_is_printed_as_is(files, tmp_path, capsys):
    _one_line_exit(capsys, ["register", str(files / "em.ome.tif"), str(files / "lm.ome.tif"),
                            "-o", str(tmp_path / "o"), "--lm-channel", "[/bold]x"], 2,
                   "[/bold]x")
    truth = files / "t.json"
    marks = tmp_path / "marks.csv"
    marks.write_text("name,em_x_um,em_y_um,em_z_um,lm_x_um,lm_y_um,lm_z_um\n"
                     "[/red]p[bold],1,2,3,1,2,3\n")
    assert main(["evaluate", str(truth), str(marks)]) == 0
    assert "[/red]p[bold]" in capsys.readouterr().out


# ------------------------------------------------- outputs that overlay the EM (issue 18)


@pytest.mark.parametrize("roi, level", [(None, "all"), ("0:1,20:150,30:170", "all"),
                                        ("0:1,20:150,30:170", "standard")])
def test_lm_in_em_and_overlay_lie_on_the_em_grid(section_result, tmp_path, monkeypatch, roi,
                                                  level):
    """With and without --roi: voxel (k, j, i) of lm_in_em.ome.tif and overlay.ome.tif is
    EM voxel (k, j, i) — same shape, voxel size and origin as the EM file, read back with
    clemalign, with tifffile's OME metadata and with SimpleITK (lateral spacing, mm).
    The default outputs (no overlay; lm_in_em resampled as it is written) too."""
    import dataclasses

    import SimpleITK as sitk

    import clemalign.pipeline
    from clemalign import read_volume
    from clemalign.outputs import resample_lm_to_em
    from clemalign.volume import parse_roi

    result, em, lm = section_result
    if roi is not None:
        result = dataclasses.replace(result, roi=parse_roi(roi, em.shape_zyx))
    for vol, name in ((em, "em.ome.tif"), (lm, "lm.ome.tif")):
        write_ome_tiff(tmp_path / name, vol)
    monkeypatch.setattr(clemalign.pipeline, "register", lambda *a, **k: result)
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "em.ome.tif"), str(tmp_path / "lm.ome.tif"), "-o",
                 str(out), "--lm-channel", "0", "--outputs", level]
                + (["--roi", roi] if roi else [])) == 0
    em_file = read_volume(tmp_path / "em.ome.tif")
    files = (("lm_in_em.ome.tif", 1), ("overlay.ome.tif", 2))
    assert (out / "overlay.ome.tif").exists() == (level == "all")
    for name, channels in files[:2 if level == "all" else 1]:
        vol = read_volume(out / name)
        assert vol.shape_zyx == em_file.shape_zyx and vol.n_channels == channels
        assert vol.voxel_size_um == pytest.approx(em_file.voxel_size_um, rel=1e-6)
        assert vol.origin_xyz_um == pytest.approx(em_file.origin_xyz_um)
        with tifffile.TiffFile(out / name) as tif:
            assert tif.is_ome and 'PhysicalSizeX="' in tif.ome_metadata
        image = sitk.ReadImage(str(out / name))
        assert np.array(image.GetSpacing()[:2]) * 1000 == pytest.approx(
            [em_file.voxel_size_um[2], em_file.voxel_size_um[1]], rel=1e-5)
    lm_in_em = read_volume(out / "lm_in_em.ome.tif")
    if level == "all":
        overlay = read_volume(out / "overlay.ome.tif")
        assert overlay.channel_names[0] == "EM"
        np.testing.assert_array_equal(overlay.data[0], em_file.data)
        np.testing.assert_array_equal(overlay.data[1], lm_in_em.data)
    # and holds the LM resampled over the whole EM grid, whatever the ROI
    whole = resample_lm_to_em(lm, em_file, result.em_to_lm, None)
    np.testing.assert_array_equal(lm_in_em.data, whole.data[0])
    record = json.loads((out / "transform.json").read_text())
    assert record["lm_in_em"]["grid"] == "em"


def test_volume_format_nrrd_overlays_the_em_in_simpleitk(section_result, tmp_path, monkeypatch):
    """--volume-format nrrd with --roi: lm_in_em.nrrd holds the same voxels as the OME-TIFF
    would, and SimpleITK reads the EM's voxel size and origin in µm (z included, which its
    TIFF reader cannot); an EM converted with `clemalign convert` matches it point for
    point, and the report links the NRRD."""
    import dataclasses

    import SimpleITK as sitk

    import clemalign.pipeline
    from clemalign import read_volume
    from clemalign.io import write_volume
    from clemalign.outputs import resample_lm_to_em
    from clemalign.transforms import Affine
    from clemalign.volume import parse_roi

    result, em, lm = section_result
    result = dataclasses.replace(result, roi=parse_roi("0:1,20:150,30:170", em.shape_zyx))
    # an EM with an origin (MRC records one); the result is in those coordinates
    em = Volume(em.data, em.voxel_size_um, (12.5, -3.0, 2.0), em.channel_names, em.source)
    shift = Affine.from_translation((12.5, -3.0, 2.0))
    result = dataclasses.replace(result, em_to_lm=result.em_to_lm @ shift.inverse())
    write_volume(tmp_path / "em.mrc", em)
    write_ome_tiff(tmp_path / "lm.ome.tif", lm)
    monkeypatch.setattr(clemalign.pipeline, "register", lambda *a, **k: result)
    out = tmp_path / "out"
    assert main(["register", str(tmp_path / "em.mrc"), str(tmp_path / "lm.ome.tif"), "-o",
                 str(out), "--lm-channel", "0", "--roi", "0:1,20:150,30:170",
                 "--volume-format", "nrrd"]) == 0
    assert (out / "lm_in_em.nrrd").exists() and not (out / "lm_in_em.ome.tif").exists()
    assert main(["convert", str(tmp_path / "em.mrc"), str(tmp_path / "em.nrrd")]) == 0
    em_file = read_volume(tmp_path / "em.mrc")
    for name in ("lm_in_em.nrrd", "em.nrrd"):
        image = sitk.ReadImage(str((out if name.startswith("lm") else tmp_path) / name))
        assert image.GetSize() == em_file.shape_zyx[::-1]
        assert image.GetSpacing() == pytest.approx(em_file.voxel_size_um[::-1], rel=1e-12)
        assert image.GetOrigin() == pytest.approx((12.5, -3.0, 2.0), rel=1e-12)
    whole = resample_lm_to_em(lm, em_file, result.em_to_lm, None)
    np.testing.assert_array_equal(read_volume(out / "lm_in_em.nrrd").data, whole.data[0])
    np.testing.assert_array_equal(read_volume(tmp_path / "em.nrrd").data, em_file.data)
    assert "href='lm_in_em.nrrd'" in (out / "report.html").read_text()
    assert json.loads((out / "transform.json").read_text())["lm_in_em"]["file"] == \
        "lm_in_em.nrrd"


def test_convert_refuses_to_overwrite_and_names_its_channel_flag(tmp_path, capsys):
    vol = Volume(np.ones((2, 3, 8, 8), np.uint8), (1.0, 0.5, 0.5), channel_names=("a", "b"))
    write_ome_tiff(tmp_path / "in.ome.tif", vol)
    assert main(["convert", str(tmp_path / "in.ome.tif"), str(tmp_path / "b.mrc"),
                 "--channel", "b"]) == 0
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "in.ome.tif"), str(tmp_path / "b.mrc")]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "in.ome.tif"), str(tmp_path / "c.mrc"),
                 "--channel", "z"]) != 0
    assert "--channel" in capsys.readouterr().err


def test_register_help_lists_every_output(capsys):
    from clemalign.outputs import OUTPUT_FILES

    assert main(["register", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in OUTPUT_FILES:
        assert name in text and f"`{name}`" in readme, name


@pytest.mark.parametrize("name", ["lm_in_em.ome.tif", "lm_in_em.nrrd"])
def test_lm_in_em_resampled_as_written_equals_the_whole_grid(tmp_path, monkeypatch, name):
    """Without the overlay, lm_in_em is resampled a few planes at a time as the file is
    written (issue 22): the file holds exactly what resampling the whole grid gives."""
    import clemalign.outputs as outputs
    from clemalign import read_volume
    from clemalign.transforms import Affine, rotation_matrix_xyz

    rng = np.random.default_rng(5)
    lm = Volume(rng.integers(0, 4000, (2, 6, 40, 50), dtype=np.uint16), (0.6, 0.22, 0.22),
                (1.0, -2.0, 0.5), ("mito", "dapi"))
    em = Volume(np.zeros((11, 30, 25), np.uint8), (0.05, 0.14, 0.14), (0.3, 0.2, 0.1))
    em_to_lm = Affine.from_linear_translation(rotation_matrix_xyz((4.0, -3.0, 20.0)),
                                              np.array([2.0, 3.0, 1.5]))
    monkeypatch.setattr(outputs, "_SLAB_PLANES", 4)  # 11 planes: slabs of 4, 4, 3
    timings = outputs._write_lm_in_em_files(tmp_path, lm, em, em_to_lm, frozenset(), name)
    assert set(timings) == {f"{name} (resampled as written)"}
    whole = outputs.resample_lm_to_em(lm, em, em_to_lm)
    assert whole.data.any()
    written = read_volume(tmp_path / name)
    np.testing.assert_array_equal(np.asarray(written.data), whole.data)
    assert written.voxel_size_um == pytest.approx(em.voxel_size_um)
    if name.endswith(".nrrd"):
        assert written.origin_xyz_um == pytest.approx(em.origin_xyz_um)
    else:  # the origin as the OME plane positions (what Bio-Formats reads)
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert 'PositionX="0.3"' in tif.ome_metadata
            assert 'PositionZ="0.1"' in tif.ome_metadata


def test_max_memory_reaches_the_threads_that_resample_lm_in_em(tmp_path):
    """--max-memory is a context variable: work submitted to a thread gets the caller's
    context (a bare pool thread starts without it and would not check)."""
    from concurrent.futures import ThreadPoolExecutor

    import clemalign.outputs as outputs
    from clemalign._threads import submit_in_context
    from clemalign.resources import memory_limit
    from clemalign.transforms import Affine

    lm = Volume(np.ones((2, 4, 30, 30), np.uint16), (0.6, 0.22, 0.22))
    em = Volume(np.zeros((20, 40, 40), np.uint8), (0.05, 0.14, 0.14))
    args = (tmp_path, lm, em, Affine.identity(), frozenset(), "lm_in_em.ome.tif")
    with memory_limit(1e-6), ThreadPoolExecutor(1) as pool:  # about 1 kB
        with pytest.raises(InputError, match="--roi"):
            submit_in_context(pool, outputs._write_lm_in_em_files, *args).result()
        assert not (tmp_path / "lm_in_em.ome.tif").exists()
        pool.submit(outputs._write_lm_in_em_files, *args).result()  # why it matters
    assert (tmp_path / "lm_in_em.ome.tif").exists()


@pytest.mark.parametrize("level", ["minimal", "standard"])
def test_outputs_levels_write_their_files_and_clear_stale_ones(section_result, tmp_path,
                                                               monkeypatch, level):
    """--outputs minimal writes the transform files only; standard all but the overlay;
    with --overwrite an earlier run's other files go, so the folder holds one run."""
    from clemalign.outputs import OUTPUT_LEVELS

    out, argv = _stand_in_run(section_result, tmp_path, monkeypatch, {})
    assert main(argv + ["--outputs", "all", "--overwrite"]) == 0  # everything first
    assert (out / "overlay.ome.tif").exists()
    # standard is the default (issue 22: the overlay is a second copy of lm_in_em)
    assert main(argv + (["--outputs", level] if level != "standard" else [])
                + ["--overwrite"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names <= OUTPUT_LEVELS[level] and "transform.json" in names
    assert ("report.html" in names) == (level == "standard")
    assert "overlay.ome.tif" not in names
    record = json.loads((out / "run.json").read_text())
    assert set(record["outputs"]) == names
    if level == "standard":  # the report links only what is there
        import re

        page = (out / "report.html").read_text()
        assert set(re.findall(r"href='([^']+)'", page)) <= names
        # Fiji's steps: the side-by-side one, and how to get the overlay
        assert "--outputs all</code>: it adds overlay.ome.tif" in page
        assert "Channels Tool" not in page


# ------------------------------------------------------- many pairs (issue 19, batch part)


def test_batch_registers_pairs_reports_failures_and_resumes(section_result, tmp_path, capsys):
    """Two good pairs and one with a missing file on a LocalCluster (threads): the good
    ones give register folders, the bad one a one-line message in the summary; a rerun
    skips the finished pairs."""
    import csv as _csv

    from clemalign.batch import BatchConfig, read_manifest, register_many

    _, em, lm = section_result
    write_ome_tiff(tmp_path / "em.ome.tif", em)
    write_ome_tiff(tmp_path / "lm.ome.tif", lm)
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("name,em,lm,lm_channel,no_mirror,outputs\n"
                        "a,em.ome.tif,lm.ome.tif,0,true,minimal\n"
                        "b,em.ome.tif,lm.ome.tif,0,false,minimal\n"
                        "c,missing.tif,lm.ome.tif,,,minimal\n")
    jobs = read_manifest(manifest)
    assert [j.name for j in jobs] == ["a", "b", "c"] and "--no-mirror" in jobs[0].argv
    config = BatchConfig(workers=2, processes=False)
    rows = register_many(jobs, tmp_path / "out", config=config)
    assert [r["status"] for r in rows] == ["done", "done", "bad input"]
    assert "missing.tif" in rows[2]["message"] and "\n" not in rows[2]["message"]
    assert all((tmp_path / "out" / n / "transform.json").is_file() for n in ("a", "b"))
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        summary = list(_csv.DictReader(f))
    assert [r["name"] for r in summary] == ["a", "b", "c"] and summary[0]["verdict"]
    assert "<table>" in (tmp_path / "out" / "summary.html").read_text()
    again = register_many(jobs, tmp_path / "out", config=config)
    assert [r["status"] for r in again] == ["skipped", "skipped", "bad input"]
    from clemalign.cli.app import out

    assert not out.quiet  # the pairs overlapped in threads; the console speaks again


def test_batch_console_quiet_while_any_pair_runs():
    """Overlapping pairs in threads: quiet from the first start to the last end, then the
    console's own setting (saving and restoring per pair left it quiet for good)."""
    from types import SimpleNamespace

    from clemalign.batch import _quiet_enter, _quiet_leave

    console = SimpleNamespace(quiet=False)
    _quiet_enter(console)  # pair a starts
    _quiet_enter(console)  # pair b starts
    _quiet_leave(console)  # a ends
    assert console.quiet
    _quiet_leave(console)  # b ends
    assert console.quiet is False


def test_batch_manifest_errors_are_one_line(tmp_path, capsys):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("em,other\nx.tif,1\n")
    _one_line_exit(capsys, ["batch", str(manifest), "-o", str(tmp_path / "o")], 2,
                   "pairs.csv", "em and lm")
    assert not (tmp_path / "o").exists()
