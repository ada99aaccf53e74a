"""Simulated CLEM pairs with a known ground truth.

Two simulators, one result type (:class:`SimulatedPair`) and one file layout
(:func:`write_simulated_pair`):

* :func:`simulate_pair` (:mod:`~clemalign.synthetic.monolayer`) — adherent cells imaged
  by EM and confocal LM; the scene in :mod:`~clemalign.synthetic.scene`, the renderers in
  :mod:`~clemalign.synthetic.em` and :mod:`~clemalign.synthetic.lm`;
* :func:`simulate_tissue_pair` (:mod:`~clemalign.synthetic.tissue`) — thick tissue imaged
  by microCT and two-photon LM (:mod:`~clemalign.synthetic.tissue_scene`,
  :mod:`~clemalign.synthetic.tissue_render`).

Their parameters are :class:`SimulationConfig` and :class:`TissueConfig`
(:mod:`~clemalign.synthetic.config`).  :func:`real_appearance_cases`
(:mod:`~clemalign.synthetic.real_appearance`) makes known-answer 2D cases from real,
expert-aligned EM/fluorescence images instead; :func:`section_of`
(:mod:`~clemalign.synthetic.section`) cuts a section pair (one EM plane, a few LM planes)
from a monolayer pair.
"""

from .config import SimulationConfig, TissueConfig
from .monolayer import simulate_pair
from .pair import (
    LANDMARK_COLUMNS,
    SIMULATED_FILES,
    SimulatedPair,
    landmarks_csv_text,
    write_simulated_pair,
)
from .real_appearance import DegradedCase, degrade_fluorescence, real_appearance_cases
from .section import section_of
from .tissue import simulate_tissue_pair

__all__ = ["SimulationConfig", "SimulatedPair", "simulate_pair", "write_simulated_pair",
           "DegradedCase", "degrade_fluorescence", "real_appearance_cases",
           "LANDMARK_COLUMNS", "SIMULATED_FILES", "landmarks_csv_text",
           "TissueConfig", "simulate_tissue_pair", "section_of"]
