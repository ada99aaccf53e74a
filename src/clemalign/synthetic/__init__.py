"""Simulated CLEM pairs with a known ground truth.

:mod:`~clemalign.synthetic.monolayer` renders adherent cells (EM and confocal LM),
:mod:`~clemalign.synthetic.tissue` thick tissue (microCT and two-photon LM).
"""

from .monolayer import (
    LANDMARK_COLUMNS,
    SIMULATED_FILES,
    DegradedCase,
    SimulatedPair,
    SimulationConfig,
    degrade_fluorescence,
    landmarks_csv_text,
    real_appearance_cases,
    simulate_pair,
    write_simulated_pair,
)
from .tissue import TissueConfig, simulate_tissue_pair

__all__ = ["SimulationConfig", "SimulatedPair", "simulate_pair", "write_simulated_pair",
           "DegradedCase", "degrade_fluorescence", "real_appearance_cases",
           "LANDMARK_COLUMNS", "SIMULATED_FILES", "landmarks_csv_text",
           "TissueConfig", "simulate_tissue_pair"]
