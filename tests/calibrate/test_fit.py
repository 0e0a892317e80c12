"""The step-time fit on synthetic timings made from known constants plus noise."""

import numpy as np
import pytest

from dpbalance.calibrate.fit import CalibrationError, Observations, fit, fit_model
from dpbalance.calibrate.heldout import split_heldout


def synthetic(model, params, *, G=2, noise=0.01, seed=0, unequal=True):
    """Loads of a grid like calibrate's (balanced levels, and unequal ones when asked) and step times from the
    model with multiplicative Gaussian noise of relative size ``noise``."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in (128, 512, 1536, 4096):
        for c in (1, 4, 16):
            rows.append([p * c] * G)
            if unequal and (p, c) != (128, 1):
                rows.append([p * c] + [128] * (G - 1))
    L = np.asarray(rows, dtype=float) + rng.integers(0, 20, size=(len(rows), G))  # a few generated tokens
    mx, mn = L.max(axis=1), L.mean(axis=1)
    if model == "linear_max":
        tau = params["C"] + params["t_tok"] * mx
    else:
        tau = params["c"] + params["a"] * mx + params["b"] * mn
    return Observations.from_lists(L, tau * (1 + noise * rng.standard_normal(len(tau))))


def rel(a, b):
    return abs(a / b - 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_linear_max_constants_and_prefers_it(seed):
    truth = {"C": 0.012, "t_tok": 2.0e-7}
    cal = fit(synthetic("linear_max", truth, noise=0.01, seed=seed))
    f = cal.fits["linear_max"]
    assert rel(f.params["C"], truth["C"]) < 0.03 and rel(f.params["t_tok"], truth["t_tok"]) < 0.03
    assert cal.chosen == "linear_max", cal.reason
    assert 0.003 < f.rms_rel < 0.02 and f.max_rel < 0.05 and f.r2 > 0.99  # residuals reflect the 1 % noise
    assert f.rms_s > 0 and f.n == len(synthetic("linear_max", truth, seed=seed))
    for k, v in truth.items():  # the reported standard errors cover the truth
        assert 0 < f.se[k] and abs(f.params[k] - v) < 3 * f.se[k], (k, f.params, f.se)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_linear_max_mean_constants_and_prefers_it(seed):
    truth = {"c": 0.008, "a": 3.0e-7, "b": 1.5e-7}
    # b shows only in the unequal loads: with 0.5 % noise its standard error is ~3.4 % (checked over 200 seeds),
    # so 0.3 % noise keeps a 5 % tolerance beyond 2.5 standard errors
    cal = fit(synthetic("linear_max_mean", truth, noise=0.003, seed=seed))
    f = cal.fits["linear_max_mean"]
    for k, v in truth.items():
        assert rel(f.params[k], v) < 0.05, (k, f.params)
        assert abs(f.params[k] - v) < 3 * f.se[k] or rel(f.params[k], v) < 0.005, (k, f.params, f.se)
    se_rel = {k: f.se[k] / v for k, v in truth.items()}
    assert se_rel["b"] < 0.03 and se_rel["b"] > max(se_rel["a"], se_rel["c"])  # b is the least determined
    assert cal.chosen == "linear_max_mean" and cal.f_test_p < 0.01
    assert cal.fits["linear_max"].rms_rel > 3 * f.rms_rel  # max alone cannot explain unequal loads


def test_exact_data_is_fitted_exactly():
    obs = Observations.from_lists(
        [[100, 100], [1000, 200], [3000, 3000], [5000, 100]], [0.01 + 1e-6 * m for m in (100, 1000, 3000, 5000)]
    )
    f = fit_model("linear_max", obs)
    assert f.params["C"] == pytest.approx(0.01, rel=1e-9) and f.params["t_tok"] == pytest.approx(1e-6, rel=1e-9)
    assert f.rms_s < 1e-12 and f.r2 == pytest.approx(1.0)


def test_constants_are_never_negative():
    # step time falling with load: least squares would give a negative slope; the fit clamps it at zero
    obs = Observations.from_lists([[100], [1000], [2000], [4000]], [0.02, 0.019, 0.018, 0.017])
    f = fit_model("linear_max", obs)
    assert f.params["t_tok"] == 0.0 and f.params["C"] > 0


def test_mean_term_is_skipped_when_the_loads_cannot_identify_it():
    truth = {"C": 0.01, "t_tok": 1e-7}
    one_rank = fit(synthetic("linear_max", truth, G=1, noise=0.0))
    assert "linear_max_mean" not in one_rank.fits and "one rank" in one_rank.skipped["linear_max_mean"]
    balanced = fit(synthetic("linear_max", truth, G=4, noise=0.0, unequal=False))
    assert "linear_max_mean" not in balanced.fits and "unequal" in balanced.skipped["linear_max_mean"]
    assert balanced.chosen == "linear_max"


def test_heldout_levels_are_interior_and_scored():
    obs = synthetic("linear_max", {"C": 0.01, "t_tok": 1e-7}, noise=0.01)
    mask = split_heldout(obs.max_load, 4)
    assert 0 < mask.sum() <= len(obs) // 4 + 1
    assert not mask[np.argmin(obs.max_load)] and not mask[np.argmax(obs.max_load)]
    cal = fit(obs.subset(~mask), obs.subset(mask))
    h = cal.heldout["linear_max"]
    assert h["n"] == mask.sum() and 0 < h["mean_abs_rel"] <= h["max_abs_rel"] < 0.05
    p = h["points"][0]
    assert p["predicted_s"] == pytest.approx(0.01 + 1e-7 * max(p["loads"]), rel=0.03)
    assert not split_heldout(obs.max_load, 0).any() and not split_heldout(obs.max_load[:5], 2).any()


@pytest.mark.parametrize(
    "loads, tau, msg",
    [
        ([], [], "no observations"),
        ([[1, 2], [3, 4]], [0.1], "2 load rows but 1 step times"),
        ([[1, 2], [3, 4]], [0.1, float("nan")], "finite"),
        ([[1, -2], [3, 4]], [0.1, 0.2], "row 0 has a negative load"),
        ([[1, 2], [3, 4]], [0.1, 0.0], "step times must be > 0"),
        ([["a", 2]], [0.1], "must be numbers"),
    ],
)
def test_bad_observations_are_clear_errors(loads, tau, msg):
    with pytest.raises(CalibrationError, match=msg):
        Observations.from_lists(loads, tau)


def test_too_few_or_flat_observations_are_clear_errors():
    with pytest.raises(CalibrationError, match="needs at least 3 observations"):
        fit_model("linear_max", Observations.from_lists([[1], [2]], [0.1, 0.2]))
    with pytest.raises(CalibrationError, match="same max load"):
        fit(Observations.from_lists([[5, 1], [5, 2], [5, 3]], [0.1, 0.1, 0.1]))
    with pytest.raises(CalibrationError, match="unknown model"):
        fit_model("cubic", Observations.from_lists([[1], [2], [3]], [0.1, 0.2, 0.3]))


def test_a_significant_but_tiny_mean_term_keeps_linear_max():
    # b carries under 1 % of every step: the F-test sees it in noise-free data, the choice ignores it
    truth = {"c": 0.02, "a": 3.0e-7, "b": 1.0e-9}
    cal = fit(synthetic("linear_max_mean", truth, noise=0.0))
    assert cal.f_test_p < 0.01 and cal.chosen == "linear_max" and "at most" in cal.reason


def synthetic_seqs(params, *, noise=0.005, seed=0):
    """calibrate's grid on two ranks with the streams per rank known; τ from ``linear_seqs``."""
    rng = np.random.default_rng(seed)
    L, S = [], []
    for p in (128, 512, 1536):
        for c in (1, 4, 16, 32):
            L.append([p * c, p * c]), S.append([c, c])
            if c > 1:
                L.append([p * c, 128]), S.append([c, 1])
    L = np.asarray(L, float) + rng.integers(0, 20, size=(len(L), 2))
    S = np.asarray(S, float)
    q = params
    tau = q["c"] + q["a"] * L.max(1) + q["b"] * L.mean(1) + q["s"] * S.max(1) + q["r"] * S.mean(1)
    return Observations.from_lists(L, tau * (1 + noise * rng.standard_normal(len(tau))), seqs=S)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_per_sequence_costs_and_prefers_them(seed):
    truth = {"c": 0.010, "a": 2.0e-7, "b": 1.0e-7, "s": 4.0e-4, "r": 2.0e-4}
    cal = fit(synthetic_seqs(truth, noise=0.002, seed=seed))
    f = cal.fits["linear_seqs"]
    assert cal.chosen == "linear_seqs", cal.reason
    for k, v in truth.items():
        assert rel(f.params[k], v) < 0.1, (k, f.params)
    assert cal.fits["linear_max"].rms_rel > 3 * f.rms_rel


