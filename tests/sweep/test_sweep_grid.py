"""Grid files expand into validated, canonical, de-duplicated cells; cache keys track exactly the config."""

import numpy as np
import pytest

from dpbalance.sweep import Cell, GridError, cell_hash, expand, load_grid, runner


def test_yaml_grid_cartesian_product_with_dict_axis(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text(
        "name: t\n"
        "base: {trace: sample, max_requests: 100, slots: 8}\n"
        "axes:\n"
        "  policy: [jsq_count, jsq_tokens]\n"
        "  workers: [2, 4, 8]\n"
        "  load:\n"
        "    - {arrival: saturated, visible: 16}\n"
        "    - {arrival: replay, rate_scale: 3}\n"
        "cells:\n"
        "  - {policy: fcfs, workers: 3, arrival: saturated}\n"
    )
    grid = load_grid(g)
    assert grid.name == "t"
    assert len(grid.cells) == 2 * 3 * 2 + 1
    replay = [c for c in grid.cells if c.sim.arrival == "replay"]
    assert len(replay) == 6 and all(c.sim.rate_scale == 3.0 and c.sim.visible is None for c in replay)
    assert grid.cells[-1].policy.label == "fcfs" and grid.cells[-1].sim.workers == 3 and grid.cells[-1].sim.slots == 8
    assert all(c.trace.max_requests == 100 and c.trace.trace == "sample" for c in grid.cells)


def test_toml_grid_equals_yaml_grid(tmp_path):
    y = tmp_path / "g.yaml"
    y.write_text("base: {trace: sample}\naxes:\n  policy: [p2c, random]\n  seed: [0, 1]\n")
    t = tmp_path / "g.toml"
    t.write_text('[base]\ntrace = "sample"\n[axes]\npolicy = ["p2c", "random"]\nseed = [0, 1]\n')
    assert load_grid(y).cells == load_grid(t).cells


def test_unknown_field_policy_and_option_fail_before_running(tmp_path):
    with pytest.raises(GridError, match="unknown cell field.*wokers"):
        expand({"wokers": 4})
    with pytest.raises(GridError, match="unknown policy 'jsq'"):
        expand({"policy": "jsq"})
    with pytest.raises(GridError, match="unknown option 'stats'"):
        expand({"policy": "vllm:stats=2"})
    with pytest.raises(GridError, match="poisson arrivals need qps"):
        expand({"arrival": "poisson"})
    bad = tmp_path / "g.yaml"
    bad.write_text("axes: {policy: []}\n")
    with pytest.raises(GridError, match="non-empty list"):
        load_grid(bad)
    bad.write_text("base: {}\nextra: 1\n")
    with pytest.raises(GridError, match="unknown top-level key"):
        load_grid(bad)


def test_predictor_axis_collapses_on_policies_without_predictor():
    cells = expand({"trace": "sample"}, {"policy": ["jsq_count", "vllm"], "predictor": ["oracle", "survival"]})
    # neither baseline takes a predictor: the predictor axis must not duplicate cells
    assert [c.policy.label for c in cells] == ["jsq_count", "vllm"]


def test_policy_spec_is_canonical():
    a = Cell(policy="vllm:stats_interval=1")  # the default value
    b = Cell(policy="vllm")
    assert a.policy == b.policy and a.policy.label == "vllm"
    assert cell_hash(a, None) == cell_hash(b, None)
    assert Cell(policy="vllm:stats_interval=3").policy.label == "vllm:stats_interval=3"


def test_hash_covers_config_version_and_trace_but_not_tag(monkeypatch, tmp_path):
    base = Cell.from_dict({"policy": "jsq_tokens", "trace": "sample", "max_requests": 100, "workers": 4})
    h = cell_hash(base, None)
    assert cell_hash(Cell.from_dict({**base.to_dict(), "tag": "other"}), None) == h
    for change in (
        {"workers": 8},
        {"slots": 16},
        {"seed": 1},
        {"max_requests": 101},
        {"policy": "jsq_count"},
        {"energy": "busy_idle"},
        {"arrival": "saturated"},
        {"train_split": 0.5},
        {"repeat": 2},
    ):
        assert cell_hash(Cell.from_dict({**base.to_dict(), **change}), None) != h, change
    monkeypatch.setattr(runner, "code_identity", lambda: "9.9.9+other")  # another version or source
    assert cell_hash(base, None) != h
    monkeypatch.undo()
    # same trace name, different file content -> different key
    import gzip
    import shutil

    from dpbalance.traces.catalog import PACKAGE_DATA

    d1, d2 = tmp_path / "a", tmp_path / "b"
    for d in (d1, d2):
        d.mkdir()
    shutil.copy(PACKAGE_DATA / "sample.csv.gz", d1 / "x.csv.gz")
    rows = gzip.open(PACKAGE_DATA / "sample.csv.gz", "rt").read().splitlines()
    with gzip.open(d2 / "x.csv.gz", "wt") as f:
        f.write("\n".join(rows[:-1]) + "\n")
    c1 = Cell.from_dict({"trace": str(d1 / "x.csv.gz")})
    c2 = Cell.from_dict({"trace": str(d2 / "x.csv.gz")})
    assert runner.trace_identity(c1.trace.trace, None) != runner.trace_identity(c2.trace.trace, None)
    assert cell_hash(c1, None) != cell_hash(c2, None)


def test_workload_selection_keeps_training_disjoint():
    from dpbalance.sweep import select_workload
    from dpbalance.traces import load_trace

    full = load_trace("sample")  # 2,000 rows
    test, train = select_workload(Cell.from_dict({"trace": "sample", "max_requests": 1500}), None)
    assert len(test) == 1500 and len(train) == 500 and (train.prompt == full.prompt[1500:]).all()
    test, train = select_workload(Cell.from_dict({"trace": "sample"}), None)
    assert len(test) == 2000 and train is None  # everything replayed: nothing left to train on
    c3 = Cell.from_dict({"trace": "sample", "resample": 3000, "seed": 4, "train_split": 0.25})
    t3, tr3 = select_workload(c3, None)
    assert len(t3) == 3000 and len(tr3) == 500 and not t3.has_timestamps
    assert (select_workload(c3, None)[0].prompt == t3.prompt).all()  # seeded
    assert (tr3.prompt == full.prompt[:500]).all()  # the past trains
    # the bootstrap draws only from rows that are not in the training split
    src = set(zip(full.prompt[500:].tolist(), full.output[500:].tolist(), full.key[500:].tolist()))
    assert set(zip(t3.prompt.tolist(), t3.output.tolist(), t3.key.tolist())) <= src
    t4, _ = select_workload(Cell.from_dict({"trace": "sample", "max_requests": 100, "repeat": 3}), None)
    assert len(t4) == 300 and (t4.prompt[200:] == full.prompt[:100]).all()
    assert t4.arrival[100] > t4.arrival[99] and np.allclose(
        t4.arrival[200:] - t4.arrival[100:200], t4.arrival[100] - t4.arrival[0]
    )


def test_the_example_grid_expands():
    from pathlib import Path

    g = load_grid(Path(__file__).parents[2] / "examples" / "grid.yaml")
    assert g.name == "example" and len(g.cells) == 4 * 2 * 2 * 2 + 1
    assert {c.policy.label for c in g.cells} >= {"br0", "brh:predictor=survival", "br0:preset=bfio-code"}
