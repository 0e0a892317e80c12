"""The testbed's weight dtype: what vLLM's CPU kernels run fast on this CPU, and the KV space that keeps the
same number of KV tokens per rank at either width."""

from __future__ import annotations

from pathlib import Path

DTYPES = ("auto", "bfloat16", "float32")
KV_SPACE_GIB = {"bfloat16": 1, "float32": 2}  # the same 262,144 KV tokens per rank at either width


def auto_dtype(cpuinfo: str | None = None) -> str:
    """The weights' dtype for this CPU: bfloat16 where vLLM's CPU kernels run it natively (x86 with AVX-512, or not
    x86), else float32 — on AVX2-only x86 vLLM computes bfloat16 through conversions, and the testbed's prefill
    then runs ~2.6× slower than in float32 (a 2,048-token prompt: 5.8 s against 2.3 s, measured)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "bfloat16"
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags is None or "sse2" not in flags:  # not x86 (or unknown): vLLM's bfloat16 path
        return "bfloat16"
    return "bfloat16" if "avx512f" in flags else "float32"
