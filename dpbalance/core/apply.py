"""The one guard between a policy's decision and the cluster state, shared by the simulator and the router.

A policy returns assignments (request id → worker). Before anything changes, ``apply_assignments`` checks the
whole batch: every request is waiting in the pool, none is assigned twice, every worker exists and has a free
slot for everything it is given. Only then are the requests taken out of the pool and admitted. A bad batch
raises ``InvalidAssignment`` and leaves state and pool exactly as they were, so the caller decides what a policy
bug means (the simulator stops with an error; the router counts it and falls back to a safe rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .snapshot import Assignments
from .state import ClusterState, Pool, StateError


class InvalidAssignment(StateError):
    """A policy returned an assignment that cannot be applied (nothing was changed)."""


class Admitted(NamedTuple):
    """Requests admitted by one ``apply_assignments`` call, in the order the policy gave them."""

    request_id: np.ndarray  # int64
    worker: np.ndarray  # int64
    slot: np.ndarray  # int64: index into the state's slot table


EMPTY = Admitted(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))


def as_arrays(assignments) -> tuple[np.ndarray, np.ndarray]:
    """(request ids, workers) of an ``Assignments`` batch, the one type a policy returns."""
    if not isinstance(assignments, Assignments):
        raise InvalidAssignment(
            f"a policy must return an Assignments batch (request ids and workers), got {type(assignments).__name__}"
        )
    return assignments.request_id, assignments.worker


def _check(state: ClusterState, pool: Pool, rids: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch without changing anything; returns its pool-relative positions, as given and sorted."""
    G = state.G
    if len(rids) != len(ws):
        raise InvalidAssignment(f"{len(rids)} request ids but {len(ws)} workers")
    try:
        need = np.bincount(ws, minlength=G)  # requests per worker; longer than G if a worker is out of range
    except ValueError:  # a negative worker
        need = None
    if need is None or len(need) > G:
        bad = int(ws[(ws < 0) | (ws >= G)][0])
        raise InvalidAssignment(f"worker {bad} does not exist (workers are 0..{G - 1})")
    try:
        pos = pool.positions(rids)
    except StateError as exc:
        raise InvalidAssignment(str(exc)) from None
    # policies usually assign in pool order: then the positions are already sorted and distinct
    if len(pos) > 1 and not bool((pos[1:] > pos[:-1]).all()):
        ordered = np.sort(pos)
        dup = np.flatnonzero(ordered[1:] == ordered[:-1])
        if len(dup):
            raise InvalidAssignment(f"request {int(pool.ids[pool.head + ordered[dup[0]]])} was assigned twice")
    else:
        ordered = pos
    if (need > state.free).any():
        g = int(np.flatnonzero(need > state.free)[0])
        raise InvalidAssignment(
            f"worker {g} was given {int(need[g])} request(s) but has {int(state.free[g])} free slot(s) "
            f"(cap {int(state.caps[g])})"
        )
    return pos, ordered


def apply_assignments(
    state: ClusterState,
    pool: Pool,
    assignments,
    limit: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
) -> Admitted:
    """Validate then apply a policy's assignments atomically; returns what was admitted.

    ``limit`` gives each admitted request's output-length hint for the slot table (the simulator's true output
    length, the router's ``max_tokens``): an array indexed by request id, or a function of the id array.
    Prompt lengths and prompt keys come from the pool.
    """
    rids, ws = as_arrays(assignments)
    if len(rids) == 0:
        return EMPTY
    pos, ordered = _check(state, pool, rids, ws)
    at = pool.head + pos
    # fancy indexing copies, so the pool may move underneath; the ids are taken from the pool too (equal to
    # ``rids`` once checked) because a policy may hand back views of the pool's own arrays
    rids = pool.ids[at]
    prompts = pool.prompt[at]
    keys = pool.key[at]
    if limit is None:
        lims = np.zeros(len(rids), dtype=np.int64)
    elif callable(limit):
        lims = np.asarray(limit(rids), dtype=np.int64)
    else:
        lims = np.asarray(limit)[rids]
    pool.remove_positions(ordered)
    slots = state.admit_many(rids, ws, prompts, lims, keys)
    return Admitted(rids, ws, slots)
