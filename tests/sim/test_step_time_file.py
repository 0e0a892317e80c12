"""Step-time files (written by `dpbalance calibrate`) as --step-time FILE: reading, choosing a model, errors."""

import json

import pytest
import yaml

from dpbalance.core.specs import SpecError
from dpbalance.emulator import EngineGroup
from dpbalance.engine.step_time import LinearMax, LinearMaxMean, make_step_time, step_time_identity
from dpbalance.sim.config import SimConfig
from dpbalance.sweep.grid import Cell
from dpbalance.sweep.runner import cell_hash
from dpbalance.traces.selection import TraceSelection

DOC = {
    "format": "dpbalance-step-time/1",
    "model": "linear_max",
    "models": {
        "linear_max": {"params": {"C": 0.02, "t_tok": 3e-7}},
        "linear_max_mean": {"params": {"c": 0.01, "a": 2e-7, "b": 1e-7}},
    },
}


def write(tmp_path, doc, name="st.yaml"):
    p = tmp_path / name
    p.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("name", ["st.yaml", "st.yml", "st.json", "ST.YAML"])
def test_a_file_gives_its_recommended_model_with_its_constants(tmp_path, name):
    p = write(tmp_path, DOC, name)
    m = make_step_time(str(p), slots=72)
    assert isinstance(m, LinearMax) and m.C == 0.02 and m.t_tok == 3e-7
    assert m(1000.0, 10.0) == pytest.approx(0.02 + 3e-4)
    assert m.params() == {"model": "linear_max", "C_s": 0.02, "t_tok_s": 3e-7, "source": str(p)}


def test_model_option_picks_another_model_of_the_file(tmp_path):
    p = write(tmp_path, DOC)
    m = make_step_time(f"{p}:model=linear_max_mean", slots=8)
    assert isinstance(m, LinearMaxMean) and (m.c, m.a, m.b) == (0.01, 2e-7, 1e-7)
    assert m(1000.0, 500.0) == pytest.approx(0.01 + 2e-4 + 5e-5)


def test_engine_sim_and_simulator_accept_a_file(tmp_path):
    p = write(tmp_path, DOC)
    assert EngineGroup(2, step_time=str(p)).step_model.C == 0.02
    from dpbalance.sim.run import run_simulation
    from dpbalance.traces import load_trace

    w = load_trace("synthetic:n=40,seed=1")
    res, _ = run_simulation(w, "jsq_count", SimConfig(workers=2, slots=4, arrival="saturated", step_time=str(p)))
    ref, _ = run_simulation(
        w, "jsq_count", SimConfig(workers=2, slots=4, arrival="saturated", step_time="linear_max:C=0.02,t_tok=3e-7")
    )
    assert res.makespan_s == ref.makespan_s and res.config["step_time_model"]["source"] == str(p)


def bad(doc_changes=None, drop=None, model_changes=None):
    doc = json.loads(json.dumps(DOC))
    doc.update(doc_changes or {})
    for k in drop or ():
        doc.pop(k)
    for k, v in (model_changes or {}).items():
        doc["models"]["linear_max"]["params"][k] = v
    return doc


