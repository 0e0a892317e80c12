"""``dpbalance engine-sim``: one process emulating a data-parallel decode group behind N loopback ports.

Each rank speaks the vLLM OpenAI subset the router needs (``/v1/completions`` and ``/v1/chat/completions``,
streaming or not, ``max_tokens``, ``ignore_eos``; ``/tokenize``; ``/health``; ``/v1/models``; ``/metrics`` with
vLLM's metric names, including the ``vllm:inter_token_latency_seconds`` and ``vllm:iteration_tokens_total``
histograms as sum and count). All ranks share **one step barrier**: every step, each rank decodes one token for each of
its running requests and the step lasts ``step_time(loads of all ranks)`` — the simulator's model — divided by
``time_scale``, so imbalance costs real wall time exactly as in SPEC §2.2. Requests beyond a rank's slots
wait in that rank's queue (as in vLLM). The group keeps a simulated clock and the same per-step load
statistics as the simulator (``/admin/stats``), so a live run can be compared with a simulated one.

Tokenizer: whitespace-separated words (a prompt of s words is s tokens; a prompt given as a list of token ids
counts its length). Failure injection: ``/admin/fail?rank=r`` makes rank r refuse work and report unhealthy,
``/admin/break?rank=r`` cuts its running streams mid-way, ``/admin/revive?rank=r`` restores it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from ..core.metrics import step_stats
from ..sim.models import make_step_time

RANK_KEY = web.AppKey("rank", object)
CATCH_UP_S = 0.01  # a step that starts at most this late (wall seconds) is shortened by the delay


@dataclass
class _Req:
    """A request inside the emulator; tokens are handed to its HTTP handler through ``queue``."""

    rid: str
    prompt_tokens: int
    max_tokens: int
    stream: bool
    chat: bool
    model: str
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    generated: int = 0
    t_arrive: float = 0.0
    kv: dict | None = None  # kv_transfer_params the request arrived with (PD decode admission)


class Rank:
    """One DP rank: running requests (≤ slots) and its own waiting queue."""

    def __init__(self, idx: int, slots: int):
        self.idx = idx
        self.slots = slots
        self.running: list[_Req] = []
        self.waiting: list[_Req] = []
        self.healthy = True
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.requests_ok = 0
        self.itl_sum = 0.0  # wall seconds between a request's consecutive tokens (vllm:inter_token_latency_seconds)
        self.itl_count = 0
        self.iterations = 0  # steps this rank ran a batch in, and their tokens (vllm:iteration_tokens_total)
        self.iteration_tokens = 0

    def load(self) -> int:
        return sum(r.prompt_tokens + r.generated for r in self.running)


class EngineGroup:
    """The shared-barrier decode loop and the HTTP apps of every rank."""

    def __init__(self, ranks: int, slots: int = 72, time_scale: float = 1.0, step_time: str = "linear_max",
                 model: str = "dpbalance-sim", kv_tokens_per_slot: int = 16384):
        self.ranks = [Rank(i, slots) for i in range(ranks)]
        self.step_model = make_step_time(step_time, slots)
        self.time_scale = float(time_scale)
        self.model = model
        self.kv_capacity = slots * kv_tokens_per_slot
        self.sim_time = 0.0
        self.steps = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._hist: list[tuple[int, int, int, float, int]] = []  # max, min, sum, tau, tokens per step
        self.last_admit_step = -1
        self._last_emit: float | None = None  # loop time the previous step handed out its tokens
        self._step_end: float | None = None   # loop time the running step is due to end

    # ------------------------------------------------------------------ barrier loop
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

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for rk in self.ranks:  # admit from each rank's queue up to its slots
                while rk.waiting and len(rk.running) < rk.slots:
                    rk.running.append(rk.waiting.pop(0))
                    self.last_admit_step = self.steps
            if not any(rk.running for rk in self.ranks):
                self._wake.clear()
                await self._wake.wait()
                continue
            loads = np.array([rk.load() for rk in self.ranks], dtype=np.int64)
            tau = float(self.step_model(float(loads.max()), float(loads.mean())))
            t0 = loop.time()
            gap = None if self._last_emit is None else t0 - self._last_emit
            self._last_emit = t0
            tokens = 0
            for rk in self.ranks:
                done = []
                if rk.running:
                    rk.iterations += 1
                    rk.iteration_tokens += len(rk.running)
                for r in rk.running:
                    if r.generated and gap is not None:
                        rk.itl_sum += gap
                        rk.itl_count += 1
                    r.generated += 1
                    rk.generation_tokens += 1
                    tokens += 1
                    last = r.generated >= r.max_tokens
                    r.queue.put_nowait(("token", last))
                    if last:
                        done.append(r)
                for r in done:
                    rk.running.remove(r)
                    rk.requests_ok += 1
            self._hist.append((int(loads.max()), int(loads.min()), int(loads.sum()), tau, tokens))
            self.sim_time += tau
            self.steps += 1
            # steps end on a schedule: a step the loop woke up late for (timers fire up to ~1 ms late) is followed
            # by a shorter one, so wall time follows the model on average; a longer stall is not caught up
            start = self._step_end if self._step_end is not None and t0 - self._step_end < CATCH_UP_S else t0
            self._step_end = start + tau / self.time_scale
            await asyncio.sleep(max(0.0, self._step_end - loop.time()))

    def submit(self, rank: Rank, req: _Req) -> None:
        rank.prompt_tokens += req.prompt_tokens
        rank.waiting.append(req)
        self._wake.set()

    def break_streams(self, rank: Rank) -> int:
        n = 0
        for r in rank.running + rank.waiting:
            r.queue.put_nowait(("break", True))
            n += 1
        rank.running.clear()
        rank.waiting.clear()
        return n

    def stats(self) -> dict:
        """Per-step load statistics over the steps so far (the simulator's definitions)."""
        G = len(self.ranks)
        if not self._hist:
            return {"steps": 0}
        h = np.array(self._hist, dtype=np.float64)
        st = step_stats(h[:, 0], h[:, 1], h[:, 2], G)
        return {
            "steps": int(len(h)), "sim_time_s": float(h[:, 3].sum()), "tokens": int(h[:, 4].sum()),
            "throughput_tok_s": float(h[:, 4].sum() / h[:, 3].sum()),
            "avg_imbalance_maxmin": float(st["maxmin"].mean()), "avg_imbalance_gap": float(st["gap"].mean()),
            "idle_fraction": float(st["idle"].mean()), "balance_ratio": float(st["balance"].mean()),
            "requests_completed": int(sum(rk.requests_ok for rk in self.ranks)),
            "generation_tokens": [rk.generation_tokens for rk in self.ranks],
        }

    def reset_stats(self) -> None:
        self._hist.clear()

    # ------------------------------------------------------------------ HTTP
    def app(self, idx: int) -> web.Application:
        rank = self.ranks[idx]
        app = web.Application(client_max_size=64 * 1024**2)
        app[RANK_KEY] = rank

        async def health(_):
            return web.Response(status=200 if rank.healthy else 503, text="ok" if rank.healthy else "unhealthy")

        async def models(_):
            return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "dpbalance"}]})

        async def tokenize(request):
            body = await request.json()
            n = _count_tokens(body.get("prompt", body.get("messages", "")))
            return web.json_response({"count": n, "max_model_len": 10**9})

        async def metrics(_):
            lines = []
            lbl = f'{{engine="{idx}",model_name="{self.model}"}}'
            for name, kind, value in (
                ("vllm:num_requests_running", "gauge", len(rank.running)),
                ("vllm:num_requests_waiting", "gauge", len(rank.waiting)),
                ("vllm:kv_cache_usage_perc", "gauge", min(1.0, rank.load() / self.kv_capacity)),
                ("vllm:generation_tokens_total", "counter", rank.generation_tokens),
                ("vllm:prompt_tokens_total", "counter", rank.prompt_tokens),
                ("vllm:request_success_total", "counter", rank.requests_ok),
            ):
                lines += [f"# TYPE {name} {kind}", f"{name}{lbl} {value}"]
            for name, total, count in (("vllm:inter_token_latency_seconds", rank.itl_sum, rank.itl_count),
                                       ("vllm:iteration_tokens_total", rank.iteration_tokens, rank.iterations)):
                lines += [f"# TYPE {name} histogram", f'{name}_bucket{lbl[:-1]},le="+Inf"}} {count}',
                          f"{name}_sum{lbl} {total}", f"{name}_count{lbl} {count}"]
            return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

        async def completions(request, chat: bool = False):
            if not rank.healthy:
                return web.json_response({"error": {"message": "rank unavailable", "type": "server_error"}}, status=503)
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return web.json_response({"error": {"message": "invalid JSON", "type": "invalid_request_error"}}, status=400)
            prompt = body.get("messages") if chat else body.get("prompt")
            req = _Req(rid=f"cmpl-{uuid.uuid4().hex[:16]}", prompt_tokens=_count_tokens(prompt),
                       max_tokens=int(body.get("max_tokens") or 16), stream=bool(body.get("stream")), chat=chat,
                       model=body.get("model", self.model), t_arrive=time.time(),
                       kv=body.get("kv_transfer_params"))
            if body.get("kv_transfer_params", {}).get("do_remote_decode"):  # PD prefill probe: one token, hand back KV
                req.max_tokens = 1
            self.submit(rank, req)
            if req.stream:
                return await _stream(request, req, body)
            text = []
            while True:
                kind, last = await req.queue.get()
                if kind == "break":
                    return web.json_response({"error": {"message": "engine stream broken", "type": "server_error"}}, status=500)
                text.append(" tok")
                if last:
                    break
            return web.json_response(_full_response(req, "".join(text), body))

        app.router.add_get("/health", health)
        app.router.add_get("/v1/models", models)
        app.router.add_post("/tokenize", tokenize)
        app.router.add_get("/metrics", metrics)
        app.router.add_post("/v1/completions", completions)

        async def chat(r):
            return await completions(r, chat=True)

        async def admin(r):
            return await self._admin(r, r.match_info["action"])

        async def stats(_):
            return web.json_response(self.stats())

        async def reset(_):
            self.reset_stats()
            return web.json_response({"ok": True})

        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/admin/{action:fail|revive|break}", admin)
        app.router.add_get("/admin/stats", stats)
        app.router.add_post("/admin/reset_stats", reset)
        return app

    async def _admin(self, request, action: str):
        try:
            rank = self.ranks[int(request.query.get("rank", request.app[RANK_KEY].idx))]
        except (ValueError, IndexError):
            return web.json_response({"error": {"message": "bad rank"}}, status=400)
        if action == "fail":
            rank.healthy = False
            n = self.break_streams(rank)
            return web.json_response({"rank": rank.idx, "healthy": False, "broken_streams": n})
        if action == "break":
            return web.json_response({"rank": rank.idx, "broken_streams": self.break_streams(rank)})
        rank.healthy = True
        return web.json_response({"rank": rank.idx, "healthy": True})


