"""A hand-worked run: 3 workers, 2 slots each, 6 requests, jsq_tokens, τ = 1 + 0.01·max load.

Worked by hand (see the comments) from the simulator's step rules; every number below was computed on paper, not by
running the simulator.
"""

import numpy as np
import pytest

from dpbalance.core import Workload
from dpbalance.policies import PolicyContext, make_policy
from dpbalance.sim import SimConfig, run_simulation, simulate

#            arrival  s   o
REQUESTS = [
    (0.0, 100, 2),  # r0 -> w0 at step 0
    (0.0, 50, 3),  # r1 -> w1 at step 0
    (0.0, 30, 1),  # r2 -> w2 at step 0
    (0.0, 80, 2),  # r3 -> w2 at step 0 (w2 holds 30 < 50 < 100)
    (1.5, 10, 1),  # r4 -> w1 at step 1
    (1.5, 60, 2),
]  # r5 -> w2 at step 1 (w1 became full)

# Step 0 (t=0):     loads [100, 50, 110]  M=110 τ=2.10 → t=2.10; then +1/token: [101, 51, 112]; r2 ends (−31)
# Step 1 (t=2.10):  r4→w1, r5→w2: loads [101, 61, 141]  M=141 τ=2.41 → t=4.51; [102, 63, 143];
#                   r0 (−102), r3 (−82), r4 (−11) end
# Step 2 (t=4.51):  loads [0, 52, 61]  M=61 τ=1.61 → t=6.12; r1 and r5 end.
LOADS = np.array([[100, 50, 110], [101, 61, 141], [0, 52, 61]])
TAU = np.array([2.10, 2.41, 1.61])
FINISH = np.array([4.51, 6.12, 2.10, 4.51, 4.51, 6.12])
FIRST = np.array([2.10, 2.10, 2.10, 2.10, 4.51, 4.51])
WORKER = np.array([0, 1, 2, 2, 1, 2])

CFG = SimConfig(workers=3, slots=2, arrival="replay", step_time="linear_max:C=1.0,t_tok=0.01", record_stride=1)


def workload():
    a, s, o = zip(*REQUESTS)
    return Workload.from_arrays(a, s, o, name="golden")


def test_golden_trajectory():
    policy = make_policy("jsq_tokens", PolicyContext(workers=3, slots=2))
    rec = simulate(workload(), policy, CFG)
    st = rec.steps
    assert rec.n_steps == 3
    np.testing.assert_array_equal(rec.worker, WORKER)
    np.testing.assert_array_equal(st["max"], LOADS.max(axis=1))
    np.testing.assert_array_equal(st["min"], LOADS.min(axis=1))
    np.testing.assert_array_equal(st["sum"], LOADS.sum(axis=1))
    np.testing.assert_array_equal(st["sample_rows"], LOADS)
    np.testing.assert_allclose(st["tau"], TAU)
    np.testing.assert_allclose(rec.finish_time(), FINISH)
    np.testing.assert_allclose(rec.first_token_time(), FIRST)
    np.testing.assert_array_equal(st["active"], [4, 5, 2])  # tokens decoded per step
    np.testing.assert_array_equal(rec.final_loads, 0)


