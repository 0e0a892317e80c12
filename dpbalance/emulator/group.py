"""``dpbalance engine-sim``: one process emulating a data-parallel decode group, one port per rank (and
optionally one DP endpoint port where vLLM's ``X-data-parallel-rank`` header selects the rank).

All ranks share **one step barrier** and run the simulator's engine model (``dpbalance.engine``): every step,
each rank decodes one token for each of its running requests (and, with ``--prefill``, computes prompt chunks
under its token budget, serving cached prefixes with ``--prefix-cache``), and the step lasts as long as the
slowest rank's work under the step-time model, divided by ``time_scale``, so imbalance costs real wall time.
The two cannot drift: the emulator and the simulator step the same ``Engine``. A step's tokens come out when
the step ends (a first token after its prompt's last prefill step), as an engine's do. Requests beyond a rank's slots
wait in that rank's queue (vLLM's ``max_num_seqs``). The group keeps a simulated clock and the simulator's
per-step load statistics (``/admin/stats``), so a live run can be compared with a simulated one. A paused
rank's tokens are held back (its clients see a stall) and delivered when it resumes.

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
from ..core.constants import DEFAULT_SLOTS
from ..core.metrics import step_stats
from ..engine.config import EngineConfig
from ..engine.core import Engine
from ..engine.hashing import VLLM_BLOCK
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
    slots: int = setting(
        DEFAULT_SLOTS, "Running sequences per rank (vLLM's max_num_seqs); more wait in its queue.", min=1
    )
    time_scale: float = setting(1.0, "Run k× faster than the step-time model.", min=1e-3)
    step_time: str = setting(
        "linear_max", "Step-time model spec, or a file written by `dpbalance calibrate` (as in simulate)."
    )
    model: str = setting("dpbalance-sim", "Served model name (others get 404).")
    host: str = setting("127.0.0.1", "Bind address.")
    fail_rank: int | None = setting(None, "Make this rank unhealthy after --fail-after seconds.", min=0)
    fail_after: float = setting(10.0, "Seconds before --fail-rank fails.", min=0.0)
    engine: EngineConfig = setting(
        default_factory=EngineConfig,
        doc="the engine model of every rank (prefill, prefix cache, KV capacity), as in simulate",
        flatten=True,
    )

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
    hashes: list[int] | None = None  # the prompt's block hashes (prefix cache on)
    num: int = -1  # the engine model's id of the request, given at submit


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
        """KV tokens of its running requests (prompt and output so far)."""
        return sum(r.prompt_tokens + r.generated for r in self.running)


class EngineGroup:
    """The shared-barrier step loop over the engine model."""

    def __init__(
        self,
        ranks: int,
        slots: int = DEFAULT_SLOTS,
        time_scale: float = 1.0,
        step_time: str = "linear_max",
        model: str = "dpbalance-sim",
        kv_tokens_per_slot: int = 16384,
        engine: EngineConfig | None = None,
    ):
        self.ranks = [Rank(i, slots) for i in range(ranks)]
        self.slots = slots
        self.step_model = make_step_time(step_time, slots)
        self.engine_cfg = engine or EngineConfig()
        self.engine = Engine(ranks, self.engine_cfg, self.step_model, slots=slots, block_size=VLLM_BLOCK)
        self.block_size = self.engine.bs
        self.time_scale = float(time_scale)
        self.model = model
        cap = self.engine_cfg.capacity
        self.kv_capacity = cap if cap is not None else slots * kv_tokens_per_slot  # for vllm:kv_cache_usage_perc
        self.sim_time = 0.0
        self.steps = 0
        self._ids = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._hist: list[tuple[int, int, int, float, int]] = []  # max, min, sum, tau, tokens per step
        self._last_emit: float | None = None  # loop time the previous step handed out its tokens
        self._step_end: float | None = None  # loop time the running step is due to end

    @property
    def wants_hashes(self) -> bool:
        """True when requests should carry their prompt's block hashes (the prefix cache is modelled)."""
        return self.engine_cfg.prefix_cache

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

    def _admit(self) -> None:
        """Each rank's queue enters the engine up to its slots."""
        e = self.engine
        for rk in self.ranks:
            while rk.waiting and len(rk.running) < rk.slots:
                r = rk.waiting.pop(0)
                rk.running.append(r)
                e.admit_one(r.num, rk.idx, r.prompt_tokens, r.hashes)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        e = self.engine
        while True:
            self._admit()
            if not any(rk.running and not rk.paused for rk in self.ranks):
                self._wake.clear()
                if any(rk.running for rk in self.ranks):  # only paused ranks hold work: poll
                    await asyncio.sleep(0.01)
                else:
                    await self._wake.wait()
                continue
            loads = e.dec_load.copy()
            out = e.step()
            tau = out.tau
            # steps end on a schedule: a step the loop woke up late for (timers fire up to ~1 ms late) is followed
            # by a shorter one, so wall time follows the model on average; a longer stall is not caught up
            t0 = loop.time()
            start = self._step_end if self._step_end is not None and t0 - self._step_end < CATCH_UP_S else t0
            self._step_end = start + tau / self.time_scale
            await asyncio.sleep(max(0.0, self._step_end - loop.time()))
            # the step's tokens come out when it ends, as an engine's do (a first token after its prefill step)
            t1 = loop.time()
            gap = None if self._last_emit is None else t1 - self._last_emit
            self._last_emit = t1
            tokens = 0
            for rk in self.ranks:
                if rk.running:
                    rk.iterations += 1
                    rk.iteration_tokens += int(out.generated[rk.idx] + out.prefill_tokens[rk.idx])
                if not rk.paused:
                    tokens += self._deliver(rk, gap)
            self._hist.append((int(loads.max()), int(loads.min()), int(loads.sum()), tau, tokens))
            self.sim_time += tau
            self.steps += 1

    def _deliver(self, rk: Rank, gap: float | None) -> int:
        """Hand each request of the rank the tokens the engine sampled for it; end the finished and the gone."""
        e = self.engine
        done = []
        tokens = 0
        for r in rk.running:
            if r.gone is not None and r.gone():  # the client went away: abort, as vLLM does
                done.append(r)
                if not r.done.done():
                    r.done.set_result("gone")
                continue
            n = min(e.generated(r.num), r.max_tokens)
            if n > r.generated and r.generated and gap is not None:
                rk.itl_sum += gap
                rk.itl_count += 1
            while r.generated < n:
                r.generated += 1
                tokens += 1
                last = r.generated >= r.max_tokens
                if r.emit is not None:
                    r.emit(r, last)
            if r.generated >= r.max_tokens:
                done.append(r)
                rk.requests_ok += 1
                if not r.done.done():
                    r.done.set_result("ok")
        rk.generation_tokens += tokens
        for r in done:
            rk.running.remove(r)
        if done:
            e.finish([r.num for r in done])
        return tokens

    def submit(self, rank: Rank, req: SimRequest) -> None:
        rank.prompt_tokens += req.prompt_tokens
        req.num = self._ids
        self._ids += 1
        rank.waiting.append(req)
        self._wake.set()

    def forget(self, rank: Rank, req: SimRequest) -> None:
        """The request left (answered, aborted or cut): the rank and the engine let it go."""
        if req in rank.running:
            rank.running.remove(req)
            self.engine.finish([req.num])
        elif req in rank.waiting:
            rank.waiting.remove(req)

    def cache_stats(self, rank: Rank) -> tuple[int, int]:
        """(prompt tokens looked up, of which the rank's prefix cache served) so far."""
        return self.engine.prompt_tokens[rank.idx], self.engine.hit_tokens[rank.idx]

    def break_streams(self, rank: Rank) -> int:
        n = 0
        for r in rank.running + rank.waiting:
            if not r.done.done():
                r.done.set_result("break")
            n += 1
        self.engine.finish([r.num for r in rank.running])
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
