"""prefix_affinity: each waiting request, oldest first, to the free worker holding its longest cached prefix;
ties (and no cache information at all) go to the lowest token load, then the lowest index. The pure-locality
extreme: it ignores load whenever any worker holds more of the prompt than another."""

from __future__ import annotations

from ..base import NoOptions, PolicyContext
from .common import PrefixFifo, Scratch, pick


class PrefixAffinityPolicy(PrefixFifo):
    def __init__(self, cfg: NoOptions, ctx: PolicyContext):
        pass

    def choose(self, sc: Scratch, i: int, s: float) -> int:
        return pick(sc.free, -sc.hit[i], sc.loads)
