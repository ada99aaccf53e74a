"""Former home of the thick-tissue simulator, kept as an import path.

The code lives in :mod:`clemalign.synthetic.tissue` (and its config in
:mod:`clemalign.synthetic.config`); new code imports from :mod:`clemalign.synthetic`.
"""

from .synthetic import TissueConfig, simulate_tissue_pair

__all__ = ["TissueConfig", "simulate_tissue_pair"]