@pytest.mark.parametrize(
    "doc, spec_suffix, msg",
    [
        (bad(drop=["format"]), "", "is not a step-time file"),
        (bad({"format": "other/2"}), "", "is not a step-time file"),
        (bad({"models": {}}), "", "'models' must map"),
        (bad({"model": "cubic"}), "", "'model' must name one of its models"),
        (DOC, ":model=cubic", "holds no 'cubic' model; it holds: linear_max, linear_max_mean"),
        (DOC, ":C=3", "unknown option(s) C"),
        (bad(model_changes={"C": -1.0}), "", "params.C must be a finite number >= 0"),
        (bad(model_changes={"C": "fast"}), "", "params.C must be a finite number >= 0"),
        (bad(model_changes={"C": True}), "", "params.C must be a finite number >= 0"),
        (bad(model_changes={"extra": 1.0}), "", "must have exactly C, t_tok"),
        ([1, 2], "", "is not a step-time file"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, doc, spec_suffix, msg):
    p = write(tmp_path, doc)
    with pytest.raises(SpecError) as e:
        make_step_time(f"{p}{spec_suffix}", slots=8)
    assert msg in str(e.value) and str(p) in str(e.value)


def test_missing_unparsable_and_unrecognised_files_are_clear_errors(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        make_step_time(str(tmp_path / "nope.yaml"), slots=8)
    (tmp_path / "broken.yaml").write_text("format: [\n")
    with pytest.raises(SpecError, match=r"does not parse \(line 2, column 1\): expected the node content"):
        make_step_time(str(tmp_path / "broken.yaml"), slots=8)
    with pytest.raises(SpecError, match="neither a model .* nor a step-time file"):
        make_step_time(str(tmp_path / "st.txt"), slots=8)


def test_sweep_cache_key_follows_the_file_content(tmp_path):
    p = write(tmp_path, DOC)
    assert step_time_identity("linear_max:C=1") == "linear_max:C=1"
    cell = Cell(policy="jsq_count", trace=TraceSelection(trace="synthetic:n=20"), sim=SimConfig(step_time=str(p)))
    before, ident = cell_hash(cell, None), step_time_identity(str(p))
    write(tmp_path, bad(model_changes={"C": 0.03}))
    assert step_time_identity(str(p)) != ident and cell_hash(cell, None) != before


def test_sweep_takes_a_step_time_file_from_the_grid_or_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from dpbalance.cli.main import app

    p = write(tmp_path, DOC)
    g = tmp_path / "g.yaml"
    g.write_text(
        "name: st\nbase: {trace: sample, max_requests: 100, slots: 8, workers: 2, policy: jsq_count}\n"
        f"axes: {{step_time: [linear_max, '{p}']}}\n"
    )
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "--grid", str(g), "--out", str(tmp_path / "o"), "--processes", "1"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "o" / "results.json").read_text())
    assert sorted(x["config"]["step_time_model"].get("source", "") for x in rows) == ["", str(p)]
    r = runner.invoke(
        app,
        [
            "sweep",
            "--grid",
            str(g),
            "--out",
            str(tmp_path / "o2"),
            "--processes",
            "1",
            "--step-time",
            f"{p}:model=linear_max_mean",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert len(rows) == 1 and rows[0]["config"]["step_time_model"]["model"] == "linear_max_mean"
    r = runner.invoke(
        app, ["sweep", "--grid", str(g), "--out", str(tmp_path / "o3"), "--step-time", str(tmp_path / "missing.yaml")]
    )
    assert r.exit_code == 2 and "does not exist" in r.output and not (tmp_path / "o3").exists()


def test_per_sequence_step_time_in_the_simulator():
    """``linear_seqs``: with s = r = 0 it is ``linear_max_mean``; on one worker every step lasts
    c + (a + b)·load + (s + r)·running sequences."""
    import numpy as np

    from dpbalance.core import Workload
    from dpbalance.policies import PolicyContext, make_policy
    from dpbalance.sim import SimConfig, run_simulation, simulate

    rng = np.random.default_rng(1)
    w = Workload.from_arrays(np.zeros(60), rng.integers(50, 800, 60), rng.integers(1, 40, 60), name="t")
    base = run_simulation(
        w,
        "jsq_tokens",
        SimConfig(workers=3, slots=4, arrival="saturated", step_time="linear_max_mean:c=0.01,a=2e-7,b=1e-7"),
    )[0]
    same = run_simulation(
        w,
        "jsq_tokens",
        SimConfig(workers=3, slots=4, arrival="saturated", step_time="linear_seqs:c=0.01,a=2e-7,b=1e-7,s=0,r=0"),
    )[0]
    assert same.makespan_s == base.makespan_s and same.throughput_tok_s == base.throughput_tok_s
    cfg = SimConfig(workers=1, slots=4, arrival="saturated", step_time="linear_seqs:c=0.01,a=2e-7,b=1e-7,s=3e-3,r=1e-3")
    st = simulate(w, make_policy("fcfs", PolicyContext(1, 4)), cfg).steps
    expect = 0.01 + 3e-7 * st["max"] + 4e-3 * st["active"]
    assert np.allclose(st["tau"], expect, rtol=1e-12, atol=0)
