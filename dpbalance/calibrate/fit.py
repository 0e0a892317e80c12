"""Fit the simulator's step-time models to measured steps.

An observation is one measured decode step (or the median of a steady stretch of them): the load of every rank
during it — KV tokens of its running requests, prompt plus generated —, optionally the number of running
sequences of every rank, and its duration τ in seconds. Three models:

- ``linear_max``:       τ = C + t_tok · max_g L_g
- ``linear_max_mean``:  τ = c + a · max_g L_g + b · mean_g L_g
- ``linear_seqs``:      τ = c + a · max_g L_g + b · mean_g L_g + s · max_g n_g + r · mean_g n_g  (n_g: sequences)

Both are fitted by non-negative least squares on relative residuals ((pred − τ)/τ, so a 10 ms step counts as
much as a 100 ms one: what matters downstream is the relative error of the time per output token). The mean-load
term is fitted only when the observations separate max from mean (unequal per-rank loads); it is chosen over
``linear_max`` when a nested F-test finds it significant *and* it makes up a material share of some measured step.
The sequence terms are fitted when the sequence counts are known and vary; ``linear_seqs`` is chosen over the
model picked so far by the same two rules (an F-test on the added terms, and a material share of some step).
Standard errors of the constants come from the weighted least-squares covariance (exact when no constant is
clamped at zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

#: parameter names of each model, in design-matrix column order (the names of the simulator's model configs)
MODEL_PARAMS = {
    "linear_max": ("C", "t_tok"),
    "linear_max_mean": ("c", "a", "b"),
    "linear_seqs": ("c", "a", "b", "s", "r"),
}
#: the mean-load term is chosen only if significant at this level (nested F-test) ...
F_TEST_P = 0.01
#: ... and if it makes up at least this fraction of the step time at some measured load
MATERIAL_REL = 0.05
#: max and mean must differ by at least this fraction of the max load somewhere for b to be fitted
MIN_SEPARATION = 0.05


class CalibrationError(ValueError):
    """The observations cannot be fitted (the message says what is wrong with them)."""


@dataclass(frozen=True)
class Observations:
    """Per-rank loads ``[n, G]`` (KV tokens), measured step times ``[n]`` (seconds) and, when known, per-rank
    running sequences ``[n, G]``."""

    loads: np.ndarray
    tau: np.ndarray
    seqs: np.ndarray | None = None

    @classmethod
    def from_lists(cls, loads, tau, seqs=None) -> Observations:
        try:
            L = np.asarray(loads, dtype=np.float64)
            t = np.asarray(tau, dtype=np.float64)
            S = None if seqs is None else np.asarray(seqs, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"loads, sequences and step times must be numbers: {exc}") from None
        if L.ndim == 1:
            L = L[:, None]
        if S is not None:
            if S.ndim == 1:
                S = S[:, None]
            if S.shape != L.shape:
                raise CalibrationError(
                    f"sequences have shape {S.shape}, loads {L.shape}: one count per rank and observation"
                )
            if not np.isfinite(S).all() or (S < 0).any():
                raise CalibrationError("sequence counts must be finite and >= 0")
        if L.ndim != 2 or t.ndim != 1:
            raise CalibrationError(
                f"expected loads as [observations, ranks] and step times as [observations], "
                f"got shapes {L.shape} and {t.shape}"
            )
        if L.shape[0] != t.shape[0]:
            raise CalibrationError(f"{L.shape[0]} load rows but {t.shape[0]} step times")
        if L.shape[0] == 0 or L.shape[1] == 0:
            raise CalibrationError("no observations")
        if not np.isfinite(L).all() or not np.isfinite(t).all():
            raise CalibrationError("loads and step times must be finite (found NaN or inf)")
        if (L < 0).any():
            raise CalibrationError(f"loads must be >= 0 (row {int(np.argwhere(L < 0)[0, 0])} has a negative load)")
        if (t <= 0).any():
            raise CalibrationError(f"step times must be > 0 s (row {int(np.argmax(t <= 0))} has {t[t <= 0][0]:g})")
        return cls(L, t, S)

    def __len__(self) -> int:
        return int(self.tau.shape[0])

    @property
    def max_load(self) -> np.ndarray:
        return self.loads.max(axis=1)

    @property
    def mean_load(self) -> np.ndarray:
        return self.loads.mean(axis=1)

    @property
    def max_seqs(self) -> np.ndarray:
        return np.zeros(len(self)) if self.seqs is None else self.seqs.max(axis=1)

    @property
    def mean_seqs(self) -> np.ndarray:
        return np.zeros(len(self)) if self.seqs is None else self.seqs.mean(axis=1)

    def subset(self, mask: np.ndarray) -> Observations:
        return Observations(self.loads[mask], self.tau[mask], None if self.seqs is None else self.seqs[mask])


@dataclass(frozen=True)
class ModelFit:
    """One model's constants and how well they describe the observations they were fitted to."""

    model: str
    params: dict[str, float]
    n: int
    rms_s: float  # root-mean-square residual, seconds
    rms_rel: float  # root-mean-square relative residual
    max_rel: float  # largest |pred − τ| / τ
    r2: float  # 1 − SS_res/SS_tot on τ (nan if all τ are equal)
    rss_rel: float  # sum of squared relative residuals (what was minimised)
    se: dict[str, float] = field(default_factory=dict)  # standard error of each constant (nan without spare points)

    def predict(self, obs: Observations) -> np.ndarray:
        """Step times the model gives for these observations' loads (and sequences)."""
        return _design(self.model, obs) @ np.array([self.params[k] for k in MODEL_PARAMS[self.model]])

    def errors(self, obs: Observations) -> np.ndarray:
        """Relative prediction errors (pred − τ)/τ on any observations."""
        return (self.predict(obs) - obs.tau) / obs.tau

    def summary(self) -> dict:
        return {
            "n": self.n,
            "rms_s": self.rms_s,
            "rms_rel": self.rms_rel,
            "max_rel": self.max_rel,
            "r2": self.r2,
            "std_err": dict(self.se),
        }