def test_golden_metrics():
    res, _ = run_simulation(workload(), "jsq_tokens", CFG)
    assert res.completed == res.requests == 6
    assert res.steps == 3
    assert res.window == "all"
    assert res.makespan_s == pytest.approx(6.12)
    assert res.throughput_tok_s == pytest.approx(11 / 6.12)  # 11 = Σ o
    assert res.avg_imbalance_maxmin == pytest.approx((60 + 80 + 61) / 3)
    assert res.avg_imbalance_gap == pytest.approx((70 + 120 + 70) / 3)  # G·M − ΣL per step
    assert res.idle_fraction == pytest.approx((70 / 330 + 120 / 423 + 70 / 183) / 3)
    assert res.balance_ratio == pytest.approx(((260 / 3) / 110 + (303 / 3) / 141 + (113 / 3) / 61) / 3)
    # TTFT: r0..r3 2.10 s, r4/r5 4.51 − 1.5 = 3.01 s
    assert res.ttft_p50_s == pytest.approx(2.10)
    # TPOT of multi-token requests: r0 2.41, r1 (6.12−2.10)/2 = 2.01, r3 2.41, r5 1.61 (s -> ms)
    assert res.tpot_p50_ms == pytest.approx(np.median([2410, 2010, 2410, 1610]))
    # energy (bfio_power, P = 100 + 300·u^0.7 per worker, u = L_g / M)
    e = sum(tau * sum(100 + 300 * (x / row.max()) ** 0.7 for x in row) for row, tau in zip(LOADS, TAU))
    assert res.energy_j == pytest.approx(e)
    assert res.energy_j_per_token == pytest.approx(e / 11)


def test_golden_steady_window_stops_at_last_admission():
    res, _ = run_simulation(workload(), "jsq_tokens", SimConfig(**{**CFG.__dict__, "window": "steady"}))
    assert res.window == "steady"
    # last admission is step 1: window = steps 0..1, 9 tokens over 4.51 s
    assert res.avg_imbalance_maxmin == pytest.approx((60 + 80) / 2)
    assert res.throughput_tok_s == pytest.approx(9 / 4.51)


def test_busy_idle_energy_by_hand():
    cfg = SimConfig(**{**CFG.__dict__, "energy": "busy_idle:p_busy=400,p_idle=100"})
    res, _ = run_simulation(workload(), "jsq_tokens", cfg)
    e = 0.0
    for row, tau in zip(LOADS, TAU):
        for x in row:
            busy = 1.0 + 0.01 * x
            e += 400 * busy + 100 * (tau - busy)
    assert res.energy_j == pytest.approx(e)


def test_linear_max_mean_step_time():
    cfg = SimConfig(**{**CFG.__dict__, "step_time": "linear_max_mean:c=1,a=0.01,b=0.005"})
    rec = simulate(workload(), make_policy("jsq_tokens", PolicyContext(3, 2)), cfg)
    np.testing.assert_allclose(rec.steps["tau"], 1 + 0.01 * LOADS.max(1) + 0.005 * LOADS.mean(1))


def test_golden_whole_run_figures_waits_and_conservation():
    res, series = run_simulation(workload(), "jsq_tokens", SimConfig(**{**CFG.__dict__, "window": "steady"}))
    assert res.throughput_tok_s == pytest.approx(9 / 4.51)  # steady window: steps 0..1
    assert res.throughput_all_tok_s == pytest.approx(11 / 6.12)  # whole run
    # r4 and r5 arrive at 1.5 and get their slots when step 1 starts, at 2.10; the rest at once
    assert res.wait_max_s == pytest.approx(0.60)
    np.testing.assert_allclose(np.sort(series.wait), [0, 0, 0, 0, 0.6, 0.6], atol=1e-9)
    assert series.window_end_t == pytest.approx(4.51)
    assert (res.completed, res.running, res.never_admitted) == (6, 0, 0)
    assert res.completed + res.running + res.never_admitted == res.requests


def test_an_empty_cluster_draws_idle_power():
    # one worker; r0 runs 0 → 1 s, nothing runs until r1 arrives at 100 s, r1 runs 100 → 101 s
    w = Workload.from_arrays([0.0, 100.0], [10, 10], [1, 1], name="gap")
    res, _ = run_simulation(w, "jsq_tokens", SimConfig(workers=1, slots=1, step_time="linear_max:C=1,t_tok=0"))
    # two 1 s steps at full utilisation (400 W) + 99 s idle at 100 W
    assert res.energy_j == pytest.approx(2 * 400 + 99 * 100)
    assert res.energy_j_per_token == pytest.approx((2 * 400 + 99 * 100) / 2)
    assert res.throughput_all_tok_s == pytest.approx(2 / 101)