def _count_tokens(prompt) -> int:
    if prompt is None:
        return 0
    if isinstance(prompt, str):
        return len(prompt.split())
    if isinstance(prompt, list):
        if prompt and isinstance(prompt[0], int):
            return len(prompt)
        if prompt and isinstance(prompt[0], dict):  # chat messages
            return sum(len(str(m.get("content", "")).split()) for m in prompt)
        return sum(_count_tokens(p) for p in prompt)
    return len(str(prompt).split())


def _chunk(req: _Req, text: str, finish: str | None, body: dict) -> dict:
    out = _chunk_body(req, text, finish)
    if (body.get("stream_options") or {}).get("continuous_usage_stats"):  # as vLLM: usage in every chunk
        out["usage"] = {"prompt_tokens": req.prompt_tokens, "completion_tokens": req.generated,
                        "total_tokens": req.prompt_tokens + req.generated}
    return out


def _chunk_body(req: _Req, text: str, finish: str | None) -> dict:
    if req.chat:
        choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish}
        obj = "text_completion"
    # "ts": emission time, so a client can measure what sits between the engine and itself (router overhead)
    return {"id": req.rid, "object": obj, "created": int(req.t_arrive), "model": req.model, "choices": [choice],
            "ts": time.time()}


def _full_response(req: _Req, text: str, body: dict) -> dict:
    usage = {"prompt_tokens": req.prompt_tokens, "completion_tokens": req.generated,
             "total_tokens": req.prompt_tokens + req.generated}
    if req.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        out = {"id": req.rid, "object": "chat.completion", "model": req.model, "choices": [choice], "usage": usage}
    else:
        out = {"id": req.rid, "object": "text_completion", "model": req.model,
               "choices": [{"index": 0, "text": text, "finish_reason": "length"}], "usage": usage}
    if body.get("kv_transfer_params"):
        out["kv_transfer_params"] = {"remote_engine_id": "sim", "remote_block_ids": [0], "do_remote_prefill": True}
    return out


