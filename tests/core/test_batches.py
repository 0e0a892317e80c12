"""Batch paths of the core equal their one-at-a-time definitions: ``release_many`` is ``release`` in a loop (same
loads, free slots and slot reuse), and ``Assignments`` is a list of pairs to every reader."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpbalance.core import Assignment, Assignments, ClusterState, Pool
from dpbalance.core.apply import InvalidAssignment, apply_assignments, as_arrays


def _state(st_):
    return (
        st_.loads.tolist(),
        st_.counts.tolist(),
        st_.free.tolist(),
        st_.slot_rid.tolist(),
        [list(s) for s in st_._free_slots],
    )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_release_many_equals_release_in_order(data):
    G, B = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    one, many = ClusterState(G, B), ClusterState(G, B)
    rid = 0
    for _ in range(data.draw(st.integers(1, 6))):  # rounds of: admit some, decode, release some
        room = [g for g in range(G) for _ in range(int(one.free[g]))]  # one entry per free slot
        ws = data.draw(st.permutations(room))[: data.draw(st.integers(0, len(room)))]
        for g in ws:
            s = data.draw(st.integers(0, 50))
            a = one.admit(rid, g, s)
            b = many.admit(rid, g, s)
            assert a == b
            rid += 1
        one.advance()
        many.advance()
        occupied = np.flatnonzero(one.slot_rid >= 0).tolist()
        gone = data.draw(st.permutations(occupied))[: data.draw(st.integers(0, len(occupied)))]
        for s in gone:
            one.release(s)
        if gone:
            many.release_many(np.array(gone, dtype=np.int64))
        assert _state(one) == _state(many)


def test_release_many_respects_a_lowered_cap():
    st_ = ClusterState(2, 3)
    slots = [st_.admit(r, 0, 10) for r in range(3)]
    st_.set_cap(0, 1)
    st_.release_many(np.array(slots[:1]))
    assert st_.free.tolist() == [0, 3]  # 2 still active on a worker capped at 1
    st_.release_many(np.array(slots[1:]))
    assert st_.free.tolist() == [1, 3] and st_.loads.tolist() == [0, 0]


def test_assignments_read_like_a_list_of_pairs():
    a = Assignments(np.array([7, 9]), np.array([1, 0]))
    assert len(a) == 2 and list(a) == [(7, 1), (9, 0)] and a == [(7, 1), (9, 0)] and a != [(7, 1)]
    assert a[1] == Assignment(9, 0) and a[1:] == [(9, 0)]
    assert [tuple(x) for x in a] == [(7, 1), (9, 0)]
    rids, ws = as_arrays(a)
    assert rids is a.request_id and ws is a.worker
    with pytest.raises(ValueError):
        Assignments([1, 2], [0])


@pytest.mark.parametrize("batch", [[(1, 0)], [(1,)], (np.array([1]), np.array([0])), None, [1, 2]])
def test_anything_but_an_assignments_batch_is_an_invalid_assignment(batch):
    st_, pool = ClusterState(2, 2), Pool()
    pool.push(1, 10, 0.0)
    with pytest.raises(InvalidAssignment, match="must return an Assignments batch"):
        apply_assignments(st_, pool, batch)
    assert len(pool) == 1 and st_.counts.tolist() == [0, 0]


def test_out_of_order_duplicate_names_the_request():
    st_, pool = ClusterState(2, 4), Pool()
    for r in (1, 2, 3):
        pool.push(r, 10, 0.0)
    with pytest.raises(InvalidAssignment, match="request 2 was assigned twice"):
        apply_assignments(st_, pool, Assignments([3, 2, 1, 2], [0, 0, 1, 1]))
    assert len(pool) == 3 and st_.counts.tolist() == [0, 0]


def test_a_batch_of_views_into_the_pool_is_admitted_as_given():
    """A policy may return slices of the snapshot's pool arrays; taking them out of the middle of the pool shifts
    the pool's storage, which must not change what is admitted."""
    st_, pool = ClusterState(2, 4), Pool()
    for r in (10, 11, 12, 13):
        pool.push(r, r, 0.0)
    ids = pool.view()[0]
    got = apply_assignments(st_, pool, Assignments(ids[1:3], np.array([0, 1])))
    assert got.request_id.tolist() == [11, 12] and st_.slot_rid[got.slot].tolist() == [11, 12]
    assert st_.loads.tolist() == [11, 12] and pool.view()[0].tolist() == [10, 13]