def test_per_sequence_terms_are_not_chosen_when_tokens_explain_the_steps():
    truth = {"c": 0.010, "a": 2.0e-7, "b": 0.0, "s": 0.0, "r": 0.0}
    cal = fit(synthetic_seqs(truth, noise=0.01, seed=4))
    assert "linear_seqs" in cal.fits and cal.chosen == "linear_max", cal.reason
    assert "per-sequence terms are not significant" in cal.reason


def test_per_sequence_terms_need_known_and_varying_counts():
    obs = synthetic("linear_max", {"C": 0.012, "t_tok": 2.0e-7})
    assert "not known" in fit(obs).skipped["linear_seqs"]
    flat = Observations.from_lists(obs.loads, obs.tau, seqs=np.full(obs.loads.shape, 4.0))
    assert "same sequence counts" in fit(flat).skipped["linear_seqs"]
    with pytest.raises(CalibrationError, match="one count per rank"):
        Observations.from_lists(obs.loads, obs.tau, seqs=np.ones((len(obs), 3)))


def _prefill_obs(together: bool, rng) -> Observations:
    """Two ranks decoding at several loads while one rank (and, with ``together``, also both at once) prefills:
    τ = 0.01 + 1e-6·max L + 2e-5·T + 1e-8·A + 1e-5·mean T."""
    loads, tau, pre = [], [], []
    for L in (1000, 4000, 9000):
        for T in (0, 200, 600, 1500):
            for both in (False, True) if together and T else (False,):
                A = T * (300.0 + T / 2)
                mean = T if both else T / 2
                loads.append([L, L])
                pre.append((T, A, mean))
                tau.append((0.01 + 1e-6 * L + 2e-5 * T + 1e-8 * A + 1e-5 * mean) * (1 + 0.002 * rng.standard_normal()))
    return Observations.from_lists(loads, tau, prefill=pre)