async def _stream(request: web.Request, req: _Req, body: dict) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        while True:
            kind, last = await req.queue.get()
            if kind == "break":  # simulate a dying engine: cut the connection without [DONE]
                request.transport.close() if request.transport else None
                return resp
            await resp.write(b"data: " + json.dumps(_chunk(req, " tok", "length" if last else None, body)).encode() + b"\n\n")
            if last:
                break
        if body.get("stream_options", {}).get("include_usage"):
            u = {"id": req.rid, "object": "text_completion", "model": req.model, "choices": [],
                 "usage": {"prompt_tokens": req.prompt_tokens, "completion_tokens": req.generated,
                           "total_tokens": req.prompt_tokens + req.generated}}
            await resp.write(b"data: " + json.dumps(u).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        # client went away: drop the request from the engine (a closed connection is not a server error)
        for rk in (request.app[RANK_KEY],):
            if req in rk.running:
                rk.running.remove(req)
            if req in rk.waiting:
                rk.waiting.remove(req)
        if isinstance(exc, asyncio.CancelledError):
            raise
    return resp


async def start_group(ranks: int, base_port: int = 0, host: str = "127.0.0.1", **kw) -> tuple[EngineGroup, list[str], list[web.AppRunner]]:
    """Start the group's servers; ``base_port=0`` picks free ports. Returns (group, base URLs, runners)."""
    group = EngineGroup(ranks, **kw)
    group.start()
    urls, runners = [], []
    for i in range(ranks):
        runner = web.AppRunner(group.app(i), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, base_port + i if base_port else 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        urls.append(f"http://{host}:{port}")
        runners.append(runner)
    return group, urls, runners
