"""The two collectives the testbed adds to vLLM's CPU communicator, checked against hand-computed results in two
real gloo processes of the testbed venv (no vLLM server needed). Opt-in: ``pytest -m vllm``."""

from __future__ import annotations

import socket
import subprocess
import textwrap

import pytest

from dpbalance.testbed.build import is_built
from dpbalance.testbed.paths import Testbed

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]

CHECK = textwrap.dedent("""
    import os
    import sys
    from types import SimpleNamespace
    import torch
    import torch.distributed as dist
    from vllm.distributed.device_communicators.cpu_communicator import CpuCommunicator as C

    rank, port = int(sys.argv[1]), int(sys.argv[2])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    me = SimpleNamespace(world_size=2, rank_in_group=rank, device_group=dist.group.WORLD)
    sizes = [3, 1]  # rank 0 holds 3 rows, rank 1 holds 1 (as when one DP rank has more tokens in a step)

    x = torch.arange(sizes[rank] * 4.0).reshape(sizes[rank], 4) + 100 * rank
    want = torch.tensor([[0., 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [100, 101, 102, 103]])
    assert torch.equal(C.all_gatherv(me, x, 0, sizes), want)
    a, b = C.all_gatherv(me, [x, 2 * x], 0, sizes)  # a list is gathered element-wise
    assert torch.equal(a, want) and torch.equal(b, 2 * want)
    xt = x.t().contiguous()  # gathered along dim 1
    assert torch.equal(C.all_gatherv(me, xt, 1, sizes), want.t())

    y = torch.arange(4.0).unsqueeze(1).repeat(1, 2) * (rank + 1)  # rows 0..3, times 1 on rank 0, 2 on rank 1
    r = C.reduce_scatterv(me, y, 0, sizes)
    mine = [[0., 0], [1, 1], [2, 2]] if rank == 0 else [[3., 3]]
    assert torch.equal(r, torch.tensor(mine) * 3), r  # the sum over ranks, this rank's rows only
    z = torch.arange(8.0).reshape(2, 4)
    assert torch.equal(C.reduce_scatterv(me, z, -1, None), (2 * z)[:, 2 * rank: 2 * rank + 2])  # equal parts
    assert torch.equal(z, torch.arange(8.0).reshape(2, 4))  # the input is left as it was
    dist.barrier()  # neither process leaves while the other still talks to it
    print("ok", rank, flush=True)
    os._exit(0)  # skip interpreter teardown: gloo's destructors sometimes abort there ("terminate called …")
""")


def test_patched_collectives_give_hand_computed_results():
    tb = Testbed.default()
    if not is_built(tb):
        pytest.skip("the real-vLLM testbed is not built: run `dpbalance testbed build`")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [str(tb.python), "-c", CHECK, str(r), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for r, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0 and f"ok {r}" in out, out[-3000:]
