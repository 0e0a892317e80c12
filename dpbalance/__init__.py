"""dpbalance: load balancing for barrier-synchronized data-parallel LLM decoding."""

__version__ = "0.1.0"
