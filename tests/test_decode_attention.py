"""The CPU decode path (two-level KV cache + grouped-query attention without repeat_kv) computes
what transformers' own SDPA path with a DynamicCache computes: same logits, step by step, across
cache folds, left padding and a row compaction."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from mathlite import sampling


def _tiny(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).float().eval()


def _decode(model, two_level: bool, steps: int):
    torch.manual_seed(1)
    b, width = 5, 9
    ids = torch.randint(3, 97, (b, width))
    attn = torch.ones(b, width, dtype=torch.long)
    attn[1, :3] = 0  # left padding
    attn[3, :5] = 0
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    ctx = sampling.decode_attention(model)
    with ctx as on, torch.inference_mode():
        assert on
        if two_level:
            cache.layers = [sampling.new_two_level_layer() for _ in range(model.config.num_hidden_layers)]
            cache.layer_class_to_replicate = None
        else:
            model.config._attn_implementation = "sdpa"
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True)
        logits, nxt, next_pos = [out.logits[:, -1]], out.logits[:, -1].argmax(-1, keepdim=True), pos[:, -1:] + 1
        for t in range(steps):
            if t == 21:  # drop rows 0 and 2, as the engine does with finished rows
                keep = torch.tensor([1, 3, 4])
                cache.reorder_cache(keep)
                attn, nxt, next_pos = attn[keep], nxt[keep], next_pos[keep]
            attn = torch.cat([attn, attn.new_ones((len(attn), 1))], dim=-1)
            out = model(input_ids=nxt, attention_mask=attn, position_ids=next_pos, cache=cache, use_cache=True)
            logits.append(out.logits[:, -1])
            nxt, next_pos = out.logits[:, -1].argmax(-1, keepdim=True), next_pos + 1
    return logits


def test_two_level_cache_matches_dynamic_cache_with_sdpa():
    model = _tiny()
    steps = 2 * sampling._RECENT + 7  # folds the recent buffer twice, compacts in between
    ours, ref = _decode(model, True, steps), _decode(model, False, steps)
    assert len(ours) == len(ref) == steps + 1
    for t, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-4), (t, (a - b).abs().max())
    assert model.config._attn_implementation == "sdpa"  # restored after the context


def test_decode_attention_left_alone_on_unknown_implementations():
    model = _tiny()
    model.config._attn_implementation = "flex_attention"
    with sampling.decode_attention(model) as on:
        assert not on and model.config._attn_implementation == "flex_attention"