def test_the_shared_prefill_term_is_fitted_when_several_ranks_prefilled_at_once():
    rng = np.random.default_rng(0)
    f = fit_model("linear_max", _prefill_obs(True, rng))
    assert f.params["prefill_shared"] == pytest.approx(1e-5, rel=0.1)
    assert f.params["prefill_tok"] == pytest.approx(2e-5, rel=0.1)
    # one rank at a time cannot tell shared from own work: the term is left out, its cost folded into prefill_tok
    g = fit_model("linear_max", _prefill_obs(False, rng))
    assert "prefill_shared" not in g.params
    assert g.params["prefill_tok"] == pytest.approx(2e-5 + 1e-5 / 2, rel=0.1)


def test_two_column_prefill_rows_mean_one_rank_prefilled():
    obs = Observations.from_lists([[100, 100], [200, 100]], [0.02, 0.03], prefill=[(0, 0), (300, 9000)])
    assert obs.prefill[:, 2].tolist() == [0.0, 150.0] and not obs.shared_separable


def test_the_mean_load_model_is_skipped_not_failed_when_the_shared_term_leaves_too_few_observations():
    # six observations, two ranks at unequal loads, one with both ranks prefilling: linear_max has five constants
    # (with the shared prefill term) and fits; linear_max_mean would have six and needs seven
    loads = [[1000, 100], [3000, 200], [6000, 300], [9000, 9000], [2000, 2000], [5000, 1000]]
    pre = [(0, 0, 0), (200, 9e4, 100), (600, 4e5, 600), (0, 0, 0), (1500, 2e6, 750), (400, 3e5, 200)]
    tau = [0.011, 0.02, 0.05, 0.019, 0.07, 0.03]
    cal = fit(Observations.from_lists(loads, tau, prefill=pre))
    assert "prefill_shared" in cal.fits["linear_max"].params
    assert cal.skipped["linear_max_mean"] == "needs at least 7 observations (got 6)"


def _request_obs(per_request: float, lengths=(32, 400, 1600), seed=0) -> Observations:
    """Decode steps at several loads, and prefill phases of prompts of ``lengths`` admitted back to back (as
    calibrate's prefill phases do): τ = 0.01 + 1e-6·max L + 2e-5·T + 1e-8·A + per_request·R."""
    rng = np.random.default_rng(seed)
    loads, tau, pre = [], [], []
    for L in (1000, 4000, 9000):
        loads.append([L, L])
        pre.append((0, 0, 0, 0))
        tau.append(0.01 + 1e-6 * L)
        for P in lengths:
            R = 1 / max(1.0, P / 400)  # a prompt per step, or per P/400 steps (a step's chunk is 400)
            T = P * R
            A = T * (P + 1) / 2
            loads.append([L, L])
            pre.append((T, A, T / 2, R))
            tau.append(0.01 + 1e-6 * L + 2e-5 * T + 1e-8 * A + per_request * R)
    tau = np.asarray(tau) * (1 + 0.002 * rng.standard_normal(len(tau)))
    return Observations.from_lists(loads, tau, prefill=pre)


def test_a_per_request_cost_is_fitted_when_prompt_lengths_tell_it_from_the_tokens():
    cal = fit(_request_obs(0.005))
    assert cal.per_request.startswith("fitted"), cal.per_request
    for f in cal.fits.values():
        assert f.params["per_request"] == pytest.approx(0.005, rel=0.1), f.params
        assert f.params["prefill_tok"] == pytest.approx(2e-5, rel=0.1), f.params


def test_no_per_request_term_without_a_cost_or_without_varied_lengths():
    cal = fit(_request_obs(0.0))
    assert cal.per_request.startswith("not fitted: not significant"), cal.per_request
    assert all("per_request" not in f.params for f in cal.fits.values())
    # one prompt length: a request's cost and its tokens' are proportional, the term cannot be told apart; it is
    # folded into the token terms
    same = fit(_request_obs(0.005, lengths=(800,)))
    assert "do not tell" in same.per_request and "per_request" not in same.best.params
    # rows without a request count (three columns) are read as no requests
    obs = Observations.from_lists([[100, 100], [200, 100]], [0.02, 0.03], prefill=[(0, 0, 0), (300, 9000, 150)])
    assert obs.prefill[:, 3].tolist() == [0.0, 0.0] and not obs.requests_separable
