"""The driver's pieces without a server: the load plan, step time and loads from recorded streams, /metrics."""

import pytest

from dpbalance.calibrate.config import CalibrateConfig
from dpbalance.calibrate.driver import plan
from dpbalance.calibrate.engine_api import StreamRecord, parse_metrics, sample_sums
from dpbalance.calibrate.window import Phase, PhaseDisturbed, measure_window


def cfg(**kw):
    return CalibrateConfig(worker_urls=("http://a", "http://b"), **kw)


def test_plan_has_every_balanced_level_and_unequal_ones_with_a_rotating_heavy_rank():
    phases = plan(cfg(prompt_lens=(100, 1000), concurrency=(1, 4)), ranks=2)
    rows = [p.per_rank for p in phases]
    assert len(rows) == len(set(rows)) == 4 + 3
    for lv in [(100, 1), (100, 4), (1000, 1), (1000, 4)]:
        assert (lv, lv) in rows
    unequal = [r for r in rows if r[0] != r[1]]
    assert all((100, 1) in r for r in unequal)  # the other rank carries the lightest level
    assert {r.index(max(r)) for r in unequal} == {0, 1}  # the heavy rank rotates
    assert plan(cfg(prompt_lens=(100, 1000), concurrency=(1, 4)), ranks=2) == phases  # seeded order
    assert len(plan(cfg(prompt_lens=(100, 1000), concurrency=(1, 4), unequal=False), ranks=2)) == 4
    assert len(plan(CalibrateConfig(worker_urls=("http://a",), prompt_lens=(100, 1000)), ranks=1)) == 6


def test_config_normalises_and_checks_its_values():
    c = CalibrateConfig(worker_urls=("http://a/, http://b", "http://c"), prompt_lens=(512, 128, 512))
    assert c.worker_urls == ("http://a", "http://b", "http://c") and c.ranks == 3 and c.prompt_lens == (128, 512)
    assert CalibrateConfig(dp_endpoint="http://x", dp_size=4).ranks == 4
    for kw, msg in [
        ({"prompt_lens": ()}, "prompt_lens must list"),
        ({"holdout_every": 1}, "holdout_every"),
        ({"dp_size": 2}, "--dp-size goes with --dp-endpoint"),
    ]:
        with pytest.raises(ValueError, match=msg):
            cfg(**kw)


def stream(rank, prompt, t0, gap, n, per_chunk=1, max_tokens=100):
    """A stream whose k-th token arrives at t0 + k·gap, delivered ``per_chunk`` tokens at a time."""
    r = StreamRecord(rank, prompt, max_tokens)
    for k in range(per_chunk, n + 1, per_chunk):
        r.times.append(t0 + k * gap)
        r.counts.append(k)
    return r


def test_step_time_and_loads_from_the_streams_and_the_engine_counters():
    ph = Phase(0, ((1000, 2), (100, 1)))
    recs = [
        stream(0, 1000, 0.0, 0.01, 40),
        stream(0, 1000, 0.003, 0.01, 40, per_chunk=2),  # coalesced chunks
        stream(1, 100, 0.001, 0.01, 40),
    ]
    recs[0].usage_prompt_tokens = 1001  # the stream's usage beats /tokenize
    mA = [
        {"itl_sum": 1.0, "itl_count": 10, "iter_count": 5, "iter_sum": 10, "running": 2},
        {"itl_sum": 0.5, "itl_count": 5, "iter_count": 5, "iter_sum": 5, "running": 1},
    ]
    mB = [
        {"itl_sum": 1.4, "itl_count": 50, "iter_count": 25, "iter_sum": 50, "running": 2},
        {"itl_sum": 0.7, "itl_count": 25, "iter_count": 25, "iter_sum": 25, "running": 1},
    ]
    r = measure_window(ph, recs, 0.1, 0.3, mA, mB)
    assert r.stream_s == pytest.approx(0.01) and r.stream_rank_s == [pytest.approx(0.01)] * 2
    # at t = 0.2: streams 0 and 2 hold 20 and 19 tokens, stream 1 (2-token chunks from 0.023) holds 18
    assert r.loads == [1001 + 20 + 1000 + 18, 100 + 19]
    assert r.itl_s == [pytest.approx(0.4 / 40), pytest.approx(0.2 / 20)]
    assert r.steps_s == [pytest.approx(0.2 / 20)] * 2 and r.batch == [2.0, 1.0]
    assert r.warnings == []
    other = measure_window(ph, recs, 0.1, 0.3, mA, [dict(m, iter_sum=m["iter_sum"] + 20) for m in mB])
    assert any("other traffic" in w for w in other.warnings)


def test_a_stalled_window_is_reported_as_disturbed():
    ph = Phase(0, ((100, 1), (100, 1)))
    recs = [stream(0, 100, 0.0, 0.01, 30), stream(1, 100, 0.0, 0.01, 30)]
    for r in recs:  # the client stalls for 150 ms, then reads ten tokens at once
        r.times = [t if t < 0.1 else max(t, 0.25) + 1e-5 * k for k, t in enumerate(r.times)]
    with pytest.raises(PhaseDisturbed, match="disturbed"):
        measure_window(ph, recs, 0.0, 0.3, None, None)


