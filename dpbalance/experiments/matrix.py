"""The regime matrix: the default policy against every baseline, cell by cell, across traces, cluster sizes and loads.

Cells are traces × G × B × load. Loads are the trace's own arrival pattern replayed at 0.6 (moderate), 0.9 (heavy)
and 1.3 (overloaded) of the cluster's measured capacity — the saturated throughput of join-shortest-queue by
tokens on the same trace, G and B — and the saturated regime (a pool of 4·G waiting requests, topped up every
step). Traces without arrival times get Poisson arrivals at the same rates. Each cell replays
N = max(4·G·B, the trace's first 10,000 rows) requests: saturated and Poisson cells draw them with replacement
(two seeds; figures are means over seeds), replayed cells play the trace's arrival pattern back to back as often
as needed. Predictors train on the first 20 % of every trace, which is never replayed.

The core policies run on every cell; the rest of the baselines, the BR-0 presets and BR-H with each predictor on
a cross of the grid (G at B = 72 and B at G = 8); BF-IO's step MILP (slow) on a few saturated cells. The BF-IO
authors' own simulator is run beside ours by ``benchmarks/authors_reference.py`` (its code is not ours to ship);
its H0 figures join the saturated cells when their JSON file is given.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..policies import DEFAULT_POLICY
from ..sweep.grid import Cell
from ..sweep.runner import SweepReport, run_cells
from ..traces.selection import TraceSelection
from .paper import PAPER_B

TRACES = (
    "mooncake-conversation",
    "azure-conv-2023",
    "bfio-longbench",
    "vidur-arxiv",
    "mooncake-synthetic",
    "azure-code-2023",
    "bfio-arxiv",
    "bfio-burst",
)
#: the defaults were chosen on these traces' cells; the others are held out
TRAIN_TRACES = TRACES[:4]
G_LIST = (4, 8, 16, 32, 64)
B_LIST = (32, PAPER_B, 128, 256)
LOADS: tuple[tuple[str, float | None], ...] = (
    ("moderate", 0.6),
    ("heavy", 0.9),
    ("overloaded", 1.3),
    ("saturated", None),
)
SEEDS = 2
TRAIN_SPLIT = 0.2
CORE = ("round_robin", "jsq_count", "jsq_tokens", "vllm", "adp_balance", "br0:preset=bfio-code", DEFAULT_POLICY)
CROSS_EXTRA = (
    "random",
    "p2c",
    "fcfs",
    "vllm_kv",
    "sglang_total_tokens",
    "br0:preset=paper",
    "brh:predictor=oracle",
    "brh:predictor=survival",
    "brh:predictor=exact_match",
)
BFIO_CELLS = tuple((t, 8, PAPER_B) for t in ("mooncake-conversation", "bfio-longbench", "bfio-burst"))
#: the BF-IO authors' H0 as we implement it (the default is also measured against every one of ``BASELINES``)
H0 = "br0:preset=bfio-code"


def cross() -> set[tuple[int, int]]:
    return {(g, PAPER_B) for g in G_LIST} | {(8, b) for b in B_LIST}


@dataclass(frozen=True)
class Spec:
    """What to run: the grid (the full matrix by default) and the policies."""

    traces: tuple[str, ...] = TRACES
    grid: tuple[tuple[int, int], ...] = tuple((g, b) for g in G_LIST for b in B_LIST)
    loads: tuple[str, ...] = tuple(name for name, _ in LOADS)
    seeds: int = SEEDS
    core: tuple[str, ...] = CORE
    extra: tuple[str, ...] = CROSS_EXTRA
    bfio: bool = True

    def quick(self) -> Spec:
        return Spec(
            traces=("mooncake-conversation",),
            grid=((8, PAPER_B), (16, 32)),
            seeds=1,
            core=("jsq_tokens", "adp_balance", H0, DEFAULT_POLICY),
            extra=(),
            bfio=False,
        )


class Sources:
    """The replayable part of each trace (after the training rows), loaded once."""

    def __init__(self, trace_dir: str | None):
        self.trace_dir = trace_dir
        self._w: dict[str, Any] = {}

    def __call__(self, trace: str):
        if trace not in self._w:
            self._w[trace] = TraceSelection(
                trace=trace, train_split=TRAIN_SPLIT, trace_dir=Path(self.trace_dir) if self.trace_dir else None
            ).load()[0]
        return self._w[trace]


def size(G: int, B: int, rows: int) -> int:
    return int(min(65536, max(4 * G * B, min(rows, 10_000))))


def rate(load: str) -> float | None:
    return dict(LOADS)[load]


def cell(src, trace: str, G: int, B: int, load: str, policy: str, seed: int, capacity: float | None) -> Cell:
    w = src(trace)
    n = size(G, B, len(w))
    d: dict[str, Any] = {
        "policy": policy,
        "trace": trace,
        "train_split": TRAIN_SPLIT,
        "workers": G,
        "slots": B,
        "seed": seed,
        "tag": f"matrix|{trace}|{G}|{B}|{load}|{policy}|{seed}",
    }
    if load == "saturated" or not w.has_timestamps:
        d["resample"] = n
    elif n > len(w):
        d["repeat"] = math.ceil(n / len(w))
    else:
        d["max_requests"] = n
    if load == "saturated":
        d["arrival"] = "saturated"
    elif w.has_timestamps:
        demand = float(w.output.sum()) / float(w.arrival[-1] - w.arrival[0])  # output tokens per second at 1×
        d.update(arrival="replay", rate_scale=round(rate(load) * capacity / demand, 4))
    else:
        d.update(arrival="poisson", qps=round(rate(load) * capacity / float(w.output.mean()), 4))
    return Cell.from_dict(d)


def seeds_of(src, trace: str, load: str, spec: Spec) -> int:
    return spec.seeds if (load == "saturated" or not src(trace).has_timestamps) else 1


def capacity_cells(src, spec: Spec) -> list[Cell]:
    return [cell(src, t, G, B, "saturated", "jsq_tokens", 0, None) for t in spec.traces for G, B in spec.grid]


def all_cells(src, spec: Spec, caps: dict[tuple[str, int, int], float]) -> list[Cell]:
    out = []
    cx = cross()
    for t in spec.traces:
        for G, B in spec.grid:
            policies = list(spec.core) + (list(spec.extra) if (G, B) in cx else [])
            for load in spec.loads:
                for seed in range(seeds_of(src, t, load, spec)):
                    out += [cell(src, t, G, B, load, p, seed, caps[(t, G, B)]) for p in policies]
                    if spec.bfio and load == "saturated" and seed == 0 and (t, G, B) in BFIO_CELLS:
                        out.append(cell(src, t, G, B, load, "bfio", seed, None))
    return out


def run_matrix(
    out_dir: Path,
    *,
    spec: Spec = Spec(),
    trace_dir: str | None = None,
    processes: int | None = None,
    authors: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    found: set[str] | None = None,
) -> tuple[SweepReport, dict, dict]:
    """Run every cell (cached in ``out_dir/cells``) and return (report, capacities, the authors' H0 figures)."""
    out_dir = Path(out_dir)
    if found is not None:
        spec = Spec(**{**spec.__dict__, "traces": tuple(t for t in spec.traces if t in found)})
    src = Sources(trace_dir)
    cb = (lambda phase: lambda d, n, last: progress(phase, d, n)) if progress else (lambda phase: None)
    rep = run_cells(
        capacity_cells(src, spec),
        out_dir,
        processes=processes,
        trace_dir=trace_dir,
        write_tables=False,
        progress=cb("capacity"),
    )
    caps = {(o.cell.trace.trace, o.cell.sim.workers, o.cell.sim.slots): o.result.throughput_tok_s for o in rep.outcomes}
    t0 = time.perf_counter()
    rep = run_cells(all_cells(src, spec, caps), out_dir, processes=processes, trace_dir=trace_dir, progress=cb("cells"))
    rep.wall_s = time.perf_counter() - t0
    return rep, caps, load_authors(authors)


def load_authors(path: Path | None) -> dict[tuple[str, int, int, int], dict]:
    """The BF-IO authors' H0 records written by ``benchmarks/authors_reference.py --matrix`` (none without a file),
    keyed by (trace, G, B, seed)."""
    if path is None or not Path(path).is_file():
        return {}
    out = {}
    for rec in json.loads(Path(path).read_text()):
        out[(rec["trace"], int(rec["workers"]), int(rec["slots"]), int(rec.get("seed", 0)))] = rec
    return out
