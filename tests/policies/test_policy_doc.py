"""docs/policies.md is runnable: its policy module and its registry line, taken from the page as written, make a
policy the simulator runs. The real registry file is not edited; the entry goes into a copy of the registry for
the length of the test."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from dpbalance.core.specs import Registry
from dpbalance.core.workload import Workload
from dpbalance.policies import PolicyContext, PolicySpec
from dpbalance.policies import registry as registry_module
from dpbalance.sim import SimConfig, run_simulation
from tests.helpers import snapshot_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"
MODULE_FILE = "# dpbalance/policies/least_work.py"
REGISTRY_FILE = "# dpbalance/policies/registry.py"


def _python_blocks() -> dict[str, str]:
    """The page's ```python blocks by their first line (a comment naming the file they belong in)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return {b.splitlines()[0].strip(): b for b in blocks}


@pytest.fixture
def least_work(monkeypatch, tmp_path):
    """Load the page's module as ``dpbalance.policies.least_work`` and register the page's entry on a copy of the
    registry; both are undone after the test. Yields the registered entry."""
    blocks = _python_blocks()
    assert MODULE_FILE in blocks and REGISTRY_FILE in blocks, f"{DOC.name} lost its two code blocks"
    path = tmp_path / "least_work.py"
    path.write_text(blocks[MODULE_FILE])
    spec = importlib.util.spec_from_file_location("dpbalance.policies.least_work", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)

    lines = [ln for ln in blocks[REGISTRY_FILE].splitlines()[1:] if ln.strip()]
    imports = [ln for ln in lines if ln.startswith("from ")]
    entries = [ln.strip().removesuffix(",") for ln in lines if ln.strip().startswith("_e(")]
    assert len(imports) == 1 and len(entries) == 1 and len(lines) == 2, "the page shows one import and one entry"
    namespace = {**vars(registry_module), "__package__": "dpbalance.policies"}
    exec(imports[0], namespace)  # noqa: S102 - our own documentation's code
    entry = eval(entries[0], namespace)  # noqa: S307 - our own documentation's code
    assert entry.name not in registry_module.POLICIES, "the example must not be a policy the package already has"
    copy = Registry("policy", "policies", entries=[*registry_module.POLICIES.entries(), entry])
    monkeypatch.setattr(registry_module, "POLICIES", copy)
    yield entry


def test_the_documented_policy_dispatches_every_request(least_work):
    n, G, B = 300, 3, 4
    rng = np.random.default_rng(0)
    w = Workload.from_arrays(np.zeros(n), rng.integers(10, 2000, n), rng.integers(1, 60, n), name="doc")
    spec = PolicySpec.parse("least_work:tokens_per_request=500")
    assert spec.entry is least_work and spec.label == "least_work:tokens_per_request=500.0"
    res, _ = run_simulation(w, spec, SimConfig(workers=G, slots=B, arrival="saturated"))
    assert res.policy == spec.label
    assert res.requests == res.completed == n and res.never_admitted == 0 and res.running == 0


def test_the_documented_option_changes_the_choice(least_work):
    # worker 0 runs two short requests (2 + 200/scale), worker 1 one long one (1 + 3000/scale)
    snap = snapshot_of([[100, 100], [3000]], pool=[(1, 50)], slots=4)
    for scale, worker in ((1000.0, 0), (100_000.0, 1)):
        policy = PolicySpec.parse(f"least_work:tokens_per_request={scale}").build(PolicyContext(workers=2, slots=4))
        assert policy.dispatch(snap).worker.tolist() == [worker]


def test_the_real_registry_is_untouched():
    assert "least_work" not in registry_module.POLICIES
    assert not (Path(registry_module.__file__).parent / "least_work.py").exists()