@dataclass(frozen=True)
class Calibration:
    """Every fit (the mean-load and sequence ones may be impossible), the chosen model and why, held-out errors."""

    fits: dict[str, ModelFit]
    chosen: str
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it was not fitted
    heldout: dict[str, dict] = field(default_factory=dict)  # model -> held-out error summary
    f_test_p: float | None = None

    @property
    def best(self) -> ModelFit:
        return self.fits[self.chosen]


def _design(model: str, obs: Observations) -> np.ndarray:
    one = np.ones(len(obs))
    if model == "linear_max":
        return np.column_stack([one, obs.max_load])
    if model == "linear_seqs":
        return np.column_stack([one, obs.max_load, obs.mean_load, obs.max_seqs, obs.mean_seqs])
    return np.column_stack([one, obs.max_load, obs.mean_load])


def fit_model(model: str, obs: Observations) -> ModelFit:
    """Non-negative least squares on relative residuals for one model."""
    if model not in MODEL_PARAMS:
        raise CalibrationError(f"unknown model {model!r}; fittable models: {', '.join(MODEL_PARAMS)}")
    names = MODEL_PARAMS[model]
    if len(obs) < len(names) + 1:
        raise CalibrationError(
            f"{model} has {len(names)} constants and needs at least {len(names) + 1} observations (got {len(obs)})"
        )
    X = _design(model, obs)
    A = X / obs.tau[:, None]  # relative residuals: (Xβ − τ)/τ = Aβ − 1
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    beta_s, _ = optimize.nnls(A / scale, np.ones(len(obs)))
    beta = beta_s / scale
    pred = X @ beta
    res = pred - obs.tau
    rel = res / obs.tau
    ss_tot = float(((obs.tau - obs.tau.mean()) ** 2).sum())
    dof = len(obs) - len(names)
    try:  # covariance of the (unconstrained) weighted least-squares estimate
        cov = np.linalg.inv(A.T @ A) * float((rel**2).sum()) / dof
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        se = np.full(len(names), math.nan)
    return ModelFit(
        model=model,
        params={k: float(v) for k, v in zip(names, beta)},
        n=len(obs),
        rms_s=float(np.sqrt((res**2).mean())),
        rms_rel=float(np.sqrt((rel**2).mean())),
        max_rel=float(np.abs(rel).max()),
        r2=float(1 - (res**2).sum() / ss_tot) if ss_tot > 0 else math.nan,
        rss_rel=float((rel**2).sum()),
        se={k: float(v) for k, v in zip(names, se)},
    )


def _check_spread(obs: Observations) -> None:
    mx = obs.max_load
    if np.ptp(mx) <= 0:
        raise CalibrationError(
            f"every observation has the same max load ({mx[0]:g} tokens): the per-token cost "
            "cannot be told from the fixed cost; measure at several loads"
        )


def _separation(obs: Observations) -> float:
    mx = obs.max_load
    return float(((mx - obs.mean_load) / max(mx.max(), 1e-12)).max())


