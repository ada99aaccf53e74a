"""Compatibility path: the thick-tissue simulator lives in :mod:`clemalign.synthetic.tissue`."""

from .synthetic.tissue import TissueConfig, simulate_tissue_pair

__all__ = ["TissueConfig", "simulate_tissue_pair"]
