"""``--backend ray`` on a local Ray gives the same numbers as ``--backend local`` for the same grid.

A local Ray starts in a few seconds here, so this runs in the default suite whenever ``ray`` is installed
(``pip install -e '.[ray]'``); it is skipped otherwise.
"""

import pytest

ray = pytest.importorskip("ray")

from dpbalance.sweep import expand, run_cells  # noqa: E402

DETERMINISTIC = (
    "throughput_tok_s",
    "avg_imbalance_gap",
    "avg_imbalance_maxmin",
    "balance_ratio",
    "idle_fraction",
    "energy_j",
    "energy_j_per_token",
    "tpot_p50_ms",
    "tpot_p95_ms",
    "ttft_p95_s",
    "e2e_p99_s",
    "steps",
    "completed",
    "makespan_s",
)


@pytest.mark.timeout(300)
def test_ray_matches_local(tmp_path):
    cells = expand(
        {"trace": "sample", "max_requests": 300, "slots": 8},
        {
            "policy": ["jsq_tokens", "p2c", "vllm"],
            "workers": [2, 4],
            "load": [{"arrival": "saturated"}, {"arrival": "replay", "rate_scale": 8}],
        },
    )
    cells += expand(
        {"trace": "sample", "resample": 400, "seed": 3, "policy": "random", "workers": 3, "arrival": "saturated"}
    )
    local = run_cells(cells, tmp_path / "local", backend="local", processes=2)
    remote = run_cells(cells, tmp_path / "ray", backend="ray", processes=2)
    assert remote.computed == len(cells)
    assert not ray.is_initialized()  # the backend shuts down the Ray it started
    for a, b in zip(local.outcomes, remote.outcomes):
        assert a.hash == b.hash
        for f in DETERMINISTIC:
            assert getattr(a.result, f) == getattr(b.result, f), (a.cell.short(), f)
    # the Ray run's cache is the same format: re-running locally on it computes nothing
    again = run_cells(cells, tmp_path / "ray", backend="local", processes=1)
    assert again.computed == 0
