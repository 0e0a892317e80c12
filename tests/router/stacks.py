"""Test stacks: engine-sim ranks and/or strict fake vLLM ranks behind a router, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp

from dpbalance.emulator import EngineGroup, start_group
from dpbalance.router.server import Router, RouterConfig, start_router
from tests.router.fake_vllm import FakeRank


@dataclass
class Stack:
    router: Router
    url: str
    fakes: list[FakeRank] = field(default_factory=list)
    group: EngineGroup | None = None
    sim_urls: list[str] = field(default_factory=list)

    def metric(self, text: str, name: str, **labels) -> float:
        """The value of one sample in a /metrics text."""
        want = {f'{k}="{v}"' for k, v in labels.items()}
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            metric, _, lbl = head.partition("{")
            if metric == name and set(filter(None, lbl.rstrip("}").split(","))) == want:
                return float(value)
        return 0.0

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until the router holds no slot and no request waits, and every rank has finished its work."""
        for _ in range(int(timeout / 0.05)):
            busy = self.router.dispatcher.active or len(self.router.dispatcher.pool) or self.router.inflight
            busy = busy or any(f.running for f in self.fakes) or (self.group is not None and self.group.running())
            if not busy:
                return
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def routed(fakes: int = 0, sims: int = 0, sim_kw: dict | None = None, fake_kw: dict | None = None, **rcfg):
    fk = [FakeRank(**(fake_kw or {})) for _ in range(fakes)]
    furls = [await f.start() for f in fk]
    group, surls = None, []
    if sims:
        group, surls, _ = await start_group(sims, **{"slots": 8, "time_scale": 20.0, **(sim_kw or {})})
    rcfg.setdefault("slots", 8)
    rcfg.setdefault("health_interval_s", 0.2)
    rcfg.setdefault("tokenize", "estimate")
    router, url, runner = await start_router(RouterConfig(decode=tuple(furls + surls), **rcfg))
    try:
        yield Stack(router, url, fk, group, surls)
    finally:
        await runner.cleanup()
        if group is not None:
            await group.server.close()
            await group.stop()
        for f in fk:
            await f.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


async def post(s: aiohttp.ClientSession, url: str, body=None, data: bytes | None = None, headers=None):
    """(status, parsed JSON or text) of one request."""
    async with s.post(url, json=body if data is None else None, data=data, headers=headers) as r:
        text = await r.text()
        try:
            import json

            return r.status, json.loads(text)
        except ValueError:
            return r.status, text
