"""Parameters and results of the 3D registration (:func:`clemalign.registration.register_3d`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import InputError
from ..transforms import Affine

__all__ = ["AFFINE_EM_Z_TERMS", "AFFINE_PARAMETERS", "AFFINE_Z_TERMS", "AffineZ", "HELD_TERMS",
           "Model",
           "Registration3DConfig", "Registration3DResult", "StageResult"]

Model = Literal["rigid", "affine"]
AffineZ = Literal["auto", "free", "em_z", "rigid", "in_plane"]

# the affine parameters SimpleITK optimises, row-major matrix then translation
AFFINE_PARAMETERS = ("xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz", "tx", "ty", "tz")
# held at the rigid result: how EM z maps (affine_z="em_z"), and also what reaches LM z
# from EM x and y (affine_z="rigid")
AFFINE_EM_Z_TERMS = ("xz", "yz", "zz")
AFFINE_Z_TERMS = ("xz", "yz", "zx", "zy", "zz")
# affine parameters each ``affine_z`` setting holds at the stage's start
HELD_TERMS = {"free": (), "em_z": AFFINE_EM_Z_TERMS, "rigid": AFFINE_Z_TERMS,
              "in_plane": (*AFFINE_Z_TERMS, "tz")}


@dataclass(frozen=True)
class Registration3DConfig:
    """Parameters of :func:`register_3d`.

    Attributes
    ----------
    model : {"rigid", "affine"}
        Final transform model (affine runs rigid first).
    representation : {"log", "raw"}
        Register the LoG images (the method) or the raw intensities (for the ablation).
    working_pixel_um : float, optional
        Lateral working pixel, µm (default: the largest of the LM's pixel, ``sigma / 2.25``
        and the pixel that keeps the EM ROI within ``working_voxels``).
    working_z_um : float, optional
        Working z spacing, µm (default: half the LM's z voxel, at least the EM's z voxel).
    log_sigma_um : float, optional
        LoG scale, µm.  Default: ``max(1.0, lm_sigma_um)`` with the selected LM scale given
        through ``register_3d(..., lm_sigma_um=...)`` (1 µm when none is given).
        Measured (affine TRE): on small simulated pairs 0.33 µm diverged on 1 of 3
        (MI 0.05), 0.5 µm gave 0.10–0.26 µm, 1.0 µm 0.19–0.22 µm and raw intensities
        0.36–0.63 µm; on full-size pairs 0.44 µm diverged on 2 of 2 while 1.0 µm gave
        0.25–0.36 µm.
    margin_um : float
        LM crop margin around the pre-aligned ROI in x and y, µm.
    z_search : bool
        Search the z offset with the metric before the rigid stage.
    z_step_um : float, optional
        Step of the z search, µm (default: half the LM z voxel).
    histogram_bins : int
        Mattes mutual-information bins.
    samples : int
        Metric samples per evaluation (random, fixed ``seed``).
    seed : int
        Seed of the metric samples (ours and SimpleITK's).
    shrink_factors : tuple of int
        Multi-resolution pyramid: shrink factor per level.
    smoothing_sigmas_um : tuple of float
        Multi-resolution pyramid: Gaussian smoothing per level, µm.
    rigid_iterations, affine_iterations : int
        Optimiser iterations per pyramid level of each stage.
    learning_rate_um : float
        Initial step of the regular-step gradient descent, in µm of physical shift
        (1 µm made the rigid stage wander off on small pairs; 0.25 µm did not).
    working_voxels : int
        The working pixel is coarsened until the EM ROI holds at most this many voxels
        (a 300×300×160 µm microCT ROI: 1.55 µm instead of 0.75 µm).
    max_tilt_deg : float
        Tilts about x and y (degrees) searched after the z search when the start's z is
        unknown (an XY pre-alignment; 0 = no tilt search).
    min_overlap_fraction : float
        The affine stage runs only where the rigid result maps at least this fraction of
        the EM working voxels inside the LM (an unrelated LM can leave a handful, on which
        an affine fit is meaningless and ITK's histogram degenerates).
    affine_z : {"auto", "free", "em_z", "rigid"}
        The affine stage's z terms: ``"free"`` fits all 12 parameters; ``"em_z"`` holds
        how EM z maps (:data:`AFFINE_EM_Z_TERMS`: ``xz``, ``yz``, ``zz``) at the rigid
        result; ``"rigid"`` also holds what reaches LM z from EM x and y (``zx``, ``zy``:
        the tilt, :data:`AFFINE_Z_TERMS`).  ``"auto"``: ``"em_z"`` when the start's z is
        unknown (an XY pre-alignment: a monolayer or section, whose few µm of cells do
        not fix how EM z maps — fitted freely ``zz`` came out 0.87–0.94 for a truth
        within 3 % of 1 — while its wide field does fix the tilt), ``"free"`` after a 3D
        pre-alignment.  ``"in_plane"`` also holds the z translation: only the in-plane
        2D affine moves (an option of the final level, see ``final_affine_z``).
        Measured on 20 tilted and 20 untilted monolayer pairs
        (``benchmarks/results/mono_ablation_*.md``): tilted < 0.5 µm free 16, em_z 19,
        rigid 18 (medians 0.334, 0.321, 0.360 µm); untilted medians 0.269, 0.281,
        0.296 µm.
    plane_model : {"similarity", "affine"}
        The second stage of an in-plane refinement (sections and stacks too thin for a
        3D fit), after its rigid stage, when ``model`` is ``"affine"``.  Measured
        (``benchmarks/results/sections_2d*.md``): on 20 DeepCLEM sections (truth:
        rotation and shift) the similarity kept every case within 0.093 µm of its
        pre-alignment (median 0.080 µm) while the affine moved one 0.21 µm away (median
        0.093 µm); on simulated sections whose truth has 2–3 % anisotropic scale the
        affine is better (4 pairs: 0.07–0.51 vs 0.12–1.02 µm).
    final_levels_um : tuple of (float, float)
        Last affine levels after the stages above, each from the one before, on the LoG
        at these finer scales, ``(σ_z, σ_lateral)`` in µm, on one working grid of lateral
        pixel ``max(LM pixel, σ_lateral/2.25)``; each is kept only if it raises the
        mutual information at its own scale; levels under two LM or EM pixels, or not
        finer than the stages' σ, are skipped.  The confidence evidence stays that of the
        stages above (its levels were calibrated there).  Empty: none.  Default: σ 0.5 µm
        in-plane with 1 µm along z (the LM's axial resolution; it fixes x and y where
        the 1 µm LoG left a bias of ~0.1 µm without moving the z terms on few
        structures), then 0.5 µm isotropic (z terms too, where the data fix them).
        Measured (``benchmarks/results/final_level_ablation_*.md``, median landmark
        error): 20 registration-accuracy pairs 0.281 µm without, 0.129 with the
        isotropic level alone, 0.302 with the anisotropic alone, 0.125 with both; peer
        pairs (default / border / EM noise) 0.157 / 0.153 / 0.154 without, 0.157 /
        0.153 / 0.192 isotropic alone, 0.118 / 0.119 / 0.141 both.
    final_affine_z : {"auto", "free", "em_z", "rigid", "in_plane"}
        ``affine_z`` of the final levels (``"auto"``: that of the stages above).
    final_samples : int, optional
        Metric samples of the final levels, SimpleITK's and ours (None: ``samples``).
        Fewer are faster but less accurate: on the 20 registration-accuracy pairs
        (median / mean landmark error, µm; the levels' median seconds) 60 000: 0.120 /
        0.132, 6.3 s; 40 000: 0.134 / 0.157, 5.0 s; 30 000: 0.203 / 0.187, 4.8 s
        (``final_level_ablation_accuracy_samples.md``).
    final_smoothing : bool
        Smooth the final levels' pyramid levels as the stages' (``smoothing_sigmas_um``)
        or not (the default): their LoG is smooth already, and
        SimpleITK's smoothing of the full-size images on one thread was a third of
        their time.  Measured on the 20 registration-accuracy pairs (median / mean
        landmark error): 0.119 / 0.137 µm smoothed, 0.120 / 0.132 µm not, 7.8 → 6.1 s
        (``final_level_ablation_accuracy_issue22.md``).
    """

    model: Model = "affine"
    representation: Literal["log", "raw"] = "log"
    working_pixel_um: float | None = None
    working_z_um: float | None = None
    log_sigma_um: float | None = None
    margin_um: float = 10.0
    z_search: bool = True
    z_step_um: float | None = None
    histogram_bins: int = 32
    samples: int = 60_000
    seed: int = 20261124
    shrink_factors: tuple[int, ...] = (2, 1)
    smoothing_sigmas_um: tuple[float, ...] = (0.5, 0.0)
    rigid_iterations: int = 150
    affine_iterations: int = 150
    learning_rate_um: float = 0.25
    working_voxels: int = 4_000_000
    max_tilt_deg: float = 10.0
    min_overlap_fraction: float = 0.02
    affine_z: AffineZ = "auto"
    plane_model: Literal["similarity", "affine"] = "similarity"
    final_levels_um: tuple[tuple[float, float], ...] = ((1.0, 0.5), (0.5, 0.5))
    final_affine_z: AffineZ = "auto"
    final_smoothing: bool = False
    final_samples: int | None = None

    def __post_init__(self) -> None:
        # Python names in the messages: the CLI validates its own flags (click.Choice)
        if self.model not in ("rigid", "affine"):
            raise InputError(f"model: expected 'rigid' or 'affine', got {self.model!r}")
        for level in self.final_levels_um:
            if len(level) != 2 or not all(v > 0 for v in level):
                raise InputError(f"final_levels_um: expected (σ_z, σ_lateral) pairs of "
                                 f"positive scales (µm), got {level!r}")
        for name in ("affine_z", "final_affine_z"):
            if getattr(self, name) not in ("auto", *HELD_TERMS):
                raise InputError(f"{name}: expected 'auto', 'free', 'em_z', 'rigid' or "
                                 f"'in_plane', got {getattr(self, name)!r}")
        if self.plane_model not in ("similarity", "affine"):
            raise InputError(f"plane_model: expected 'similarity' or 'affine', got "
                             f"{self.plane_model!r}")
        if self.representation not in ("log", "raw"):
            raise InputError(f"representation: expected 'log' or 'raw', got "
                             f"{self.representation!r}")
        for name in ("samples", "final_samples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 100):
                raise InputError(f"{name}: expected a whole number of samples ≥ 100, got "
                                 f"{value!r}")
        if len(self.shrink_factors) != len(self.smoothing_sigmas_um):
            raise InputError("shrink_factors and smoothing_sigmas_um need the same length")


@dataclass(frozen=True)
class StageResult:
    """One optimisation stage of :func:`register_3d`.

    Attributes
    ----------
    name : {"rigid", "affine"}
        The transform model of the stage.
    em_to_lm : Affine
        Its result, EM physical µm → LM physical µm.
    parameters : tuple of float
        SimpleITK's transform parameters (empty when the stage did not run).
    metric : float
        SimpleITK's final metric value (minus Mattes MI on the stage's own samples, nats);
        0 when the stage did not run or lost the overlap.
    iterations : int
        Optimiser iterations of the last pyramid level.
    stop_condition : str
        SimpleITK's stop condition, or why the stage did not run or was not kept.
    seconds : float
        Wall time of the optimisation, s.
    kept : bool
        Whether its result was kept (an affine stage that lowers the MI is not).
    lost_overlap : bool
        SimpleITK moved every sample outside the LM; the stage's result is its start.
    held : tuple of str
        Affine parameters (:data:`AFFINE_PARAMETERS` names) held at the start's values.
    """

    name: str
    em_to_lm: Affine
    parameters: tuple[float, ...]
    metric: float
    iterations: int
    stop_condition: str
    seconds: float
    kept: bool = True
    lost_overlap: bool = False
    held: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready record (``em_to_lm`` as a nested 4×4 list)."""
        return {"em_to_lm": self.em_to_lm.to_list(), "parameters": list(self.parameters),
                "metric": self.metric, "iterations": self.iterations,
                "stop_condition": self.stop_condition, "seconds": self.seconds,
                "kept": self.kept, "lost_overlap": self.lost_overlap,
                "held_at_rigid": list(self.held)}


@dataclass(frozen=True, eq=False)
class Registration3DResult:
    """Result of :func:`register_3d`.

    ``em_to_lm`` is the final transform (EM physical µm → LM physical µm).
    ``metric_initial`` / ``metric_final`` are minus the mutual information (nats) of the
    working LoG images, evaluated on one fixed set of samples for the start (after the z
    search) and the final transform — comparable between runs and inputs, unlike the
    per-stage SimpleITK values (Mattes MI on each stage's own samples).  Both, like
    the perturbations below, are those of the stages before the final levels
    (``final_levels_um``), at the working LoG scale: the confidence levels were
    calibrated there.
    ``starts`` lists every start tried (orientation hypotheses) with its z offset (µm) and
    mutual information after the rigid stage; ``mirrored`` says whether the chosen one
    flips handedness.  ``mutual_information_perturbed`` is the final MI after moving the
    result by a quarter of the ROI along ±x and ±y (and ±z when the start's z was known)
    and rotating it by 90°, 180° and 270° about the ROI centre.
    """

    em_to_lm: Affine
    initial_em_to_lm: Affine
    z_offset_um: float
    z_search: dict
    stages: tuple[StageResult, ...]
    metric_initial: float
    metric_final: float
    log_sigma_um: float
    working_spacing_um: tuple[float, float, float]
    timings_s: dict = field(default_factory=dict)
    starts: tuple[dict, ...] = ()
    mirrored: bool = False
    mutual_information_perturbed: tuple[float, ...] = ()
    reversed_z: bool = False

    def to_dict(self) -> dict:
        """JSON-ready record (transforms as nested 4×4 lists, stages by name)."""
        return {"em_to_lm": self.em_to_lm.to_list(),
                "initial_em_to_lm": self.initial_em_to_lm.to_list(),
                "z_offset_um": self.z_offset_um, "z_search": self.z_search,
                "stages": {s.name: s.to_dict() for s in self.stages},
                "metric_initial": self.metric_initial, "metric_final": self.metric_final,
                "log_sigma_um": self.log_sigma_um,
                "working_spacing_um": list(self.working_spacing_um),
                "starts": list(self.starts), "mirrored": self.mirrored,
                "reversed_z": self.reversed_z,
                "mutual_information_perturbed": list(self.mutual_information_perturbed),
                "timings_s": self.timings_s}
