"""Core model: metrics identities, cluster state bookkeeping, the pool, the spec parser."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpbalance.core import (
    ClusterState,
    Pool,
    SpecError,
    StateError,
    Workload,
    balance_ratio,
    idle_fraction,
    imbalance_gap,
    imbalance_maxmin,
    parse_spec,
    split_specs,
)
from dpbalance.core.metrics import step_stats


def test_metrics_worked_example():
    loads = np.array([100, 90, 70, 60])  # the BalanceRoute digest's example
    assert imbalance_gap(loads) == 80
    assert imbalance_maxmin(loads) == 40
    assert idle_fraction(loads) == pytest.approx(80 / 400)
    assert balance_ratio(loads) == pytest.approx(80 / 100)
    assert idle_fraction(np.zeros(3)) == 0.0


@given(st.lists(st.lists(st.integers(0, 10**6), min_size=3, max_size=3), min_size=1, max_size=20))
def test_step_stats_match_row_formulas(rows):
    m = np.array(rows)
    s = step_stats(m.max(1), m.min(1), m.sum(1).astype(float), 3)
    np.testing.assert_allclose(s["gap"], imbalance_gap(m))
    np.testing.assert_allclose(s["maxmin"], imbalance_maxmin(m))
    np.testing.assert_allclose(s["idle"], idle_fraction(m))
    np.testing.assert_allclose(s["balance"], balance_ratio(m))
    # idle fraction and balance ratio are complements
    np.testing.assert_allclose(s["idle"][m.max(1) > 0] + s["balance"][m.max(1) > 0], 1.0)


def test_cluster_state_accounting():
    st_ = ClusterState(2, 2)
    a = st_.admit(1, 0, 100)
    b = st_.admit(2, 0, 50)
    with pytest.raises(StateError, match="no free slot"):
        st_.admit(3, 0, 1)
    st_.advance()
    st_.advance()
    assert st_.loads.tolist() == [154, 0]
    assert st_.slot_age(a) == 2
    assert st_.release(a) == 102
    assert st_.loads.tolist() == [52, 0] and st_.free.tolist() == [1, 2]
    st_.add_tokens(b, 3)  # router path: tokens observed from a stream
    assert st_.loads[0] == 55 and st_.slot_age(b) == 5
    st_.set_cap(1, 0)
    assert st_.free[1] == 0
    with pytest.raises(StateError):
        st_.admit(4, 1, 1)
    st_.set_cap(1, 2)
    st_.admit(4, 1, 1)


def test_pool_fifo_removal_and_reinsert():
    p = Pool(capacity=16)
    for r in range(40):  # forces growth
        p.push(r, r * 10, float(r))
    assert len(p) == 40
    p.remove([0, 1, 2])  # prefix
    p.remove([5, 3, 9])  # arbitrary
    ids = p.view()[0]
    assert ids[:5].tolist() == [4, 6, 7, 8, 10]
    assert p.view()[1][0] == 40
    with pytest.raises(StateError):
        p.remove([3])
    p.insert(3, 30, 3.0)  # a re-queued request goes back in id order
    assert p.view()[0][:3].tolist() == [3, 4, 6]
    with pytest.raises(StateError):
        p.insert(3, 30, 3.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sets(st.integers(0, 29), max_size=6), max_size=8))
def test_pool_matches_a_list_model(removals):
    p = Pool(capacity=16)
    model = list(range(30))
    p.extend(np.arange(30), np.arange(30) * 2, np.zeros(30), np.full(30, -1))
    for rem in removals:
        rem = [r for r in rem if r in model]
        if rem:
            p.remove(rem)
            model = [r for r in model if r not in rem]
        assert p.view()[0].tolist() == model
        assert p.view()[1].tolist() == [2 * r for r in model]


def test_spec_parser():
    assert parse_spec("brh:predictor=survival,H=40") == ("brh", {"predictor": "survival", "H": "40"})
    assert parse_spec("br0") == ("br0", {})
    with pytest.raises(SpecError):
        parse_spec("brh:H")
    with pytest.raises(SpecError):
        parse_spec("brh:H=1,H=2")
    assert split_specs("jsq_count,brh:H=40,gamma=0.8,br0") == ["jsq_count", "brh:H=40,gamma=0.8", "br0"]


def test_workload_filters_and_splits():
    w = Workload.from_arrays([3.0, 1.0, 2.0, 4.0], [10, 20, 30, 40], [5, 1500, 7, 2000], name="w")
    assert w.prompt.tolist() == [20, 30, 10, 40] and w.arrival[0] == 0.0  # sorted, rebased
    assert len(w.filter(min_output=1001)) == 2
    assert w.filter(max_requests=2).prompt.tolist() == [20, 30]
    train, test = w.split(0.5)
    assert train.prompt.tolist() == [20, 30] and test.prompt.tolist() == [10, 40]
    train, test = w.head_tail(3)
    assert test.prompt.tolist() == [20, 30, 10] and train.prompt.tolist() == [40]
    with pytest.raises(ValueError):
        Workload(np.array([1.0, 0.0]), np.array([1, 1]), np.array([1, 1]), np.array([-1, -1]))
    with pytest.raises(ValueError, match="output length"):
        Workload.from_arrays([0.0], [1], [0])


def test_blocks_tell_chained_hashes_from_ids_that_repeat_after_other_blocks():
    """Chained hashes (an id stands for its whole prefix: always the same block before it, or always first) pass;
    an id after two different blocks, or first in one prompt and not in another, is shown with its two rows."""
    from dpbalance.core.workload import Blocks

    rng = np.random.default_rng(3)
    prompts = [[0]]
    for _ in range(300):  # a random prefix tree: each prompt extends a prefix of an earlier one
        base = prompts[int(rng.integers(len(prompts)))]
        cut = int(rng.integers(len(base) + 1))
        prompts.append(base[:cut] + rng.integers(0, 5, int(rng.integers(0, 4))).tolist())
    ids: dict[tuple, int] = {}
    chained = [[ids.setdefault(tuple(p[: j + 1]), len(ids)) for j in range(len(p))] for p in prompts]
    assert Blocks.from_lists(chained, 16).unchained() is None
    assert Blocks.from_lists([[], [7, 8], [9], [7, 8, 1]], 16).unchained() is None
    assert Blocks.from_lists([[7, 8], [5], [9, 8]], 16).unchained() == (0, 2, 8)
    assert Blocks.from_lists([[7, 8], [8, 1]], 16).unchained() == (0, 1, 8)
    assert Blocks.from_lists([[4], [4, 4]], 16).unchained() == (0, 1, 4)
