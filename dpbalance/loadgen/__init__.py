"""``dpbalance loadgen``: replay a trace as real streaming requests against an OpenAI-compatible endpoint."""

from .client import LoadgenConfig, Outcome, prompt_ids, run, schedule, summarize

__all__ = ["LoadgenConfig", "Outcome", "prompt_ids", "run", "schedule", "summarize"]
