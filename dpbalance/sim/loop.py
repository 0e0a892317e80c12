"""The simulator's step loop: one object holding a run's state, and the four phases of every step.

One step, in this exact order:

1. **Arrivals.** Requests whose arrival (plus the optional fixed prefill delay) is <= now enter the waiting pool.
   In ``saturated`` mode the pool is instead topped up, in trace order, to ``visible`` requests.
2. **Dispatch.** The policy is called once with a ``Snapshot`` and returns assignments; each is validated (the
   request is waiting, the worker has a free slot, no duplicates) and applied.
3. **Step.** Decode-only (the engine model off): every worker decodes one token per active request, the step
   lasts τ = step_time(loads), and a request's first decode step is the step it was admitted in. With the engine
   model (``--prefill`` / ``--prefix-cache``), the ranks schedule prefill chunks and decodes under their token
   budgets and the step lasts as long as the slowest rank (``engine.core``); a request's first token comes with
   its last prompt chunk.
4. **Finishes.** Requests that reached their output length finish and free their slots.

If nothing is active and the pool is empty, time jumps to the next arrival. If the policy leaves the pool waiting
with nothing active, time advances by one empty engine iteration (step_time of zero load) — the way an engine with
an idle batch spins — and the run fails if that repeats ``max_idle_dispatches`` times in a row (a starving policy
would otherwise hang it).

Per-step cost is O(G) vectorised plus O(assignments + finishes): loads grow with one vector add; on a step where
requests finish (a count per finish step says so) they are the slots whose finish step is now, found by one
vectorised comparison over the slot table; admissions and releases are applied as batches; per-step metrics are
raw rows reduced in vectorised chunks. The engine model adds O(1) per request that is waiting or prefilling.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..core.apply import InvalidAssignment, apply_assignments
from ..core.snapshot import Snapshot
from ..core.state import ClusterState, Pool
from ..core.workload import Workload
from ..engine.core import Engine, EngineError
from ..engine.step_time import LinearMax, make_step_time
from ..engine.view import EngineView
from .config import SimConfig, SimulationError, arrival_times
from .energy import make_energy
from .record import EngineSteps, RunRecord, StepRecorder

ProgressFn = Callable[[int, int], None]


_perf_ns = time.perf_counter_ns


class Loop:
    """One simulated run (see the module docstring); ``run()`` returns its ``RunRecord``."""

    def __init__(
        self,
        workload: Workload,
        policy,
        cfg: SimConfig,
        progress: ProgressFn | None = None,
        observer: Callable[[Snapshot], None] | None = None,
    ):
        N = len(workload)
        if N == 0:
            raise SimulationError("the workload is empty (check the filters)")
        self.w, self.policy, self.cfg, self.progress, self.observer = workload, policy, cfg, progress, observer
        self.N, self.G, B = N, cfg.workers, cfg.slots
        self.step_model = make_step_time(cfg.step_time, B)
        self.energy_model = make_energy(cfg.energy)
        arr = arrival_times(workload, cfg)
        self.arr, self.sat = arr, arr is None
        self.ready = None if self.sat else arr + cfg.prefill_delay_s
        self.visible = cfg.effective_visible
        self.ids_all = np.arange(N, dtype=np.int64)
        self.enter = np.zeros(N, dtype=np.float64) if self.sat else arr.copy()
        self.admit_step = np.full(N, -1, dtype=np.int64)
        self.worker_of = np.full(N, -1, dtype=np.int64)
        self.st = st = ClusterState(self.G, B)
        self.pool = Pool(capacity=(self.visible + 16) if self.sat else min(N, 4096) + 16)
        self.rec = StepRecorder(self.G, self.step_model, self.energy_model, cfg.record_stride)
        self.linear = isinstance(self.step_model, LinearMax)
        if self.linear:
            self._C, self._t_tok = self.step_model.C, self.step_model.t_tok
        self.idle_tau = self.step_model(0.0, 0.0)
        # per slot: the step at which its request finishes (-1: free), and its admission number, so the requests
        # finishing together are released in the order they were admitted; ``n_ending[e % R]`` counts the requests
        # that finish at step e (every finish is less than R steps ahead), so steps where nothing finishes skip the
        # slot scan
        self.slot_end = np.full(self.G * st.bmax, -1, dtype=np.int64)
        self.slot_seq = np.zeros(self.G * st.bmax, dtype=np.int64)
        self.R = int(workload.output.max()) + 1
        self.n_ending = np.zeros(self.R, dtype=np.int64)
        self.n_admitted = 0
        self.disp: list[int] = []
        self.t = 0.0
        self.k = 0  # steps done
        self.nxt = 0  # next request to enter the pool
        self.done = 0
        self.active = 0
        self.idle = 0
        self.view = None  # the PrefixView policies see (the engine model's, when it runs)
        self.engine = self._engine() if cfg.engine.active else None
        self.capacity = self.G * cfg.slots
        self._policy_dispatch = policy.dispatch

    def _engine(self) -> Engine:
        cfg, w = self.cfg, self.w
        cap = cfg.engine.capacity
        if cap is not None:
            too_big = np.flatnonzero(w.prompt + w.output > cap)
            if len(too_big):
                i = int(too_big[0])
                raise SimulationError(
                    f"{len(too_big)} request(s) need more KV than --kv-capacity {cap} holds (request {i}: "
                    f"{int(w.prompt[i])} prompt + {int(w.output[i])} output tokens); raise the capacity or filter "
                    "the trace (--max-output)"
                )
        try:
            eng = Engine(
                self.G,
                cfg.engine,
                self.step_model,
                slots=cfg.slots,
                block_size=None if w.blocks is None else w.blocks.size,
            )
        except EngineError as exc:
            raise SimulationError(str(exc)) from None
        eng.use_source(w.prompt, w.blocks)
        self.view = EngineView(eng)
        self.slot_of = np.full(self.N, -1, dtype=np.int64)
        self.first_step = np.full(self.N, -1, dtype=np.int64)
        self.finish_step = np.full(self.N, -1, dtype=np.int64)
        self.esteps = EngineSteps()
        self.stuck = 0
        return eng

    # ------------------------------------------------------------------ the loop
    def run(self) -> RunRecord:
        wall0 = time.perf_counter()
        next_progress = 2048
        # the phases, bound once: the loop runs once per engine step (millions of times)
        arrivals, dispatch, finishes = self.arrivals, self.dispatch, self.finishes
        step = self.decode_step if self.engine is None else self.engine_step
        progress, N = self.progress, self.N
        sat, ready, n_ending, R, pool = self.sat, self.ready, self.n_ending, self.R, self.pool
        while self.done < N:
            # the phases' own first checks, made here: most steps have nothing to let in and nothing ending
            if (sat or self.active == 0 or (self.nxt < N and ready[self.nxt] <= self.t)) and not arrivals():
                continue
            if pool.tail != pool.head:  # as in the router, the policy is asked only when requests wait
                dispatch()
            if self.active == 0:
                self.idle_iteration()
                continue
            self.idle = 0
            step()
            if n_ending[self.k % R]:
                finishes()
            if progress is not None and self.k >= next_progress:
                progress(self.done, self.N)
                next_progress = self.k + 2048
        if progress is not None:
            progress(self.done, self.N)
        return self.record(time.perf_counter() - wall0)

    # ------------------------------------------------------------------ 1. arrivals
    def arrivals(self) -> bool:
        """Let new requests into the pool; False when nothing can happen until the next arrival (time jumped)."""
        pool, nxt, N = self.pool, self.nxt, self.N
        w = self.w
        if self.sat:
            need = self.visible - (pool.tail - pool.head)
            if need > 0 and nxt < N:
                j = min(N, nxt + need)
                self.enter[nxt:j] = self.t
                pool.extend(self.ids_all[nxt:j], w.prompt[nxt:j], self.enter[nxt:j], w.key[nxt:j])
                self.nxt = j
        elif nxt < N and self.ready[nxt] <= self.t:
            j = int(np.searchsorted(self.ready, self.t, side="right"))
            pool.extend(self.ids_all[nxt:j], w.prompt[nxt:j], self.arr[nxt:j], w.key[nxt:j])
            self.nxt = j
        if self.active == 0 and pool.tail == pool.head:
            if self.nxt < N and not self.sat:
                self.t = max(self.t, float(self.ready[self.nxt]))
                return False
            raise SimulationError(f"internal: {N - self.done} requests unaccounted for")  # pragma: no cover
        return True

    # ------------------------------------------------------------------ 2. dispatch
    def dispatch(self) -> None:
        st, pool = self.st, self.pool
        waiting = pool.tail - pool.head
        snap = Snapshot(st, pool, self.t, prefix=self.view)
        if self.observer is not None:
            self.observer(snap)
        t0 = _perf_ns()
        asg = self._policy_dispatch(snap)
        t1 = _perf_ns()
        if waiting and self.active < self.capacity:
            self.disp.append(t1 - t0)
        if asg is None or len(asg) == 0:
            return
        try:
            got = apply_assignments(st, pool, asg, self.w.output)
        except InvalidAssignment as exc:
            raise SimulationError(
                f"policy {type(self.policy).__name__} made an invalid assignment at step {self.k}: {exc}"
            ) from None
        rid, n_got, k = got.request_id, len(got.slot), self.k
        self.admit_step[rid] = k
        self.worker_of[rid] = got.worker
        self.slot_seq[got.slot] = np.arange(self.n_admitted, self.n_admitted + n_got)
        self.n_admitted += n_got
        self.active += n_got
        if self.engine is None:
            ends = k + self.w.output[rid]
            self.slot_end[got.slot] = ends
            np.add.at(self.n_ending, ends % self.R, 1)
        else:
            self.slot_of[rid] = got.slot
            self.engine.admit(rid, got.worker)

    def idle_iteration(self) -> None:
        """The policy left requests waiting with every worker idle: one empty engine iteration."""
        self.idle += 1
        if self.idle > self.cfg.max_idle_dispatches:
            raise SimulationError(
                f"policy {type(self.policy).__name__} left {self.pool.tail - self.pool.head} requests waiting "
                f"with every worker idle for {self.idle - 1} consecutive iterations"
            )
        self.t += self.idle_tau

    # ------------------------------------------------------------------ 3. the step
    def decode_step(self) -> None:
        """Decode-only: one token for every active request; τ from the loads (the papers' model)."""
        st = self.st
        loads = st.loads
        m = int(loads.max())
        if self.linear:
            tau = self._C + self._t_tok * m
        elif self.step_model.uses_seqs:
            G = self.G
            tau = self.step_model(float(m), float(loads.sum()) / G, float(st.counts.max()), self.active / G)
        else:
            tau = self.step_model(float(m), float(loads.sum()) / self.G)
        self.t += tau
        self.rec.add(loads, tau, self.t, self.active)
        st.advance()
        self.k += 1

    def engine_step(self) -> None:
        """The engine model: prefill chunks and decodes under each rank's budget, the slowest rank sets τ."""
        st, k = self.st, self.k
        out = self.engine.step()
        self.t += out.tau
        self.rec.add(st.loads, out.tau, self.t, int(out.generated.sum()))  # tokens sampled, not requests placed
        self.esteps.add(out)
        if out.generated.any() or out.prefill_tokens.any():
            self.stuck = 0
        else:  # placed requests that can never run (a bug, or settings with no way forward) must not spin forever
            self.stuck += 1
            if self.stuck > self.cfg.max_idle_dispatches:
                raise SimulationError(
                    f"the engine made no progress for {self.stuck - 1} consecutive steps at step {k} with "
                    f"{self.active} requests placed ({len(out.stalled)} waiting or prefilling)"
                )
        st.clock += 1
        st.loads += out.generated
        if out.stalled:  # placed requests that sampled nothing keep their age
            st.slot_start[self.slot_of[out.stalled]] += 1
        if out.preempted:  # their finishes are off; one preempted in the step it (re)started has none scheduled yet
            slots = self.slot_of[out.preempted]
            slots = slots[self.slot_end[slots] >= 0]
            np.add.at(self.n_ending, self.slot_end[slots] % self.R, -1)
            self.slot_end[slots] = -1
        if out.started:
            rid = np.asarray(out.started, dtype=np.int64)
            gen = np.fromiter((self.engine.generated(i) for i in out.started), dtype=np.int64, count=len(rid))
            ends = k + 1 + self.w.output[rid] - gen
            self.slot_end[self.slot_of[rid]] = ends
            np.add.at(self.n_ending, ends % self.R, 1)
            fresh = rid[self.first_step[rid] < 0]
            self.first_step[fresh] = k
        self.k = k + 1

    # ------------------------------------------------------------------ 4. finishes
    def finishes(self) -> None:
        k, R = self.k, self.R
        if not self.n_ending[k % R]:
            return
        self.n_ending[k % R] = 0
        fin = (self.slot_end == k).nonzero()[0]
        if len(fin) > 1:
            fin = fin[np.argsort(self.slot_seq[fin])]
        self.slot_end[fin] = -1
        if self.engine is not None:
            rids = self.st.slot_rid[fin]
            self.finish_step[rids] = k - 1
            self.engine.finish(rids)
        self.st.release_many(fin)
        self.done += len(fin)
        self.active -= len(fin)

    # ------------------------------------------------------------------ the record
    def record(self, wall: float) -> RunRecord:
        st, em = self.st, self.energy_model
        out = RunRecord(
            workers=self.G,
            slots=self.cfg.slots,
            steps=self.rec.arrays(),
            arrival=self.enter,
            admit_step=self.admit_step,
            worker=self.worker_of,
            output=self.w.output.copy(),
            dispatch_ns=np.asarray(self.disp, dtype=np.int64),
            wall_s=wall,
            step_params=self.step_model.params(),
            energy_params=em.params(),
            idle_power_w=em.idle_power_w(),
            final_loads=st.loads.copy(),
            final_counts=st.counts.copy(),
        )
        if self.engine is not None:
            out.first_step = self.first_step
            out.engine = self.esteps.summary(self.engine, self.finish_step)
        return out


def simulate(
    workload: Workload,
    policy,
    cfg: SimConfig,
    progress: ProgressFn | None = None,
    observer: Callable[[Snapshot], None] | None = None,
) -> RunRecord:
    """Run ``policy`` over ``workload``. ``progress(done, total)`` is called every few thousand steps;
    ``observer(snapshot)`` (tests, benchmarks) sees every snapshot right before the policy does. A policy whose
    requests are forwarded (``SimConfig.front``) runs with the ranks' queues of ``SimConfig.for_policy``; the record
    keeps the slots asked for and says which front it ran."""
    run_cfg = cfg.for_policy(policy, len(workload))
    rec = Loop(workload, policy, run_cfg, progress, observer).run()
    rec.slots = cfg.slots
    rec.front = "forward" if run_cfg is not cfg else "pool"
    return rec
