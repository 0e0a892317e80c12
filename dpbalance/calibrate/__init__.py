"""``dpbalance calibrate``: measure a live deployment's decode step time at controlled loads and fit the
simulator's step-time models to it (``fit`` is pure numpy/scipy; ``driver`` talks to the engines; ``specfile``
writes the file that ``--step-time FILE`` reads).

The names below load their module on first use, so that importing the package (the CLI does, for the typed
``CalibrateConfig`` its options come from) does not load scipy. The fit itself is ``calibrate.fit.fit`` (a package
attribute ``fit`` would be shadowed by the submodule of that name)."""

from __future__ import annotations

from ..core.lazy import lazy_exports
from .config import CalibrateConfig

#: public name -> the module of this package that defines it
_LAZY = {
    "Calibration": ".fit",
    "CalibrationError": ".fit",
    "ModelFit": ".fit",
    "Observations": ".fit",
    "fit_model": ".fit",
    "split_heldout": ".heldout",
}

__all__ = ["CalibrateConfig", *_LAZY]

__getattr__ = lazy_exports(__name__, _LAZY)
