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

**Prefill.** Observations may also carry, per observation, the prefill work of the rank that sets the step
(``prefill[:, 0]``: prompt tokens computed per step, ``prefill[:, 1]``: token·context pairs attended per step, both
averaged over the observation's steps; zero for pure decode phases). Every model's design matrix then gains the
two columns of the engine model's prefill terms, ``prefill_tok · T + prefill_attn · A``, fitted together with the
decode terms (one least-squares problem per model), and the held-out error is reported separately for the
held-out mixed (decode + prefill) observations. A third column, ``prefill[:, 2]``, is the prompt tokens computed per
step averaged over the ranks (``T / G`` when one rank prefills, the default for two-column input). When some
observations had several ranks prefilling at once it separates from ``T``, and the models gain
``prefill_shared · mean T``: prefill work every rank's step shares (experts under expert parallelism, one host's
cores and memory bandwidth), which one rank prefilling alone cannot show. A fourth column, ``prefill[:, 3]``, is
the requests the rank that sets the step admitted per step (each prompt of a prefill phase is a request that comes
and goes); when prompt lengths vary enough to tell it from the token terms, the models may gain ``per_request ·
R``: the work of a request's arrival and end, kept if it passes the same two rules as the other optional terms
(checked on ``linear_max``, then fitted into every model).
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
#: names of the prefill terms appended to every model's constants when the observations carry prefill work
PREFILL_PARAMS = ("prefill_tok", "prefill_attn")
#: the shared prefill term, appended when the observations separate it (several ranks prefilling at once)
SHARED_PARAM = "prefill_shared"
#: the per-request term, appended when the observations separate it from the prefill tokens (and it pays)
REQUEST_PARAM = "per_request"
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
    #: [n, 4] per step: prefill tokens and attention pairs (busiest rank), prefill tokens averaged over the ranks,
    #: requests the busiest rank admitted
    prefill: np.ndarray | None = None

    @classmethod
    def from_lists(cls, loads, tau, seqs=None, prefill=None) -> Observations:
        try:
            L = np.asarray(loads, dtype=np.float64)
            t = np.asarray(tau, dtype=np.float64)
            S = None if seqs is None else np.asarray(seqs, dtype=np.float64)
            P = None if prefill is None else np.asarray(prefill, dtype=np.float64)
            if P is not None and (P.ndim != 2 or P.shape[1] not in (2, 3, 4)):
                P = P.reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"loads, sequences and step times must be numbers: {exc}") from None
        if P is not None:
            if P.shape[1] == 2:  # one rank prefilled: the mean over the ranks is its share
                P = np.column_stack([P, P[:, 0] / (L.shape[1] if L.ndim == 2 else 1)])
            if P.shape[1] == 3:  # requests admitted not known
                P = np.column_stack([P, np.zeros(P.shape[0])])
            if P.shape[0] != t.shape[0]:
                raise CalibrationError(f"{P.shape[0]} prefill rows but {t.shape[0]} step times")
            if not np.isfinite(P).all() or (P < 0).any():
                raise CalibrationError("prefill tokens, attention pairs and requests must be finite and >= 0")
            if not (P[:, 0] > 0).any():
                P = None  # no observation prefilled: the decode-only fit
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
        return cls(L, t, S, P)

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

    @property
    def has_prefill(self) -> bool:
        return self.prefill is not None

    @property
    def shared_separable(self) -> bool:
        """True when some observation had several ranks prefilling at once (the mean prefill over ranks is not
        the busiest rank's share), so the shared prefill term can be told from the per-rank one."""
        if self.prefill is None:
            return False
        one_rank = self.prefill[:, 0] / self.loads.shape[1]
        return bool((self.prefill[:, 2] > one_rank * (1 + MIN_SEPARATION) + 1e-9).any())

    @property
    def requests_separable(self) -> bool:
        """True when some observations admitted requests and their prompt tokens per request differ (by more
        than ``MIN_SEPARATION``), so a per-request cost can be told from the per-token ones."""
        if self.prefill is None:
            return False
        P = self.prefill[self.prefill[:, 3] > 0]
        if len(P) < 2:
            return False
        per = P[:, 0] / P[:, 3]
        return bool(np.ptp(per) > MIN_SEPARATION * per.max())

    @property
    def mixed(self) -> np.ndarray:
        """Mask of the observations with prefill work (mixed decode + prefill phases)."""
        return np.zeros(len(self), dtype=bool) if self.prefill is None else self.prefill[:, 0] > 0

    def subset(self, mask: np.ndarray) -> Observations:
        return Observations(
            self.loads[mask],
            self.tau[mask],
            None if self.seqs is None else self.seqs[mask],
            None if self.prefill is None else self.prefill[mask],
        )


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

    @property
    def with_prefill(self) -> bool:
        return PREFILL_PARAMS[0] in self.params

    @property
    def with_shared(self) -> bool:
        return SHARED_PARAM in self.params

    @property
    def with_requests(self) -> bool:
        return REQUEST_PARAM in self.params

    def predict(self, obs: Observations) -> np.ndarray:
        """Step times the model gives for these observations' loads (and sequences, and prefill work)."""
        names = param_names(self.model, self.with_prefill, self.with_shared, self.with_requests)
        X = _design(self.model, obs, self.with_prefill, self.with_shared, self.with_requests)
        return X @ np.array([self.params[k] for k in names])

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
    heldout_mixed: dict[str, dict] = field(default_factory=dict)  # model -> the same on held-out prefill phases
    f_test_p: float | None = None
    per_request: str = ""  # whether the per-request term was fitted, and why

    @property
    def best(self) -> ModelFit:
        return self.fits[self.chosen]


