"""Which requests of a trace a run replays, and which ones train the predictors: one rule for the command line,
sweeps and the router.

1. Filters: output length bounds and an arrival-time window.
2. The split: with ``train_split = f`` > 0 the first f of the filtered trace (the past) trains predictors and the
   rest is replayed; with ``train_split = 0`` the first ``max_requests`` are replayed and the rows after them
   train (none when the whole trace is replayed). Training rows are never replayed.
3. The replay is the first ``max_requests`` of what is left (all when unset).
4. Scaling it up for large clusters: ``resample = N`` draws N (prompt, output) rows with replacement from the
   replay (seeded; no arrival times: for saturated or Poisson arrivals); ``repeat = k`` plays the replay k times
   back to back, arrival pattern included (for replayed arrivals).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.config import setting
from ..core.workload import Workload
from .catalog import load_trace
from .loaders import TraceError


@dataclass(frozen=True)
class TraceSelection:
    trace: str = setting(
        "sample", "trace name (see `dpbalance trace list`), file path, or synthetic:... spec", flags=("--trace", "-t")
    )
    trace_dir: Path | None = setting(
        None,
        "directory with the trace files (default: $DPBALANCE_TRACE_DIR, else the per-user trace directory)",
        identity=False,
    )
    min_output: int | None = setting(None, "keep requests with output >= N tokens", min=1)
    max_output: int | None = setting(None, "keep requests with output <= N tokens", min=1)
    start_s: float | None = setting(None, "keep requests arriving at or after this second")
    end_s: float | None = setting(None, "keep requests arriving before this second")
    max_requests: int | None = setting(
        None,
        "replay the first N requests (after the filters); later rows train predictors",
        flags=("--max-requests", "-n"),
        min=1,
    )
    train_split: float = setting(
        0.0,
        "fraction of the filtered trace, from its start, that trains predictors instead of being replayed "
        "(0: the rows after --max-requests train)",
        min=0.0,
        max=0.9,
    )
    resample: int | None = setting(
        None, "replay N requests drawn with replacement from the selection (seeded by --seed; no arrival times)", min=1
    )
    repeat: int = setting(1, "play the selection k times back to back, arrival pattern included", min=1)

    def __post_init__(self):
        if not 0.0 <= self.train_split < 1.0:
            raise ValueError("train_split must be in [0, 1)")
        if self.resample is not None and self.repeat > 1:
            raise ValueError("use resample (no arrival times) or repeat (arrival pattern kept), not both")

    def identity(self) -> dict:
        """The fields that decide which requests are replayed (not where the files are)."""
        return {k: v for k, v in asdict(self).items() if k != "trace_dir"}

    def as_config(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def load(self, seed: int = 0, full: Workload | None = None) -> tuple[Workload, Workload | None]:
        """(replayed requests, training requests or None); ``full`` may pass the already-loaded trace."""
        w = (full if full is not None else load_trace(self.trace, self.trace_dir)).filter(
            min_output=self.min_output, max_output=self.max_output, start_s=self.start_s, end_s=self.end_s
        )
        if len(w) == 0:
            raise TraceError(self.trace, None, "no requests left after the filters")
        train = None
        if self.train_split > 0:
            train, w = w.split(self.train_split)
            if len(w) == 0:
                raise TraceError(self.trace, None, "no requests left to replay after the training split")
        if self.max_requests is not None and self.max_requests < len(w):
            later, w = w.head_tail(self.max_requests)
            if train is None:
                train = later
        if self.resample is not None:
            w = resample(w, self.resample, seed)
        elif self.repeat > 1:
            w = repeat(w, self.repeat)
        return w, (train if train is not None and len(train) else None)


def resample(w: Workload, n: int, seed: int) -> Workload:
    """n rows drawn jointly with replacement (prompt, output and key stay together); no timestamps."""
    idx = np.random.default_rng([seed, 7919]).integers(0, len(w), size=n)
    meta = {**w.meta, "resampled_from": len(w), "resample": n}
    return Workload.from_arrays(
        np.zeros(n), w.prompt[idx], w.output[idx], w.key[idx], name=w.name, has_timestamps=False, meta=meta
    )


def repeat(w: Workload, k: int) -> Workload:
    """The workload k times back to back; each copy starts one mean inter-arrival gap after the previous ends."""
    n = len(w)
    span = float(w.arrival[-1] - w.arrival[0]) if n > 1 else 0.0
    period = span + (span / (n - 1) if n > 1 else 1.0)
    arrival = np.concatenate([w.arrival + i * period for i in range(k)])
    meta = {**w.meta, "repeated": k}
    return Workload.from_arrays(
        arrival,
        np.tile(w.prompt, k),
        np.tile(w.output, k),
        np.tile(w.key, k),
        name=w.name,
        has_timestamps=w.has_timestamps,
        meta=meta,
    )
