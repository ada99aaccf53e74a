"""A self-contained HTML report of one registration (figures embedded as PNG data).

No computation happens here: the report shows what :func:`clemalign.pipeline.register`
returned, the figures of :mod:`clemalign.figures` and, when landmarks were given, the
error table of :func:`clemalign.evaluation.tre_table`.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Mapping, Sequence

import numpy as np

from .pipeline import RegistrationResult
from .prealign import PrealignResult
from .prealign3d import Prealign3DResult
from .registration import Registration3DResult
from .transforms import CONVENTION, Affine, decompose
from .volume import Volume

__all__ = ["build_report"]

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.badge { display: inline-block; padding: 0.15em 0.7em; border-radius: 1em; color: white; }
.ok { background: #2e7d32; } .uncertain { background: #ef6c00; } .failed { background: #c62828; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
code, pre { background: #f6f6f6; padding: 0.1em 0.3em; font-size: 0.9em; }
.lead { font-size: 1.1em; } h3 { font-size: 1.0em; margin-bottom: 0.2em; }
figure.aside { float: right; width: 42%; margin: 0 0 1em 1.5em; }
h2.clear { clear: both; }
details > summary { cursor: pointer; color: #555; } .units { color: #555; font-size: 0.9em; }
pre { padding: 0.6em; overflow-x: auto; }
"""


def _matrix_table(m: np.ndarray) -> str:
    rows = "".join("<tr>" + "".join(f"<td>{v:.6f}</td>" for v in row) + "</tr>" for row in m)
    return f"<table>{rows}</table>"