def param_names(model: str, prefill: bool, shared: bool = False, requests: bool = False) -> tuple[str, ...]:
    """A model's constants in design-matrix order (with the prefill terms last when they are fitted)."""
    extra = ((SHARED_PARAM,) if shared else ()) + ((REQUEST_PARAM,) if requests else ())
    return MODEL_PARAMS[model] + ((*PREFILL_PARAMS, *extra) if prefill else ())


def _design(
    model: str, obs: Observations, prefill: bool = False, shared: bool = False, requests: bool = False
) -> np.ndarray:
    one = np.ones(len(obs))
    if model == "linear_max":
        cols = [one, obs.max_load]
    elif model == "linear_seqs":
        cols = [one, obs.max_load, obs.mean_load, obs.max_seqs, obs.mean_seqs]
    else:
        cols = [one, obs.max_load, obs.mean_load]
    if prefill:
        P = obs.prefill if obs.prefill is not None else np.zeros((len(obs), 4))
        cols += [P[:, 0], P[:, 1]]
        if shared:
            cols.append(P[:, 2])
        if requests:
            cols.append(P[:, 3])
    return np.column_stack(cols)


def fit_model(model: str, obs: Observations, prefill: bool | None = None, requests: bool = False) -> ModelFit:
    """Non-negative least squares on relative residuals for one model (with the prefill terms when the
    observations carry prefill work, unless ``prefill`` says otherwise, and the per-request term if asked)."""
    if model not in MODEL_PARAMS:
        raise CalibrationError(f"unknown model {model!r}; fittable models: {', '.join(MODEL_PARAMS)}")
    prefill = obs.has_prefill if prefill is None else prefill
    shared = prefill and obs.shared_separable
    requests = prefill and requests
    names = param_names(model, prefill, shared, requests)
    if len(obs) < len(names) + 1:
        raise CalibrationError(
            f"{model} has {len(names)} constants and needs at least {len(names) + 1} observations (got {len(obs)})"
        )
    X = _design(model, obs, prefill, shared, requests)
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
    req, req_why = _requests_term(obs)
    fits = {"linear_max": fit_model("linear_max", obs, requests=req)}
    skipped: dict[str, str] = {}
    sep = _separation(obs)
    if obs.loads.shape[1] < 2:
        skipped["linear_max_mean"] = "one rank: max and mean load are the same, the mean-load term cannot be fitted"
    elif sep < MIN_SEPARATION:
        skipped["linear_max_mean"] = (
            f"max and mean load differ by at most {sep:.1%} of the max load: measure "
            "unequal per-rank loads to fit the mean-load term"
        )
    elif len(obs) < (need := len(param_names("linear_max_mean", obs.has_prefill, obs.shared_separable, req)) + 1):
        skipped["linear_max_mean"] = f"needs at least {need} observations (got {len(obs)})"
    else:
        fits["linear_max_mean"] = fit_model("linear_max_mean", obs, requests=req)
    chosen, reason, p = "linear_max", "the mean-load term was not fitted", None
    if "linear_max_mean" in fits:
        chosen, reason, p = _choose(fits["linear_max"], fits["linear_max_mean"], obs)
    k = len(param_names("linear_seqs", obs.has_prefill, obs.shared_separable, req))
    if obs.seqs is None:
        skipped["linear_seqs"] = "the sequence counts of the ranks are not known"
    elif np.ptp(obs.max_seqs) <= 0 and np.ptp(obs.mean_seqs) <= 0:
        skipped["linear_seqs"] = "every observation has the same sequence counts: measure several concurrencies"
    elif len(obs) < k + 2:
        skipped["linear_seqs"] = f"needs at least {k + 2} observations (got {len(obs)})"
    else:
        fits["linear_seqs"] = fit_model("linear_seqs", obs, requests=req)
        chosen, reason, p = _choose_seqs(fits[chosen], fits["linear_seqs"], obs, chosen, reason, p)
    out_heldout, out_mixed = {}, {}
    if heldout is not None and len(heldout):
        mixed = heldout.mixed
        dec, mix = heldout.subset(~mixed), heldout.subset(mixed)
        for name, f in fits.items():
            if len(dec):
                out_heldout[name] = _heldout_summary(f, dec)
            if len(mix):
                out_mixed[name] = _heldout_summary(f, mix)
    return Calibration(
        fits=fits,
        chosen=chosen,
        reason=reason,
        skipped=skipped,
        heldout=out_heldout,
        heldout_mixed=out_mixed,
        f_test_p=p,
        per_request=req_why,
    )


