"""Where a CPU decode step of the 135M model goes: one step of B rows over a 100-token cache, timed
piece by piece (the README's breakdown under "Throughput").

    python bench/decode_step.py            # writes bench/results/decode_step.json

Rows: the whole step with transformers' SDPA and its DynamicCache (the previous loop), with
mathlite's decode attention on its two-level cache (as the engine runs it), with attention replaced by nothing (what
is left: linear layers, cache, norms), without a cache at all; then the linear layers, the MLPs, the
norms and the LM head alone, and the top-p + log-prob step (`sampling._sample_rows` + logsumexp).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from mathlite import files, models, sampling

OUT = Path(__file__).resolve().parent / "results" / "decode_step.json"


def _ms(f, n: int = 8) -> float:
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return round((time.perf_counter() - t) / n * 1e3, 1)


def main() -> None:
    from transformers import AttentionInterface, DynamicCache
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    torch.set_num_threads(2)
    sampling._register_decode_attention()
    AttentionInterface.register("none", lambda module, q, k, v, mask, **kw: (q.transpose(1, 2), None))
    AttentionMaskInterface.register("none", sdpa_mask)
    model = models.load_model(models.OFFLINE_MODEL, quant="none").eval()
    B, L = 144, 100
    out: dict = {"rows": B, "cached_tokens": L, "threads": 2, "machine": files.machine(), "ms": {}}
    with torch.inference_mode():
        ids = torch.randint(0, 1000, (B, L))
        nxt, pos = torch.randint(0, 1000, (B, 1)), torch.full((B, 1), L)
        am = torch.ones(B, L + 1, dtype=torch.long)
        am[0, :5] = 0
        for impl in ("sdpa", sampling._DECODE_ATTENTION, "none"):
            model.config._attn_implementation = "sdpa"
            cache = DynamicCache(config=model.config)
            kind = "two-level cache" if impl == sampling._DECODE_ATTENTION else "DynamicCache"
            if kind == "two-level cache":  # its cache: the two-level layers, as the engine makes them
                cache.layers = [sampling.new_two_level_layer() for _ in range(model.config.num_hidden_layers)]
                cache.layer_class_to_replicate = None
            model(input_ids=ids, use_cache=True, cache=cache, logits_to_keep=1)
            model.config._attn_implementation = impl

            def step():
                n = cache.get_seq_length()
                mask = torch.cat([am, am.new_ones((B, n - L))], dim=-1)
                model(input_ids=nxt, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
                if kind == "DynamicCache":  # the two-level cache keeps its tokens (and folds every 16, as in the engine)
                    cache.crop(-1)

            out["ms"][f"step, attention {impl}, {kind}"] = _ms(step)
        model.config._attn_implementation = "none"
        out["ms"]["step, no attention, no cache"] = _ms(lambda: model(input_ids=nxt, use_cache=False, logits_to_keep=1))
        model.config._attn_implementation = "sdpa"
        x = torch.randn(B, 1, 576, dtype=torch.bfloat16)
        layer = model.model.layers[0]
        a = layer.self_attn
        out["ms"]["30 x q,k,v,o projections"] = _ms(lambda: [(a.q_proj(x), a.k_proj(x), a.v_proj(x), a.o_proj(x)) for _ in range(30)])
        out["ms"]["30 x MLP"] = _ms(lambda: [layer.mlp(x) for _ in range(30)])
        out["ms"]["61 x RMSNorm"] = _ms(lambda: [layer.input_layernorm(x) for _ in range(61)])
        out["ms"]["LM head + float"] = _ms(lambda: model.lm_head(x).float())
        # real next-token logits: a synthetic problem's prompt, as the SSFT-less model continues it
        from mathlite import synthetic

        tok = models.load_tokenizer(models.OFFLINE_MODEL)
        prob = synthetic.generate(1, seed=0)[0]
        prompt = sampling._encode(tok, sampling._prompt_fn(tok, None, ())(prob))
        logits = model(input_ids=torch.tensor([prompt] * B), logits_to_keep=1).logits[:, -1].float()
        u = torch.rand(B)
        out["ms"]["top-p + log-probs"] = _ms(lambda: (sampling._sample_rows(logits, u, 0.9, 0.95), torch.logsumexp(logits, -1)))
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["ms"], indent=1))


if __name__ == "__main__":
    main()