def fit(obs: Observations, heldout: Observations | None = None) -> Calibration:
    """Fit both models (the mean-load one when the loads allow it), choose one, score both on ``heldout``."""
    _check_spread(obs)
    fits = {"linear_max": fit_model("linear_max", obs)}
    skipped: dict[str, str] = {}
    sep = _separation(obs)
    if obs.loads.shape[1] < 2:
        skipped["linear_max_mean"] = "one rank: max and mean load are the same, the mean-load term cannot be fitted"
    elif sep < MIN_SEPARATION:
        skipped["linear_max_mean"] = (
            f"max and mean load differ by at most {sep:.1%} of the max load: measure "
            "unequal per-rank loads to fit the mean-load term"
        )
    elif len(obs) < 4:
        skipped["linear_max_mean"] = f"needs at least 4 observations (got {len(obs)})"
    else:
        fits["linear_max_mean"] = fit_model("linear_max_mean", obs)
    chosen, reason, p = "linear_max", "the mean-load term was not fitted", None
    if "linear_max_mean" in fits:
        chosen, reason, p = _choose(fits["linear_max"], fits["linear_max_mean"], obs)
    k = len(MODEL_PARAMS["linear_seqs"])
    if obs.seqs is None:
        skipped["linear_seqs"] = "the sequence counts of the ranks are not known"
    elif np.ptp(obs.max_seqs) <= 0 and np.ptp(obs.mean_seqs) <= 0:
        skipped["linear_seqs"] = "every observation has the same sequence counts: measure several concurrencies"
    elif len(obs) < k + 2:
        skipped["linear_seqs"] = f"needs at least {k + 2} observations (got {len(obs)})"
    else:
        fits["linear_seqs"] = fit_model("linear_seqs", obs)
        chosen, reason, p = _choose_seqs(fits[chosen], fits["linear_seqs"], obs, chosen, reason, p)
    out_heldout = {}
    if heldout is not None and len(heldout):
        for name, f in fits.items():
            err = f.errors(heldout)
            out_heldout[name] = {
                "n": len(heldout),
                "mean_abs_rel": float(np.abs(err).mean()),
                "max_abs_rel": float(np.abs(err).max()),
                "points": [
                    {"loads": [float(x) for x in row], "measured_s": float(t), "predicted_s": float(pr)}
                    for row, t, pr in zip(heldout.loads, heldout.tau, f.predict(heldout))
                ],
            }
    return Calibration(fits=fits, chosen=chosen, reason=reason, skipped=skipped, heldout=out_heldout, f_test_p=p)


def _nested_p(small: ModelFit, big: ModelFit, n: int) -> float:
    """p-value of the nested F-test: do ``big``'s extra terms explain more than noise would?"""
    extra = len(MODEL_PARAMS[big.model]) - len(MODEL_PARAMS[small.model])
    dof = n - len(MODEL_PARAMS[big.model])
    if big.rss_rel <= 0:
        return 0.0 if small.rss_rel > 0 else 1.0
    F = max(small.rss_rel - big.rss_rel, 0.0) / extra / (big.rss_rel / dof)
    return float(stats.f.sf(F, extra, dof))


def _choose(lm: ModelFit, lmm: ModelFit, obs: Observations) -> tuple[str, str, float | None]:
    if len(obs) - len(MODEL_PARAMS["linear_max_mean"]) < 1:
        return "linear_max", "too few observations to test the mean-load term", None
    p = _nested_p(lm, lmm, len(obs))
    share = float((lmm.params["b"] * obs.mean_load / obs.tau).max())
    if p < F_TEST_P and share >= MATERIAL_REL:
        return (
            "linear_max_mean",
            (f"the mean-load term is significant (F-test p = {p:.2g}) and carries up to {share:.0%} of the step time"),
            p,
        )
    if p >= F_TEST_P:
        return "linear_max", f"the mean-load term is not significant (F-test p = {p:.2g})", p
    return (
        "linear_max",
        (
            f"the mean-load term is significant (F-test p = {p:.2g}) but carries at most {share:.1%} "
            f"of the step time (< {MATERIAL_REL:.0%})"
        ),
        p,
    )


def _choose_seqs(
    base: ModelFit, ls: ModelFit, obs: Observations, chosen: str, reason: str, p_base: float | None
) -> tuple[str, str, float | None]:
    """``linear_seqs`` over the model chosen so far: its extra terms must be significant and material."""
    p = _nested_p(base, ls, len(obs))
    q = ls.params
    share = float(((q["s"] * obs.max_seqs + q["r"] * obs.mean_seqs) / obs.tau).max())
    if p < F_TEST_P and share >= MATERIAL_REL:
        return (
            "linear_seqs",
            (
                f"the per-sequence terms are significant (F-test p = {p:.2g}) and carry up to "
                f"{share:.0%} of the step time"
            ),
            p,
        )
    why = (
        f"the per-sequence terms are not significant (F-test p = {p:.2g})"
        if p >= F_TEST_P
        else f"the per-sequence terms carry at most {share:.1%} of the step time"
    )
    return chosen, f"{reason}; {why}", p_base


def split_heldout(max_load: np.ndarray, every: int) -> np.ndarray:
    """Mask of held-out observations: every ``every``-th by increasing max load, never the lightest or heaviest
    (held-out points are interpolated, not extrapolated). Empty when ``every`` is 0 or too few points remain."""
    n = len(max_load)
    mask = np.zeros(n, dtype=bool)
    if every <= 0 or n < 6:
        return mask
    order = np.argsort(max_load, kind="stable")
    for pos in range(every // 2 if every > 1 else 1, n - 1, every):
        if pos == 0:
            continue
        mask[order[pos]] = True
    if n - mask.sum() < 5:  # keep enough to fit three constants with residual degrees of freedom
        return np.zeros(n, dtype=bool)
    return mask