def _requests_term(obs: Observations) -> tuple[bool, str]:
    """Whether the models get the per-request term, and why: the observations must tell it from the prefill
    tokens, and on ``linear_max`` it must pass the nested F-test and carry a material share of some step."""
    if not obs.has_prefill:
        return False, ""
    if not obs.requests_separable:
        return False, "not fitted: the phases' prompts do not tell a request's cost from its tokens' (vary the lengths)"
    if len(obs) < len(param_names("linear_max", True, obs.shared_separable, True)) + 2:
        return False, "not fitted: too few observations"
    base = fit_model("linear_max", obs)
    with_req = fit_model("linear_max", obs, requests=True)
    p = _nested_p(base, with_req, len(obs))
    share = float((with_req.params[REQUEST_PARAM] * obs.prefill[:, 3] / obs.tau).max())
    if p < F_TEST_P and share >= MATERIAL_REL:
        return True, f"fitted: significant (F-test p = {p:.2g}), up to {share:.0%} of a step"
    if p >= F_TEST_P:
        return False, f"not fitted: not significant (F-test p = {p:.2g})"
    return False, f"not fitted: at most {share:.1%} of a step (< {MATERIAL_REL:.0%})"


def _heldout_summary(f: ModelFit, obs: Observations) -> dict:
    err = f.errors(obs)
    pred = f.predict(obs)
    points = []
    for i, (row, t, pr) in enumerate(zip(obs.loads, obs.tau, pred)):
        pt = {"loads": [float(x) for x in row], "measured_s": float(t), "predicted_s": float(pr)}
        if obs.prefill is not None and obs.prefill[i, 0] > 0:
            pt["prefill_tok_per_step"] = float(obs.prefill[i, 0])
            pt["prefill_attn_per_step"] = float(obs.prefill[i, 1])
            if f.with_shared:
                pt["prefill_mean_tok_per_step"] = float(obs.prefill[i, 2])
        points.append(pt)
    return {
        "n": len(obs),
        "mean_abs_rel": float(np.abs(err).mean()),
        "max_abs_rel": float(np.abs(err).max()),
        "points": points,
    }


def _nested_p(small: ModelFit, big: ModelFit, n: int) -> float:
    """p-value of the nested F-test: do ``big``'s extra terms explain more than noise would?"""
    extra = len(big.params) - len(small.params)
    dof = n - len(big.params)
    if big.rss_rel <= 0:
        return 0.0 if small.rss_rel > 0 else 1.0
    F = max(small.rss_rel - big.rss_rel, 0.0) / extra / (big.rss_rel / dof)
    return float(stats.f.sf(F, extra, dof))


def _choose(lm: ModelFit, lmm: ModelFit, obs: Observations) -> tuple[str, str, float | None]:
    if len(obs) - len(lmm.params) < 1:
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