def _kv_table(items: Sequence[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th class='l'>{html.escape(str(k))}</th>"
                   f"<td class='l'>{html.escape(str(v))}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def _fmt(values, digits: int = 3) -> str:
    return ", ".join(f"{float(v):.{digits}f}" for v in values)


def _decomposition(affine: Affine) -> str:
    d = decompose(affine)
    return _kv_table([
        ("translation (x, y, z)", f"{_fmt(d['translation_um'], 3)} µm"),
        ("rotation about x, y, z", f"{_fmt(d['rotation_deg'], 2)} °"),
        ("mirror", "yes" if d["mirror"] else "no"),
        ("principal scales", _fmt(d["scale"], 4)),
        ("shear (largest)", f"{d['shear']:.4f}"),
    ])


def build_report(result: RegistrationResult, em: Volume, lm: Volume, *,
                 figures: Mapping[str, tuple[bytes, str]],
                 evaluation: dict | None = None, files: Sequence[str] = ()) -> str:
    """The report as one HTML string.

    Parameters
    ----------
    result : RegistrationResult
    em, lm : Volume
        The inputs (for names, shapes and voxel sizes).
    figures : mapping
        Title → (PNG bytes, caption), embedded in this order.
    evaluation : dict, optional
        :func:`~clemalign.evaluation.tre_table` output.
    files : sequence of str
        Output files written beside the report.
    """
    from . import __version__

    parts = _header(result, __version__)
    parts += _summary_section(result, em, lm, figures)
    parts += _how_to_open_section(files)
    parts += _files_section(files)
    if evaluation is not None:
        parts += _evaluation_section(evaluation)
    parts += _figures_section(figures)
    # what an image analyst checks, folded: a biologist reads the part above
    parts.append("<h2>Technical details</h2><details><summary>inputs, transform matrices, "
                 "confidence evidence, scales, orientation search, optimiser stages, "
                 "timings, parameters</summary>")
    parts.append(f"<p class='units'>{UNITS}</p>")
    parts += _inputs_section(result, em, lm)
    parts += _transform_section(result)
    parts += _confidence_section(result.confidence)
    parts += _representation_section(result)
    parts.append("<h2>Orientation</h2>")
    if isinstance(result.prealign, Prealign3DResult):
        parts += _prealign_3d_sections(result.prealign)
    else:
        parts += _prealign_xy_sections(result.prealign)
    parts += _starts_section(result.fine)
    parts += _stages_section(result)
    parts += _footer(result)
    parts.append("</details></body></html>")
    return "\n".join(parts)


UNITS = ("Units: µm = micrometre; ° = degree; “nats” measure how much information the two "
         "images share (mutual information: higher means a better match); “robust z” says "
         "how many typical spreads a score stands above the others (above about 3 is clear).")

_VERDICT_TEXT = {
    "ok": "The overlay is very likely right: the images match clearly better here than at "
          "any other placement tried.",
    "uncertain": "The overlay may be wrong: the match is not clearly better than some other "
                 "placements. Check it before using it.",
    "failed": "The overlay is probably wrong: the images do not match better here than "
              "elsewhere (wrong channel, no shared structures, or a region outside the "
              "other image).",
}


def _summary_section(result: RegistrationResult, em: Volume, lm: Volume,
                     figures: Mapping[str, tuple[bytes, str]]) -> list[str]:
    """Plain language: what was done, what the verdict means, what to check; the overlay."""
    conf = result.confidence
    d = decompose(result.em_to_lm)
    rx, ry, rz = d["rotation_deg"]
    t = d["translation_um"]
    centre = result.em_to_lm.apply(em.index_to_physical(np.array(
        [(s.start + s.stop - 1) / 2.0 for s in result.roi.slices], float)))
    in_plane = result.fine.z_search.get("mode") == "in-plane"
    lines = [
        f"<p class='lead'>{html.escape(_VERDICT_TEXT[conf['verdict']])}</p>",
        "<ul>",
        f"<li>The EM region (voxels {html.escape(result.roi.to_str())}) lies in the LM "
        f"channel <b>{html.escape(str(result.lm_channel))}</b> around "
        f"({_fmt(centre, 1)}) µm (x, y, z), turned by {rz:.1f}° in the image plane"
        + (", mirrored (the two were imaged from opposite sides)" if d["mirror"] else "")
        + (f", tilted {rx:.1f}° / {ry:.1f}° about x / y" if not in_plane else "")
        + f"; shift {_fmt(t, 1)} µm.</li>",
        "<li>" + ("The EM is a section: it was refined in its plane; its depth in the LM is "
                  f"LM plane {result.fine.z_search.get('lm_plane')}." if in_plane else
                  "Refined in 3D (rigid, then affine) by mutual information.") + "</li>",
        "<li>What to check: in the overlay below (and in the overlay files), "
        "fluorescent structures should sit on the EM structures they label, across the whole "
        "region" + (", in every slice" if em.shape_zyx[0] > 1 else "") + ".</li>",
    ]
    if conf["verdict"] != "ok":
        lines.append("<li>Why not ok: " + html.escape("; ".join(conf["reasons"])) + ". Try an "
                     "ROI on a region with fluorescent structures, another LM channel, or "
                     "restrict the search (--max-rotation-deg, --no-mirror).</li>")
    lines.append("</ul>")
    first = next((name for name in ("Overlay slices", "Checkerboard") if name in figures), None)
    if first is not None:
        png, caption = figures[first]
        data = base64.b64encode(png).decode("ascii")
        lines.append(f"<figure class='aside'><img alt='{html.escape(first)} (summary)' "
                     f"src='data:image/png;base64,{data}'><figcaption><b>{html.escape(first)}"
                     f".</b> {html.escape(caption)}</figcaption></figure>")
    return ["<h2>Summary</h2>", *lines]


_HOW_TO = [
    ("Fiji", ["Open <a href='overlay.ome.tif'>overlay.ome.tif</a> (File › Open, or drag it "
              "onto Fiji; Bio-Formats reads the µm calibration): channel 0 is the EM, the "
              "others the LM channels on the EM grid. Image › Color › Channels Tool shows "
              "them as a composite; adjust each channel's contrast.",
              "To compare the EM and the LM side by side, open the EM file and "
              "<a href='lm_in_em.ome.tif'>lm_in_em.ome.tif</a>: they have the same size and "
              "calibration (Analyze › Tools › Synchronize Windows moves through both "
              "together).",
              ("For one composite of the EM and <a href='lm_in_em.ome.tif'>lm_in_em.ome.tif"
               "</a> (Fiji cannot merge an 8-bit EM with a 16-bit LM), run again with "
               "<code>--outputs all</code>: it adds overlay.ome.tif.", "overlay.ome.tif")]),
    ("napari", ["Drag the EM file and <a href='lm_in_em.ome.tif'>lm_in_em.ome.tif</a> into "
                "napari (or <code>viewer.add_image</code> with <code>scale</code> = the EM "
                "voxel size): they overlay voxel for voxel.",
                "To place the original LM instead, use the <code>lm_affine_zyx</code> of "
                "<a href='napari_affine.json'>napari_affine.json</a> as the LM layer's "
                "<code>affine</code> (2D slicing of a tilted LM plane is approximate; the 3D "
                "view is exact)."]),
    ("3D Slicer", ["Add Data: <a href='lm_in_em.nrrd'>lm_in_em.nrrd</a> (written with "
                   "<code>--volume-format nrrd</code>) and the EM as NRRD "
                   "(<code>clemalign convert EM_FILE em.nrrd</code>): they overlay voxel "
                   "for voxel. Slicer labels the lengths mm; read them as µm.",
                   "To place the original LM instead, convert it to NRRD (<code>clemalign convert "
                   "LM_FILE lm.nrrd</code>), Add Data <a href='transform.tfm'>transform.tfm"
                   "</a>, and in the Data module drag the LM under that transform (the file "
                   "holds ITK's EM → LM resampling direction, which Slicer expects)."]),
    ("BigWarp", ["Open the LM as moving and the EM as target image in BigWarp (Fiji › "
                 "Plugins › BigDataViewer › BigWarp).",
                 "File › Import landmarks: <a href='bigwarp_landmarks.csv'>"
                 "bigwarp_landmarks.csv</a> (the ROI corners and centre, in µm); refine by "
                 "hand if needed."]),
    ("eC-CLEM (Icy)", ["Open the LM (source) and the EM (target) with their pixel sizes in "
                       "µm.",
                       "Load <a href='ecclem_transform.xml'>ecclem_transform.xml</a> as the "
                       "transformation (it holds the point pairs eC-CLEM refits, and the "
                       "matrix)."]),
    ("Python / other tools", ["<a href='transform.json'>transform.json</a>: "
                              "<code>em_to_lm</code> 4×4 in µm (and the inverse); "
                              "<a href='transform.tfm'>transform.tfm</a> for SimpleITK/ITK/"
                              "elastix (EM fixed); <a href='ngff_transform.json'>"
                              "ngff_transform.json</a> for OME-NGFF viewers."]),
]


def _how_to_open_section(files: Sequence[str]) -> list[str]:
    """Two to four steps per program, naming the files written."""
    if not files:
        return []
    import re

    parts = ["<h2>How to open these results</h2>"]
    for program, steps in _HOW_TO:
        # only the steps whose files this run wrote (--outputs chooses them); a
        # (step, file) pair is a step for when that file was not written
        steps = [text for text, absent in (s if isinstance(s, tuple) else (s, None)
                                           for s in steps)
                 if (absent is None or absent not in files)
                 and all(name in files for name in re.findall(r"href='([^']+)'", text))]
        if steps:
            parts.append(f"<h3>{html.escape(program)}</h3><ol>"
                         + "".join(f"<li>{step}</li>" for step in steps) + "</ol>")
    return parts


def _files_section(files: Sequence[str]) -> list[str]:
    """The output files, as links (the report sits beside them)."""
    if not files:
        return []
    return ["<h2 class='clear'>Files</h2><ul>" + "".join(
        f"<li><a href='{html.escape(f)}'>{html.escape(f)}</a></li>" for f in files) + "</ul>"]


def _header(result: RegistrationResult, version: str) -> list[str]:
    """Title and verdict badge (the summary below says what the verdict means)."""
    parts: list[str] = []
    conf = result.confidence
    verdict = conf["verdict"]
    parts += [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>clemalign report</title><style>{_CSS}</style></head><body>",
             "<h1>clemalign registration report</h1>",
             f"<p>Confidence: <span class='badge {verdict}'>{conf['score']:.2f} — {verdict}"
             f"</span> clemalign {html.escape(version)}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}.</p>"]
    return parts


def _inputs_section(result: RegistrationResult, em: Volume, lm: Volume) -> list[str]:
    """The input files, shapes, voxel sizes, channel, ROI and pre-alignment path."""
    parts: list[str] = []
    parts.append("<h2>Inputs</h2>")
    lm_names = ", ".join(lm.channel_names) if lm.channel_names else f"{lm.n_channels} channel(s)"
    parts.append(_kv_table([
        ("EM file", em.source or "(in memory)"),
        ("EM shape (z, y, x)", " × ".join(str(n) for n in em.shape_zyx)),
        ("EM voxel size (z, y, x)", f"{_fmt(em.voxel_size_um, 4)} µm"),
        ("LM file", lm.source or "(in memory)"),
        ("LM shape (c, z, y, x)", " × ".join(str(n) for n in lm.data.shape)),
        ("LM voxel size (z, y, x)", f"{_fmt(lm.voxel_size_um, 4)} µm"),
        ("LM channels", lm_names),
        ("LM channel registered", str(result.lm_channel)),
        ("EM ROI (voxels z0:z1,y0:y1,x0:x1)", result.roi.to_str()),
        ("pre-alignment", f"{result.prealign_choice.get('mode', 'xy')}: "
                          f"{result.prealign_choice.get('reason', '')}"),
    ]))
    return parts


def _transform_section(result: RegistrationResult) -> list[str]:
    """Both matrices and the decomposition."""
    parts: list[str] = []
    parts.append("<h2>Transform</h2>")
    parts.append(f"<p><code>em_to_lm</code> (µm). {html.escape(CONVENTION)}.</p>")
    parts.append(_matrix_table(result.em_to_lm.matrix))
    parts.append(_decomposition(result.em_to_lm))
    parts.append("<p><code>lm_to_em</code> (µm):</p>" + _matrix_table(result.lm_to_em.matrix))
    return parts


def _confidence_section(conf: dict) -> list[str]:
    """The evidence, each term and the score."""
    parts: list[str] = []
    parts.append("<h2>Confidence evidence</h2>")
    ev, th, terms, lv = conf["evidence"], conf["thresholds"], conf["terms"], conf["levels"]
    parts.append(_kv_table([
        ("final mutual information (LoG)", f"{ev['mutual_information']:.3f} nats"),
        ("best MI at wrong placements (±¼ ROI, 90/180/270°)",
         f"{ev['mutual_information_perturbed_max']:.3f} nats"),
        ("MI contrast → term", f"{ev['mi_contrast']:.3f} nats → {terms['mi_contrast']:.2f} "
                               f"(0 at {lv['mi_contrast'][0]}, 1 at {lv['mi_contrast'][1]})"),
        ("pre-alignment peak margin → term",
         f"{ev['prealign_margin']:.2f} z → {terms['prealign_margin']:.2f} "
         f"(0 at {lv['prealign_margin'][0]}, 1 at {lv['prealign_margin'][1]})"),
        ("orientation margin → term",
         f"{ev['orientation_margin']:.2f} z → {terms['orientation_margin']:.2f} "
         f"(0 at {lv['orientation_margin'][0]}, 1 at {lv['orientation_margin'][1]})"),
        ("plausible transform", f"{'yes' if terms['plausible'] else 'no'} (scales "
                                f"{_fmt(ev['scales'], 3)} within {th['scale_range']}, shear "
                                f"{ev['shear']:.3f} ≤ {th['max_shear']})"),
        ("score", f"MI term × (½ + ½ margin term) × (½ + ½ orientation term) × plausible "
                  f"= {conf['score']:.3f}; ok ≥ {th['ok_above']}, failed < {th['failed_below']}"),
    ]))
    return parts


def _starts_section(fine: Registration3DResult) -> list[str]:
    """The 3D stage's starts and its search results (or the in-plane refinement's)."""
    parts: list[str] = []
    if fine.z_search.get("mode") == "in-plane":
        search = fine.z_search
        parts.append("<p>The 3D stage did not run: " + html.escape(search["reason"])
                     + ". The pre-alignment was refined in the plane (rigid, then "
                     "similarity or affine), each step kept only if it raised the mutual "
                     "information; EM z maps one to one onto the LM plane below.</p>")
        parts.append(_kv_table([
            ("LM plane", f"{search['lm_plane']} (z {search['lm_plane_z_um']:.2f} µm)"),
            ("kept", search["kept"]),
            ("blob-response scale", f"{fine.log_sigma_um:.2f} µm"),
            ("working pixel", f"{fine.working_spacing_um[2]:.3f} µm"),
            ("mutual information start → end", f"{-fine.metric_initial:.3f} → "
                                                f"{-fine.metric_final:.3f} nats"),
        ]))
        return parts
    start_rows = "".join(
        f"<tr><td>{k}</td><td class='l'>{'yes' if st['mirrored'] else 'no'}</td>"
        f"<td class='l'>{'yes' if st.get('reversed_z') else 'no'}</td>"
        f"<td>{st['z_offset_um']:.2f}</td><td>{st['mutual_information_rigid']:.3f}</td>"
        f"<td class='l'>{'chosen' if st['chosen'] else ''}</td></tr>"
        for k, st in enumerate(fine.starts))
    parts.append("<p>Starts tried by the 3D stage (z search, both z directions for an XY "
                 "start, tilt; rigid):</p><table><tr><th>start</th><th class='l'>mirrored</th>"
                 "<th class='l'>z reversed</th><th>z offset µm</th>"
                 f"<th>MI after rigid</th><th class='l'></th></tr>{start_rows}</table>")
    tilt = fine.z_search.get("tilt_deg")
    by_dir = fine.z_search.get("best_mi_by_direction")
    parts.append(_kv_table([
        ("z offset found", f"{fine.z_offset_um:.2f} µm"),
        ("tilt found about x, y (XY start)", f"{_fmt(tilt, 2)} °" if tilt else "not searched"),
        ("best MI by z direction", ", ".join(f"{k} {v:.3f}" for k, v in by_dir.items())
         if by_dir else "one direction searched"),
        ("LoG sigma of the 3D stage", f"{fine.log_sigma_um:.2f} µm"),
        ("working voxel (z, y, x)", f"{_fmt(fine.working_spacing_um, 3)} µm"),
        ("mutual information start → end", f"{-fine.metric_initial:.3f} → "
                                            f"{-fine.metric_final:.3f} nats"),
    ]))
    return parts


def _stop_text(stage) -> str:
    """The stop condition, and the parameters the stage held (affine z terms)."""
    if not stage.held:
        return stage.stop_condition
    return (f"{stage.stop_condition} (held at the rigid result: {', '.join(stage.held)} — "
            "an XY pre-alignment does not fix how EM z maps)")


def _stages_section(result: RegistrationResult) -> list[str]:
    """SimpleITK stages and the timings of every step."""
    parts: list[str] = []
    parts.append("<h2>Stages</h2>")
    stage_rows = "".join(
        f"<tr><td class='l'>{s.name}</td><td>{s.metric:.4f}</td><td>{s.iterations}</td>"
        f"<td class='l'>{'yes' if s.kept else 'no'}</td>"
        f"<td class='l'>{html.escape(_stop_text(s))}</td><td>{s.seconds:.2f}</td></tr>"
        for s in result.fine.stages)
    parts.append("<table><tr><th class='l'>stage</th><th>Mattes metric</th><th>iterations</th>"
                 "<th class='l'>kept</th><th class='l'>stop condition</th><th>s</th></tr>"
                 f"{stage_rows}</table>")

    parts.append("<h2>Timings</h2>")
    pre_t, fine_t = result.prealign.timings_s, result.fine.timings_s
    timing_items = [(f"pre-alignment: {k}", f"{v:.2f} s") for k, v in pre_t.items()]
    timing_items += [(f"3D registration: {k}", f"{v:.2f} s") for k, v in fine_t.items()]
    timing_items.append(("total", f"{result.timings_s['total']:.2f} s"))
    parts.append(_kv_table(timing_items))
    return parts


def _evaluation_section(evaluation: dict) -> list[str]:
    """Landmark errors (with ``--landmarks``)."""
    parts: list[str] = []
    s = evaluation["summary"]
    px = "em_pixel_um" in s
    parts.append("<h2>Landmark evaluation</h2>")
    parts.append(f"<p>{s['n']} landmarks: mean {s['mean_um']:.3f} µm, median "
                 f"{s['median_um']:.3f} µm, max {s['max_um']:.3f} µm"
                 + (f" ({s['mean_em_px']:.1f} / {s['median_em_px']:.1f} / "
                    f"{s['max_em_px']:.1f} EM px)" if px else "") + ".</p>")
    head = "<tr><th class='l'>landmark</th><th>error µm</th>" + \
        ("<th>EM px</th>" if px else "") + "</tr>"
    body = "".join(f"<tr><td class='l'>{html.escape(r['name'])}</td>"
                   f"<td>{r['error_um']:.3f}</td>"
                   + (f"<td>{r['error_em_px']:.1f}</td>" if px else "") + "</tr>"
                   for r in evaluation["landmarks"])
    parts.append(f"<table>{head}{body}</table>")
    return parts


def _figures_section(figures: Mapping[str, tuple[bytes, str]]) -> list[str]:
    """The figures, embedded as PNG."""
    parts: list[str] = []
    parts.append("<h2>Figures</h2>")
    for title, (png, caption) in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,"
                     f"{data}'><figcaption><b>{html.escape(title)}.</b> "
                     f"{html.escape(caption)}</figcaption></figure>")
    return parts


def _footer(result: RegistrationResult) -> list[str]:
    """The configuration."""
    return ["<h2>Parameters</h2><details><summary>full configuration (run.json)</summary><pre>"
            + html.escape(json.dumps(result.config.to_dict(), indent=2)) + "</pre></details>"]


def _other(polarity: str) -> str:
    return "bright" if polarity == "dark" else "dark"


def _representation_section(result: RegistrationResult) -> list[str]:
    """Stage 1: the channel, scales and polarities used, and how they were decided."""
    rows = []
    if result.channel_scores:
        rows.append(("LM channel", f"{result.lm_channel} (the clearest match; not given)"))
        for c in result.channel_scores:
            verdict = "matches" if c.matches else f"matches nothing {c.note}".strip()
            rows.append((f"  channel {c.channel} ({c.name})",
                         f"peak margin {c.margin:.2f} z at {c.sigma_um:g} µm: {verdict}"))
    else:
        rows.append(("LM channel", f"{result.lm_channel} (given)"))
    sc = result.scales
    if sc is not None:
        for label, value in (("EM LoG scale", sc.em_sigma_um), ("LM LoG scale", sc.lm_sigma_um),
                             ("LM structure scale (3D)", sc.structure_sigma_um)):
            if value is not None:
                rows.append((label, f"{value:.3f} µm (selected by blob counting)"))
        rows.append(("LM polarity", f"{sc.lm_polarity} ({sc.lm_polarity_how})"))
    return ["<h2>Representation</h2>", _kv_table(rows)]


def _prealign_xy_sections(pre: PrealignResult) -> list[str]:
    hyp_rows = "".join(
        f"<tr><td>{h.angle_deg:.1f}</td><td class='l'>{'yes' if h.mirrored else 'no'}</td>"
        f"<td>{_fmt(h.centre_xy_um, 2)}</td><td>{h.score:.2f}</td></tr>"
        for h in pre.hypotheses)
    n_cand = len(pre.candidates)
    n_in = sum(c.inlier for c in pre.candidates)
    ncc = pre.ncc.to_dict() if pre.ncc else {}
    pol = pre.polarity
    return [
        "<p>Best placement of each orientation searched at every scale "
        "(XY pre-alignment):</p><table><tr><th>angle °</th><th class='l'>mirrored</th>"
        f"<th>LM centre (x, y) µm</th><th>score (z)</th></tr>{hyp_rows}</table>",
        _kv_table([
            ("pre-alignment method", pre.method),
            ("EM ROI centre → LM (x, y)", f"{_fmt(pre.centre_lm_xy_um, 2)} µm"),
            ("XY shift", f"{_fmt(pre.shift_xy_um, 2)} µm"),
            ("in-plane angle", f"{pre.angle_deg:.2f} °"
                               + (" (EM mirrored)" if pre.mirrored else "")),
            ("candidates (inliers)", f"{n_cand} ({n_in})"),
            ("LoG scales EM / LM", f"{pre.sigmas_um['em']:.3f} / {pre.sigmas_um['lm']:.3f} µm"),
            ("NCC scales (margins), kept", f"{_fmt(ncc.get('sigmas_um', []), 2)} µm "
                                           f"({_fmt(ncc.get('margins', []), 2)}), "
                                           f"{ncc.get('chosen_sigma_um', '-')} µm"),
            ("polarity EM / LM", f"{pol.em} ({pol.em_how}"
                                 + (f", peak margin {pol.em_margin:+.1f} z over "
                                    f"{_other(pol.em)}" if np.isfinite(pol.em_margin) else "")
                                 + f") / {pol.lm} ({pol.lm_how})"),
            ("pre-alignment confidence", json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v
                 for k, v in pre.confidence.items()})),
        ])]


