"""``dpbalance engine-sim``: one process emulating a data-parallel decode group, one port per rank (and
optionally one DP endpoint port where vLLM's ``X-data-parallel-rank`` header selects the rank).

All ranks share **one step barrier**: every step, each rank decodes one token for each of its running
requests and the step lasts ``step_time(loads of all ranks)`` — the simulator's model — divided by
``time_scale``, so imbalance costs real wall time. Requests beyond a rank's slots wait in that rank's queue
(as in vLLM). The group keeps a simulated clock and the simulator's per-step load statistics
(``/admin/stats``), so a live run can be compared with a simulated one.

A streamed token is written to its connection by the step loop itself (one pre-built SSE event, no task
switch), so the emulator stays cheap enough to drive a router at its ceiling. A request whose client has
gone is dropped at the next step (as vLLM aborts it). The HTTP API is in ``api``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.config import setting
from ..core.metrics import step_stats
from ..engine.step_time import make_step_time


@dataclass(frozen=True)
class EngineSimConfig:
    ranks: int = setting(8, "DP decode ranks to emulate.", min=1)
    base_port: int = setting(8001, "Rank r listens on base-port + r (0: free ports).", min=0, max=65535)
    dp_port: int | None = setting(
        None,
        "Also serve one DP endpoint on this port, like `vllm serve --data-parallel-size N`: the "
        "X-data-parallel-rank header pins a request to a rank.",
        min=0,
        max=65535,
    )
    slots: int = setting(72, "Running sequences per rank (vLLM's max_num_seqs); more wait in its queue.", min=1)
    time_scale: float = setting(1.0, "Run k× faster than the step-time model.", min=1e-3)
    step_time: str = setting(
        "linear_max", "Step-time model spec, or a file written by `dpbalance calibrate` (as in simulate)."
    )
    model: str = setting("dpbalance-sim", "Served model name (others get 404).")
    host: str = setting("127.0.0.1", "Bind address.")
    fail_rank: int | None = setting(None, "Make this rank unhealthy after --fail-after seconds.", min=0)
    fail_after: float = setting(10.0, "Seconds before --fail-rank fails.", min=0.0)

    def __post_init__(self):
        if self.fail_rank is not None and self.fail_rank >= self.ranks:
            raise ValueError(f"--fail-rank {self.fail_rank} does not exist (ranks are 0..{self.ranks - 1})")


@dataclass(eq=False)
class SimRequest:
    """A request inside the emulator. Streamed tokens go straight to ``emit``; ``done`` resolves at the end
    with "ok" or "break"."""

    rid: str
    prompt_tokens: int
    max_tokens: int
    chat: bool
    model: str
    done: asyncio.Future
    emit: object = None  # callable(req, last) for streams, None otherwise
    gone: object = None  # callable() -> True when the client has gone
    generated: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    kv: dict | None = None


CATCH_UP_S = 0.01  # a step that starts at most this late (wall seconds) is shortened by the delay


class Rank:
    """One DP rank: running requests (≤ slots) and its own waiting queue."""

    def __init__(self, idx: int, slots: int):
        self.idx = idx
        self.slots = slots
        self.running: list[SimRequest] = []
        self.waiting: list[SimRequest] = []
        self.healthy = True
        self.paused = False
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.requests_ok = 0
        self.itl_sum = 0.0  # wall seconds between a request's consecutive tokens (vllm:inter_token_latency_seconds)
        self.itl_count = 0
        self.iterations = 0  # steps this rank ran a batch in, and their tokens (vllm:iteration_tokens_total)
        self.iteration_tokens = 0

    def load(self) -> int:
        return sum(r.prompt_tokens + r.generated for r in self.running)

    def remove(self, req: SimRequest) -> None:
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)


class EngineGroup:
    """The shared-barrier decode loop."""

    def __init__(
        self,
        ranks: int,
        slots: int = 72,
        time_scale: float = 1.0,
        step_time: str = "linear_max",
        model: str = "dpbalance-sim",
        kv_tokens_per_slot: int = 16384,
    ):
        self.ranks = [Rank(i, slots) for i in range(ranks)]
        self.slots = slots
        self.step_model = make_step_time(step_time, slots)
        self.time_scale = float(time_scale)
        self.model = model
        self.kv_capacity = slots * kv_tokens_per_slot
        self.sim_time = 0.0
        self.steps = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._hist: list[tuple[int, int, int, float, int]] = []  # max, min, sum, tau, tokens per step
        self._last_emit: float | None = None  # loop time the previous step handed out its tokens
        self._step_end: float | None = None  # loop time the running step is due to end

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def running(self) -> int:
        return sum(len(rk.running) + len(rk.waiting) for rk in self.ranks)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for rk in self.ranks:  # admit from each rank's queue up to its slots
                while rk.waiting and len(rk.running) < rk.slots:
                    rk.running.append(rk.waiting.pop(0))
            if not any(rk.running and not rk.paused for rk in self.ranks):
                self._wake.clear()
                if any(rk.running for rk in self.ranks):  # only paused ranks hold work: poll
                    await asyncio.sleep(0.01)
                else:
                    await self._wake.wait()
                continue
            loads = np.array([rk.load() for rk in self.ranks], dtype=np.int64)
            if self.step_model.uses_seqs:
                n = [len(rk.running) for rk in self.ranks]
                tau = float(self.step_model(float(loads.max()), float(loads.mean()), float(max(n)), sum(n) / len(n)))
            else:
                tau = float(self.step_model(float(loads.max()), float(loads.mean())))
            t0 = loop.time()
            gap = None if self._last_emit is None else t0 - self._last_emit
            self._last_emit = t0
            tokens = 0
            for rk in self.ranks:
                if rk.paused:
                    continue
                done = []
                if rk.running:
                    rk.iterations += 1
                    rk.iteration_tokens += len(rk.running)
                for r in rk.running:
                    if r.generated and gap is not None:
                        rk.itl_sum += gap
                        rk.itl_count += 1
                    if r.gone is not None and r.gone():  # the client went away: abort, as vLLM does
                        done.append(r)
                        if not r.done.done():
                            r.done.set_result("gone")
                        continue
                    r.generated += 1
                    rk.generation_tokens += 1
                    tokens += 1
                    last = r.generated >= r.max_tokens
                    if r.emit is not None:
                        r.emit(r, last)
                    if last:
                        done.append(r)
                        rk.requests_ok += 1
                        if not r.done.done():
                            r.done.set_result("ok")
                for r in done:
                    rk.running.remove(r)
            self._hist.append((int(loads.max()), int(loads.min()), int(loads.sum()), tau, tokens))
            self.sim_time += tau
            self.steps += 1
            # steps end on a schedule: a step the loop woke up late for (timers fire up to ~1 ms late) is followed
            # by a shorter one, so wall time follows the model on average; a longer stall is not caught up
            start = self._step_end if self._step_end is not None and t0 - self._step_end < CATCH_UP_S else t0
            self._step_end = start + tau / self.time_scale
            await asyncio.sleep(max(0.0, self._step_end - loop.time()))

    def submit(self, rank: Rank, req: SimRequest) -> None:
        rank.prompt_tokens += req.prompt_tokens
        rank.waiting.append(req)
        self._wake.set()

    def break_streams(self, rank: Rank) -> int:
        n = 0
        for r in rank.running + rank.waiting:
            if not r.done.done():
                r.done.set_result("break")
            n += 1
        rank.running.clear()
        rank.waiting.clear()
        return n

    def pick_rank(self) -> Rank:
        """The rank a request without a DP-rank header goes to (fewest running + waiting, as vLLM's own rule)."""
        return min(self.ranks, key=lambda rk: (4 * len(rk.waiting) + len(rk.running), rk.idx))

    def stats(self) -> dict:
        """Per-step load statistics over the steps so far (the simulator's definitions)."""
        G = len(self.ranks)
        if not self._hist:
            return {"steps": 0, "generation_tokens": [rk.generation_tokens for rk in self.ranks]}
        h = np.array(self._hist, dtype=np.float64)
        st = step_stats(h[:, 0], h[:, 1], h[:, 2], G)
        return {
            "steps": int(len(h)),
            "sim_time_s": float(h[:, 3].sum()),
            "tokens": int(h[:, 4].sum()),
            "throughput_tok_s": float(h[:, 4].sum() / h[:, 3].sum()),
            "avg_imbalance_maxmin": float(st["maxmin"].mean()),
            "avg_imbalance_gap": float(st["gap"].mean()),
            "idle_fraction": float(st["idle"].mean()),
            "balance_ratio": float(st["balance"].mean()),
            "requests_completed": int(sum(rk.requests_ok for rk in self.ranks)),
            "generation_tokens": [rk.generation_tokens for rk in self.ranks],
        }

    def reset_stats(self) -> None:
        self._hist.clear()
