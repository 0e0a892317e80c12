"""``dpbalance calibrate``: measure a live deployment's decode step time at controlled loads and fit the
simulator's step-time models to it (``fit`` is pure numpy/scipy; ``driver`` talks to the engines; ``specfile``
writes the file that ``--step-time FILE`` reads)."""

from .config import CalibrateConfig
from .fit import Calibration, CalibrationError, ModelFit, Observations, fit, fit_model
from .heldout import split_heldout

__all__ = [
    "CalibrateConfig",
    "Calibration",
    "CalibrationError",
    "ModelFit",
    "Observations",
    "fit",
    "fit_model",
    "split_heldout",
]
