"""Leader election among picker replicas, as the Endpoint Picker protocol has it: followers report NOT_SERVING
for readiness, so the proxy (whose health checks read it) sends every request to the leader, and the pool has
one picture of the load, one pool and one policy.

No lease store is needed: every replica is given the others' gRPC addresses (``--peers``) and checks them every
``interval`` seconds on the health service ``dpbalance.eligible`` (SERVING while that replica sees a rank in
rotation). The eligible replica with the lowest address leads. When it goes, the next one leads after the
proxy's health checks notice (seconds); it sees what the old leader left running on the ranks through their
``/metrics`` (``rankload``) until those requests end.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger("dpbalance.gateway")
ELIGIBLE = "dpbalance.eligible"


def _key(addr: str) -> tuple:
    host, _, port = addr.rpartition(":")
    return (host, int(port) if port.isdigit() else 0)


class Election:
    def __init__(self, me: str, peers: tuple[str, ...], interval: float = 0.5):
        self.me, self.peers, self.interval = me, tuple(p for p in peers if p != me), interval
        self.leader = not self.peers  # alone: always the leader
        self._channels = {p: grpc.aio.insecure_channel(p) for p in self.peers}

    async def _eligible(self, peer: str) -> bool:
        stub = health_pb2_grpc.HealthStub(self._channels[peer])
        try:
            r = await stub.Check(health_pb2.HealthCheckRequest(service=ELIGIBLE), timeout=self.interval)
            return r.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            return False

    async def check_once(self, eligible: bool) -> bool:
        live = await asyncio.gather(*(self._eligible(p) for p in self.peers))
        lower = [p for p, ok in zip(self.peers, live) if ok and _key(p) < _key(self.me)]
        lead = eligible and not lower
        if lead != self.leader:
            log.warning("picker %s is now %s", self.me, "the leader" if lead else f"a follower of {min(lower)}")
        self.leader = lead
        return lead

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