def test_ranks_out_of_step_are_flagged():
    ph = Phase(0, ((100, 1), (100, 1)))
    r = measure_window(ph, [stream(0, 100, 0.0, 0.01, 60), stream(1, 100, 0.0, 0.02, 30)], 0.0, 0.6, None, None)
    assert any("no step barrier" in w for w in r.warnings)


VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.01",model_name="m"} 2.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 7.0
vllm:inter_token_latency_seconds_count{engine="0",model_name="m"} 7.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="m"} 0.35
vllm:inter_token_latency_seconds_bucket{engine="1",le="+Inf",model_name="m"} 4.0
vllm:inter_token_latency_seconds_count{engine="1",model_name="m"} 4.0
vllm:inter_token_latency_seconds_sum{engine="1",model_name="m"} 0.2
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_count{engine="0",model_name="m"} 12.0
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 36.0
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 0.0
"""


def test_metrics_are_read_per_engine_label_or_summed():
    e0 = parse_metrics(VLLM_METRICS, "0")
    assert e0 == {
        "running": 3.0,
        "itl_sum": 0.35,
        "itl_count": 7.0,
        "iter_count": 12.0,
        "iter_sum": 36.0,
        "preemptions": 0.0,
    }
    e1 = parse_metrics(VLLM_METRICS, "1")
    assert e1 == {"running": 1.0, "itl_sum": 0.2, "itl_count": 4.0}  # absent metrics are left out
    assert parse_metrics(VLLM_METRICS)["running"] == 4.0
    old = "vllm:time_per_output_token_seconds_sum 2.0\nvllm:time_per_output_token_seconds_count 100\n"
    assert parse_metrics(old) == {"itl_sum": 2.0, "itl_count": 100.0}  # the older name of the same histogram


def result(loads, stream_s, itl=(None, None), steps=(None, None), label=((100, 1), (100, 1)), per_token=None):
    from dpbalance.calibrate.window import PhaseResult

    per_token = stream_s if per_token is None else per_token
    return PhaseResult(
        Phase(0, label),
        list(loads),
        stream_s,
        [stream_s] * 2,
        list(itl),
        list(steps),
        [None] * 2,
        gaps=50,
        window_s=0.5,
        window_s_per_token=per_token,
        window_rank_s=[per_token] * 2,
    )


def test_source_choice_falls_back_to_the_stream():
    from dpbalance.calibrate.specfile import step_time_of

    r = result([10, 10], 0.010, itl=(0.012, 0.014), steps=(None, 0.011))
    assert step_time_of(r, "stream") == (0.010, "stream")
    assert step_time_of(result([10, 10], 0.010, per_token=0.016), "window") == (0.016, "window")
    assert step_time_of(r, "itl") == (pytest.approx(0.013), "itl")  # the median over ranks
    assert step_time_of(r, "steps") == (0.011, "steps")
    assert step_time_of(result([10, 10], 0.010), "itl") == (0.010, "stream")


def test_analysis_scales_times_and_needs_three_levels(tmp_path):
    from dpbalance.calibrate.driver import DriveRecord
    from dpbalance.calibrate.fit import CalibrationError
    from dpbalance.calibrate.specfile import analyse, write
    from dpbalance.engine.step_time import make_step_time

    loads = [[100, 100], [1000, 1000], [3000, 3000], [6000, 6000], [8000, 8000], [2000, 2000], [5000, 5000]]
    # wall times of an engine running 4x faster than the model C = 8 ms, t_tok = 2 µs
    res = [result(L, (0.008 + 2e-6 * max(L)) / 4) for L in loads]
    rec = DriveRecord(res, [], [], 2, "m", ["http://a", "http://b"], None, True, True, 4096, 0.0, 1.0, 136)
    c = cfg(time_scale=4.0, out=tmp_path / "st.yaml")
    out = analyse(rec, c)
    p = out.calibration.fits["linear_max"].params
    assert p["C"] == pytest.approx(0.008) and p["t_tok"] == pytest.approx(2e-6)
    assert out.heldout_mask.sum() == 1 and out.document["observations"][0]["step_s"] == pytest.approx(0.0082)
    write(c.out, out.document)
    assert make_step_time(str(c.out), slots=8)(1000.0, 0.0) == pytest.approx(0.010, rel=1e-5)
    with pytest.raises(CalibrationError, match="only 2 load levels were measured"):
        analyse(DriveRecord(res[:2], [], [], 2, "m", [], None, True, True, None, 0.0, 1.0, 136), c)


def test_sample_sums_by_name_over_label_sets():
    """What the benchmarks read from a rank's page: each sample summed over its label sets, by its full name."""
    got = sample_sums(VLLM_METRICS, ("vllm:inter_token_latency_seconds_count", "vllm:iteration_tokens_total_sum"))
    assert got == {"vllm:inter_token_latency_seconds_count": 11.0, "vllm:iteration_tokens_total_sum": 36.0}
    assert sample_sums(VLLM_METRICS, ("vllm:inter_token_latency_seconds_count",), engine="1") == {
        "vllm:inter_token_latency_seconds_count": 4.0
    }
    assert sample_sums("", ("x",)) == {}