def _prealign_3d_sections(pre: Prealign3DResult) -> list[str]:
    c = pre.em_roi_centre_xyz_um
    hyp_rows = "".join(
        f"<tr><td>{h.angle_deg:.1f}</td><td class='l'>{'yes' if h.mirrored else 'no'}</td>"
        f"<td class='l'>{'yes' if h.flipped_z else 'no'}</td>"
        f"<td>{_fmt(h.em_to_lm(c).apply(c), 2)}</td><td>{h.scan_z:.2f}</td>"
        f"<td>{h.ncc:.3f}</td></tr>" for h in pre.hypotheses)
    rot = decompose(pre.initial_em_to_lm)["rotation_deg"]
    return [
        "<p>Placements refined by the 3D pre-alignment (best first):</p><table><tr>"
        "<th>scan angle °</th><th class='l'>mirrored</th><th class='l'>z reversed</th>"
        "<th>ROI centre in LM (x, y, z) µm</th><th>scan score (z)</th>"
        f"<th>refined NCC</th></tr>{hyp_rows}</table>",
        _kv_table([
            ("pre-alignment method", "3D search of the LM volume"),
            ("EM ROI centre → LM (x, y, z)",
             f"{_fmt(pre.initial_em_to_lm.apply(c), 2)} µm"),
            ("rotation about x, y, z", f"{_fmt(rot, 2)} °"),
            ("EM contrast found", pre.scan["em_polarity"]),
            ("structure scale (3D LoG σ)", f"{pre.sigmas_um['structure']:.2f} µm"),
            ("scan grid, scale, angle step",
             f"{pre.scan['pixel_um']:.2f} µm, σ {pre.scan['sigma_um']:.2f} µm, "
             f"{pre.scan['step_deg']:.1f} °"),
            ("refinement grids (µm) and scales", f"{_fmt(pre.levels_um, 2)}; "
                                                f"σ {_fmt(pre.sigmas_um['levels'], 2)}"),
            ("pre-alignment confidence", json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v
                 for k, v in pre.confidence.items()})),
        ])]
