"""The ranks of one deployment as calibrate sees them: one client per rank, the tokenizer, and ``/metrics``."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp

from .config import CalibrateConfig
from .engine_api import EngineError, RankClient, Tokenizer, get_json


class Deployment:
    """The ranks of one deployment, probed once."""

    def __init__(self, cfg: CalibrateConfig, session: aiohttp.ClientSession):
        self.cfg, self.session = cfg, session
        self.headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.bases = list(cfg.worker_urls) if cfg.worker_urls else [cfg.dp_endpoint.rstrip("/")] * cfg.ranks
        self.clients: list[RankClient] = []
        self.tokenizer: Tokenizer | None = None
        self.version: str | None = None
        self.has_metrics = False

    async def connect(self, rng: random.Random) -> None:
        cfg = self.cfg
        model = cfg.model
        for base in dict.fromkeys(self.bases):
            status, data = await get_json(self.session, "GET", base + "/v1/models", self.headers)
            if status != 200 or not isinstance(data, dict) or not data.get("data"):
                raise EngineError(
                    f"{base}/v1/models answered HTTP {status}: is this an OpenAI-compatible server (vLLM, engine-sim)?"
                )
            if model is None:
                model = str(data["data"][0].get("id"))
        status, data = await get_json(self.session, "GET", self.bases[0] + "/version", self.headers)
        self.version = str(data.get("version")) if status == 200 and isinstance(data, dict) else None
        for g, base in enumerate(self.bases):
            hdr = dict(self.headers)
            if cfg.dp_endpoint:
                hdr[cfg.rank_header] = str(g)
            self.clients.append(RankClient(g, base, hdr, str(g) if cfg.dp_endpoint else None, model))
        self.tokenizer = Tokenizer(self.bases[0] + "/tokenize", self.headers, model)
        await self.tokenizer.probe(self.session, rng)
        self.has_metrics = all(m is not None and "running" in m for m in await self.scrape())

    @property
    def model(self) -> str:
        return self.clients[0].model

    async def scrape(self) -> list[dict[str, float] | None]:
        return list(await asyncio.gather(*(c.metrics(self.session) for c in self.clients)))

    async def scrape_at(self) -> tuple[float, list[dict[str, float] | None]]:
        t0 = time.perf_counter()
        m = await self.scrape()
        return (t0 + time.perf_counter()) / 2, m

    async def drain(self) -> bool:
        """Wait until no rank runs or queues a request (True), or ``settle_s`` passes (False)."""
        deadline = time.perf_counter() + self.cfg.settle_s
        while time.perf_counter() < deadline:
            if not self.has_metrics:
                await asyncio.sleep(min(0.2, self.cfg.settle_s))
                return True
            ms = await self.scrape()
            if all(m is not None and m.get("running", 0) == 0 and m.get("waiting", 0) == 0 for m in ms):
                return True
            await asyncio.sleep(0.02)
        return False
