"""A tiny random-init Qwen2-architecture model, built offline, for rehearsing the GPU presets' path on CPU.

What it shares with Qwen2.5 base (what the GPU path has to get right):
- the Qwen2 architecture: q/k/v projections with bias, GQA, SwiGLU, untied input and output embeddings;
- a ChatML chat template whose assistant turn ends with <|im_end|>, while the EOS token is <|endoftext|>
  (also the pad token), so end of turn != EOS.
The tokenizer is the offline SmolLM2 one (its vocabulary already holds <|endoftext|>, <|im_start|> and
<|im_end|> as special tokens), with Qwen's EOS/pad choice and template. Weights are random (seeded).
"""

from __future__ import annotations

from pathlib import Path

import torch

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EOS, END_OF_TURN = "<|endoftext|>", "<|im_end|>"


def build_tiny_qwen(folder: str | Path, seed: int = 0) -> Path:
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from mathlite import models

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(models.offline_model_path(verbose=False))
    tok.eos_token = EOS
    tok.pad_token = EOS
    tok.chat_template = CHATML
    eos_id = tok.convert_tokens_to_ids(EOS)
    assert tok.convert_tokens_to_ids(END_OF_TURN) != eos_id
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=320, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False, rms_norm_eps=1e-6,
        rope_theta=1_000_000.0, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
        use_sliding_window=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
