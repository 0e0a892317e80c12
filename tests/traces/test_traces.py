"""Trace loaders: shipped traces match SOURCES.md, user formats parse, bad rows give file:line errors."""

import gzip
import json

import numpy as np
import pytest

from dpbalance.traces import TraceError, load_trace, parse_timestamp, resolve_trace


@pytest.mark.parametrize(
    "name,rows,prompt_mean,output_mean,gt1000",
    [
        ("azure-code-2023", 8819, 2047.8, 27.9, 2),
        ("azure-conv-2023", 19366, 1154.7, 211.1, 0),
        ("mooncake-conversation", 12031, 12035.1, 342.6, 161),
        ("mooncake-synthetic", 3993, 15325.5, 149.1, 0),
        ("bfio-arxiv", 8000, 4825.1, 437.2, 490),
        ("bfio-burst", 8000, 362.9, 57.0, 42),
        ("vidur-arxiv", 28257, 2588.1, 291.4, 1241),
    ],
)
def test_real_traces_match_sources(need_trace, name, rows, prompt_mean, output_mean, gt1000):
    need_trace(name)
    w = load_trace(name)
    st = w.stats()
    assert st["requests"] == rows
    assert st["prompt_mean"] == pytest.approx(prompt_mean, abs=0.06)
    assert st["output_mean"] == pytest.approx(output_mean, abs=0.06)
    assert st["output_gt_1000"] == gt1000


def test_trace_spans(need_trace):
    for name in ("azure-conv-2023", "mooncake-conversation", "bfio-arxiv"):
        need_trace(name)
    assert load_trace("azure-conv-2023").stats()["span_s"] == pytest.approx(3501.7, abs=0.1)
    assert load_trace("mooncake-conversation").stats()["span_s"] == pytest.approx(3537.0, abs=0.01)
    assert not load_trace("bfio-arxiv").has_timestamps


def test_sample_is_bundled_and_works_without_a_trace_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DPBALANCE_TRACE_DIR", str(tmp_path))  # an empty trace dir
    w = load_trace("sample")
    assert len(w) == 2000 and w.has_timestamps
    assert (w.key >= 0).all()
    with pytest.raises(TraceError, match="looked for azure-conv-2023.csv.gz") as err:
        load_trace("azure-conv-2023")
    assert "dpbalance trace fetch azure-conv-2023" in str(err.value) and str(tmp_path) in str(err.value)


def test_azure_2024_format(tmp_path):
    f = tmp_path / "AzureLLMInferenceTrace_conv_1week.csv"
    f.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.009930+00:00,4000,1200\n"
        "2024-05-10 00:00:01.509930+00:00,300,20\n"
        "2024-05-10 02:00:02.000000+02:00,10,1001\n"
    )  # +02:00 -> 00:00:02 UTC
    w = load_trace(str(f))
    np.testing.assert_allclose(w.arrival, [0.0, 1.5, 1.99007], atol=1e-5)
    assert w.output.tolist() == [1200, 20, 1001]
    # the named trace resolves in a user-given trace dir
    assert resolve_trace("azure-conv-2024", tmp_path)[0] == f


def test_azure_2023_seven_digit_fraction():
    assert parse_timestamp("2023-11-16 18:17:03.9799600").microsecond == 979960


def test_burstgpt_format_counts_failed_rows(tmp_path):
    f = tmp_path / "BurstGPT_1.csv"
    f.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,API log\n"
    )
    w = load_trace(str(f))
    assert len(w) == 2 and w.arrival.tolist() == [0.0, 113.0]
    assert w.meta["dropped"] == {"failed_requests_zero_response_tokens": 1}


@pytest.mark.parametrize(
    "content,fname,where,problem",
    [
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.1,10,5\n2023-11-16 18:00:01.1,ten,5\n",
            "a.csv",
            ":3:",
            "ContextTokens",
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,10,5\n", "b.csv", ":2:", "TIMESTAMP"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.1,10,0\n", "c.csv", ":2:", ">= 1"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.1,10\n", "d.csv", ":2:", "3 comma-separated"),
        ("TIMESTAMP,Context,GeneratedTokens\n", "e.csv", ":1:", "lacks column"),
        (
            '{"timestamp": 0, "input_length": 5, "output_length": 3}\n{"timestamp": 1, "input_length": 5}\n',
            "m.jsonl",
            ":2:",
            "output_length",
        ),
        ('{"timestamp": 0, "input_length": 5, "output_length": 3}\n{not json}\n', "n.jsonl", ":2:", "invalid JSON"),
        (  # block 2 follows block 1, then block 3: its id cannot stand for its prefix
            '{"timestamp": 0, "input_length": 1024, "output_length": 3, "hash_ids": [1, 2]}\n\n'
            '{"timestamp": 1, "input_length": 1024, "output_length": 3, "hash_ids": [3, 2]}\n',
            "p.jsonl",
            ":3:",
            "than at line 1",
        ),
        (
            '{"timestamp": 0, "input_length": 1024, "output_length": 3, "hash_ids": [1, 2]}\n'
            '{"timestamp": 1, "input_length": 512, "output_length": 3, "hash_ids": [2]}\n',
            "q.jsonl",
            ":2:",
            "must be chained",
        ),
        ("prompt_tokens,output_tokens\n10,5\n-3,5\n", "g.csv", ":3:", ">= 0"),
        ("prompt_tokens,output_tokens\n10,5.5\n", "h.csv", ":2:", "integer"),
    ],
)
def test_bad_rows_name_file_line_and_problem(tmp_path, content, fname, where, problem):
    f = tmp_path / fname
    f.write_text(content)
    with pytest.raises(TraceError) as err:
        load_trace(str(f))
    msg = str(err.value)
    assert str(f) + where in msg and problem in msg


def test_gzip_and_bfio_errors(tmp_path):
    f = tmp_path / "x.json.gz"
    with gzip.open(f, "wt") as fh:
        json.dump({"data": [{"input_length": 5, "output_length": 2}, {"input_length": 5}]}, fh)
    with pytest.raises(TraceError, match=r"data\[1\]"):
        load_trace(str(f))


def test_unknown_trace_name_lists_known():
    with pytest.raises(TraceError, match="Known traces: .*mooncake-conversation"):
        load_trace("mooncake")


def test_synthetic_spec_is_seeded():
    a = load_trace("synthetic:n=500,output_mean=50,seed=3")
    b = load_trace("synthetic:n=500,output_mean=50,seed=3")
    assert np.array_equal(a.prompt, b.prompt) and np.array_equal(a.output, b.output)
    assert abs(a.output.mean() - 50) < 10 and not a.has_timestamps
    c = load_trace("synthetic:n=2000,joint=bfio,qps=10,seed=1")
    assert c.has_timestamps and abs(c.output.mean() - 1200) < 100


def test_filters_on_a_real_trace():
    w = load_trace("sample")
    f = w.filter(min_output=500, max_requests=50)
    assert len(f) == 50 and f.output.min() >= 500
    t = w.filter(start_s=100, end_s=200)
    assert t.arrival.max() < 100.0 + 1e-9  # rebased to the window start
