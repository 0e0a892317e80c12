"""Make the testbed's model: a tiny random-weight Mixtral (mixture of experts) with a word-level tokenizer.

Run it with the testbed venv's interpreter (it needs torch, transformers and tokenizers, which dpbalance does not):
``python make_model.py OUT_DIR``. Nothing is downloaded: the tokenizer is trained on generated words ``w0 w1 …`` and
the weights are random (seeded), so answers are meaningless but token counts, timings and the data-parallel barrier
are real. Why mixture of experts: vLLM's data-parallel ranks of a dense model run independently; those of an MoE
model exchange tokens in every MoE layer, so they step in lock-step — the barrier dpbalance balances for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write the model and tokenizer to")
    ap.add_argument("--vocab", type=int, default=1024, help="vocabulary size (generated words fill it up)")
    ap.add_argument("--hidden", type=int, default=1024, help="hidden size")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers")
    ap.add_argument("--experts", type=int, default=4, help="experts per MoE layer")
    ap.add_argument("--top-k", type=int, default=2, help="experts each token uses")
    ap.add_argument("--expert-size", type=int, default=256, help="intermediate size of each expert")
    ap.add_argument("--head-dim", type=int, default=64, help="attention head size (vLLM's CPU kernels need 64 or more)")
    ap.add_argument("--kv-heads", type=int, default=4, help="key/value heads")
    ap.add_argument("--max-len", type=int, default=4096, help="max position embeddings")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.hidden % a.head_dim:
        ap.error("--hidden must be a multiple of --head-dim")
    heads = a.hidden // a.head_dim
    if heads % a.kv_heads:
        ap.error(f"{heads} attention heads are not a multiple of --kv-heads {a.kv_heads}")

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(a.vocab - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(vocab_size=a.vocab, special_tokens=SPECIALS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(a.out)

    cfg = MixtralConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=a.expert_size,
        num_hidden_layers=a.layers,
        num_attention_heads=heads,
        num_key_value_heads=a.kv_heads,
        head_dim=a.head_dim,
        num_local_experts=a.experts,
        num_experts_per_tok=a.top_k,
        max_position_embeddings=a.max_len,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = MixtralForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(a.out)
    n = sum(p.numel() for p in model.parameters())
    info = {"parameters": n, **{k: v for k, v in vars(a).items() if k != "out"}}
    (a.out / "DONE").write_text(json.dumps(info, indent=1) + "\n")
    print(
        f"MoE model: {n / 1e6:.1f}M parameters, {a.layers} layers, {a.experts} experts (top-{a.top_k}), "
        f"hidden {a.hidden}, vocab {len(fast)}; written to {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
