"""The engine model: what one data-parallel rank does in a step and how long the step takes at the barrier.

Shared by the simulator (virtual clock, many ranks) and the emulator (real time, vLLM's HTTP API), so the two
cannot drift."""
