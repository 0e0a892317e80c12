"""Where each rank is, whether it is in rotation, and what it can hold.

- ``RankTarget``: the base URL and extra headers of one DP rank. One server per rank (``--decode``), or one
  ``vllm serve --data-parallel-size N`` endpoint (``--dp-endpoint``) where every rank shares the URL and a
  request is pinned with vLLM's ``X-data-parallel-rank: g`` header (an integer in ``[0, N)``; vLLM answers 400
  for a rank out of range and ignores a value that is not an integer).
- ``Breaker``: per-rank circuit breaker. Connection errors, timeouts, 5xx answers and failed health checks
  count; ``cb_failure_threshold`` consecutive ones open it (the rank takes no new requests); after
  ``cb_timeout_s`` the next health check is the half-open probe: success closes it, failure re-opens it. A
  request a rank completes (or rejects with a 4xx: the rank is working) resets the count.
- ``HealthChecker``: every ``health_interval_s`` all distinct rank URLs are checked concurrently.
- ``discover``: slots per rank (vLLM's ``max_num_seqs``) and the DP size from a rank's
  ``/server_info?config_format=json`` when they are not given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from .config import RouterConfig

log = logging.getLogger("dpbalance.router")
DP_RANK_HEADER = "X-data-parallel-rank"
CLOSED, OPEN, HALF_OPEN = 0, 1, 2
_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}


class StartupError(ValueError):
    """The router cannot start with this configuration (message says what to give)."""


@dataclass(frozen=True)
class RankTarget:
    url: str
    headers: dict = field(default_factory=dict)


def make_targets(cfg: RouterConfig, G: int) -> list[RankTarget]:
    if cfg.dp_endpoint:
        return [RankTarget(cfg.dp_endpoint, {DP_RANK_HEADER: str(g)}) for g in range(G)]
    return [RankTarget(u) for u in cfg.decode]


class Breaker:
    def __init__(self, G: int, threshold: int, timeout_s: float, on_change: Callable[[int, bool], None], metrics=None):
        self.state = [CLOSED] * G
        self.fails = [0] * G
        self.opened_at = [0.0] * G
        self.threshold, self.timeout_s = threshold, timeout_s
        self.on_change, self.metrics = on_change, metrics

    def in_rotation(self) -> np.ndarray:
        return np.array([s == CLOSED for s in self.state], dtype=bool)

    def _set(self, g: int, st: int) -> None:
        if self.state[g] == st:
            return
        self.state[g] = st
        if st == OPEN:
            self.opened_at[g] = time.monotonic()
        if self.metrics is not None:
            self.metrics.cb_transitions.labels(str(g), _NAMES[st]).inc()
        log.warning("rank %d breaker %s", g, _NAMES[st])
        self.on_change(g, st == CLOSED)

    def failure(self, g: int, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.rank_failures.labels(str(g), kind).inc()
        self.fails[g] += 1
        if self.state[g] == HALF_OPEN or self.fails[g] >= self.threshold:
            self._set(g, OPEN)

    def success(self, g: int) -> None:
        self.fails[g] = 0
        if self.state[g] == HALF_OPEN:
            self._set(g, CLOSED)

    def health(self, g: int, ok: bool) -> None:
        if not ok:
            self.failure(g, "health")
            return
        if self.state[g] == OPEN and time.monotonic() - self.opened_at[g] >= self.timeout_s:
            self.state[g] = HALF_OPEN  # the probe is this very check: it succeeded
            self.fails[g] = 0
            self._set(g, CLOSED)


class HealthChecker:
    def __init__(
        self,
        targets: list[RankTarget],
        breaker: Breaker,
        session: aiohttp.ClientSession,
        interval_s: float,
        timeout_s: float,
    ):
        self.targets, self.breaker, self.session = targets, breaker, session
        self.interval_s, self.timeout_s = interval_s, timeout_s

    async def _ok(self, url: str) -> bool:
        try:
            async with self.session.get(url + "/health", timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as r:
                await r.read()
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def check_once(self) -> None:
        urls = sorted({t.url for t in self.targets})
        res = dict(zip(urls, await asyncio.gather(*(self._ok(u) for u in urls))))
        for g, t in enumerate(self.targets):
            self.breaker.health(g, res[t.url])

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # pragma: no cover - a bug here must not stop health checking
                log.exception("health check round failed")
            await asyncio.sleep(self.interval_s)


async def _server_info(session: aiohttp.ClientSession, url: str) -> dict | None:
    try:
        async with session.get(
            url + "/server_info", params={"config_format": "json"}, timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            if r.status != 200:
                return None
            d = await r.json(content_type=None)
            cfg = d.get("vllm_config") if isinstance(d, dict) else None
            return cfg if isinstance(cfg, dict) else None
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError):
        return None


def _int_at(d: dict, *path) -> int | None:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None


async def discover(cfg: RouterConfig, session: aiohttp.ClientSession) -> tuple[int, int]:
    """(ranks G, slots per rank), asking the ranks for what the config leaves out."""
    urls = [cfg.dp_endpoint] if cfg.dp_endpoint else list(cfg.decode)
    G = len(cfg.decode) if cfg.decode else cfg.dp_size
    slots = cfg.slots
    if slots is not None and G is not None:
        return G, slots
    info = None
    for u in urls:
        info = await _server_info(session, u)
        if info is not None:
            break
    if slots is None:
        slots = _int_at(info or {}, "scheduler_config", "max_num_seqs")
        if slots is None:
            raise StartupError(
                f"could not learn the ranks' max_num_seqs from {urls[0]}/server_info?config_format=json "
                "(vLLM serves it when started with VLLM_SERVER_DEV_MODE=1): give --slots N"
            )
    if G is None:
        G = _int_at(info or {}, "parallel_config", "data_parallel_size")
        if G is None:
            raise StartupError(
                f"could not learn the data-parallel size of {cfg.dp_endpoint} from its /server_info: give --dp-size N"
            )
    return G, slots
