"""The shared assignment guard: a bad batch changes nothing; a good one admits exactly what was asked."""

import numpy as np
import pytest

from dpbalance.core.apply import InvalidAssignment, apply_assignments
from dpbalance.core.snapshot import Assignments
from dpbalance.core.state import ClusterState, Pool


def fresh():
    st = ClusterState(3, 2)
    st.admit(900, 1, 70)
    pool = Pool()
    for rid, s in ((1, 10), (2, 20), (3, 30), (4, 40)):
        pool.push(rid, s, 0.0, key=rid * 11)
    return st, pool


def pairs(batch) -> Assignments:
    return Assignments([r for r, _ in batch], [g for _, g in batch])


def state_of(st, pool):
    return (st.loads.tolist(), st.counts.tolist(), st.free.tolist(), st.slot_rid.tolist(), pool.view()[0].tolist())


@pytest.mark.parametrize(
    "batch,msg",
    [
        ([(1, 0), (2, 0), (3, 0)], "worker 0 was given 3"),
        ([(1, 0), (1, 2)], "twice"),
        ([(1, 0), (77, 2)], "not in the waiting pool"),
        ([(1, 3)], "worker 3 does not exist"),
        ([(1, -1)], "worker -1 does not exist"),
        ([(1, 1), (2, 1)], "worker 1 was given 2 request"),  # worker 1 has one slot left
    ],
)
def test_bad_batch_raises_and_changes_nothing(batch, msg):
    st, pool = fresh()
    before = state_of(st, pool)
    with pytest.raises(InvalidAssignment, match=msg):
        apply_assignments(st, pool, pairs(batch))
    assert state_of(st, pool) == before


def test_good_batch_admits_with_pool_prompts_keys_and_limits():
    st, pool = fresh()
    limits = np.arange(10) * 100
    got = apply_assignments(st, pool, pairs([(3, 2), (1, 0), (4, 2)]), limits)
    assert got.request_id.tolist() == [3, 1, 4] and got.worker.tolist() == [2, 0, 2]
    assert st.loads.tolist() == [10, 70, 70] and st.counts.tolist() == [1, 1, 2] and st.free.tolist() == [1, 1, 0]
    assert st.slot_prompt[got.slot].tolist() == [30, 10, 40]
    assert st.slot_key[got.slot].tolist() == [33, 11, 44]
    assert st.slot_limit[got.slot].tolist() == [300, 100, 400]
    assert pool.view()[0].tolist() == [2]
    # the same batch with limits from a function of the ids, and an empty batch
    st2, pool2 = fresh()
    got2 = apply_assignments(st2, pool2, Assignments(np.array([3, 1, 4]), np.array([2, 0, 2])), lambda r: r * 100)
    assert st2.loads.tolist() == st.loads.tolist() and st2.slot_limit[got2.slot].tolist() == [300, 100, 400]
    assert len(apply_assignments(st2, pool2, pairs([])).slot) == 0
