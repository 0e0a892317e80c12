"""What a vLLM rank says about itself in its Prometheus ``/metrics``: the parser the router and the gateway share,
and the cache geometry (KV block size, KV tokens) the router's prefix index takes when none is given."""

from __future__ import annotations

import re

import aiohttp

_LINE = re.compile(r"^(vllm:[a-z_]+)(?:\{([^}]*)\})?\s+(\S+)", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """``{engine label or "": {metric: value}}`` for the vLLM metrics the picker reads (labels other than
    ``engine`` summed over; ``cache_config_info``'s labels kept as ``kv_blocks`` and ``block_size``)."""
    out: dict[str, dict[str, float]] = {}
    for m in _LINE.finditer(text):
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        lbl = dict(_LABEL.findall(labels))
        eng = out.setdefault(lbl.get("engine", ""), {})
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "vllm:cache_config_info":
            try:
                eng["kv_blocks"] = float(lbl["num_gpu_blocks"])
                eng["block_size"] = float(lbl["block_size"])
            except (KeyError, ValueError):
                pass
            continue
        eng[name] = eng.get(name, 0.0) + v
    return out


async def cache_geometry(session: aiohttp.ClientSession, urls, timeout_s: float = 5.0) -> tuple[int, int] | None:
    """(KV block size, KV tokens per rank) from the first of ``urls`` whose ``/metrics`` has vLLM's
    ``cache_config_info``; None when none has (engine-sim, another engine, or no rank answers)."""
    for u in urls:
        try:
            async with session.get(u + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                if r.status != 200:
                    continue
                text = await r.text()
        except (TimeoutError, aiohttp.ClientError, OSError, UnicodeDecodeError):
            continue
        for eng in parse_metrics(text).values():
            if eng.get("block_size", 0) >= 1 and eng.get("kv_blocks", 0) >= 1:
                return int(eng["block_size"]), int(eng["kv_blocks"] * eng["block_size"])
    return None
