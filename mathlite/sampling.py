"""Sample and grade solutions: one greedy + N sampled solutions per problem (paper: N=64,
top-p 0.95, temperature 0.9), graded on the spot, written to resumable JSONL.

    cfg = SamplingConfig(n=64, temperature=0.9, top_p=0.95, max_new_tokens=512, seed=0)
    summary = sample_problems(model, tok, problems, "runs/cpu/samples/samples-test.jsonl", cfg)
    print_summary(summary)
    by_id = read_samples("runs/cpu/samples/samples-test.jsonl")

Output files (next to each other; `output_paths(out)` names them)
------------------------------------------------------------------
``samples-test.jsonl``  one JSON object per line, one line per generated solution::

    {"id": "synthetic/add/test0-3",  # Problem.id
     "k": 5,                        # -1: the greedy solution; 0..N-1: sample number
     "text": "We add ... $\\boxed{12}$",  # the solution (EOS and stop string cut off)
     "answer": "12",               # answers.extract_answer(text); null when none found
     "correct": true,              # answers.is_equiv(answer, problem.answer); false without an answer
     "tokens": 37,                 # generated tokens, counting the final EOS token if any
     "logprob_sum": -21.4,         # sum over those tokens of log p(token | prefix) under the sampling
                                   # model, from its unmodified softmax (temperature 1, no top-p cut)
     "logprob_mean": -0.578,       # logprob_sum / tokens (0.0 when tokens == 0)
     "finish": "eos"}              # "eos": stopped by itself (EOS token or a stop string);
                                   # "length": cut off at max_new_tokens

    Lines are in generation order, not sorted; `read_samples` groups and sorts them.
    `logprob_sum`/`logprob_mean` are optional for readers (files written before they existed
    lack them); the HF engine always writes them, computed from the logits the decode loop
    already has (no extra forward pass). Temperature 1 and no top-p truncation make them the
    model's own likelihood of the solution, comparable between greedy and sampled rows and
    across sampling configs: `tokens` and `logprob_sum` of a row are what a teacher-forced
    forward pass over prompt + generated tokens gives (up to bf16 rounding).
    Readers ignore keys they do not know (later stages may add some).

``samples-test.problems.jsonl``  the problems, one `Problem.to_dict()` a line.

``samples-test.meta.json``  the sampling config and its hash (`config_hash`), which covers
    the config, the prompt fingerprint (template + few-shot examples) and the model
    identity (name, weights dtype/quantization, a hash of the LoRA adapter's weights).
    Plus the backend(s) used, timings, `complete` and the last summary.

Resuming and safety
-------------------
Each batch is appended, flushed and fsync'ed as a whole. Killed at any moment (kill -9
included), a rerun of the same call reads what is there, truncates a half-written last
line, and generates only the missing (id, k) units: nothing is lost or duplicated. The
samples file is flock'ed while a run writes, so two concurrent runs cannot interleave.
A rerun whose config hash differs from the meta's is refused (`errors.UserError`, one line
naming the file) instead of silently mixing two configurations; more problems may be
added to an existing output (same config), and are sampled on resume.

Determinism: each (problem id, k) unit draws its randomness from its own generator seeded
from (seed, id, k) (one uniform number per step, sampled by inverse CDF over the nucleus),
so a sample does not depend on which other units share its batch. The batch plan is a
function of the problems, config and batch_size only (`plan_batches`), and a batch cut
short by a kill is regenerated whole, so a resumed run computes exactly the batches of an
uninterrupted one and, on the same machine and thread count, writes the same samples bit
for bit. What is NOT invariant is bf16 numerics across batch shapes: another batch_size,
thread count or machine changes matmul blocking and padding, the bf16 logits move by an
ulp (0.125 at a logit of 20), and samples then fork often (about half of 24-token samples
of the 135M model differed between batch_size 2 and 6; in float32 none did). Such runs
draw from the same distribution, not the same draws.

Speed (CPU and GPU, Hugging Face backend)
-----------------------------------------
- A work queue of (problem, k) units, sorted by prompt length (longest first: on a GPU
  an out-of-memory shows up in the first batch) and cut into batches of `batch_size`
  sequences across problems, with left padding.
- Shared prefill: a batch's distinct prompts are prefilled once and their KV cache is
  then copied to each of the prompt's samples (`Cache.reorder_cache`): prefill work / N.
  Measured on 2 CPU cores, 8 prompts x 8 samples of 50-90 tokens: prefill 0.5 s instead
  of 2.7 s, the whole run 1.18x faster (bench/bench_sampling.py); few-shot prompts gain more.
- Finished rows are dropped from the batch (the KV cache is compacted) once an eighth
  of them are done, so long stragglers do not drag finished rows through the model.
- Top-p without a full vocabulary sort: the nucleus almost always lies in the top 64
  tokens; only rows whose top-64 mass is below top_p fall back to a larger top-k, then
  to a full sort (same result; sorting 49k logits took ~80 ms a step at 64 rows on
  CPU, half as long as the model's forward pass; the top-64 takes ~3 ms).
- bf16 weights (models.load_model), `torch.inference_mode()`, and on CPU the
  frozen-weights `generate` trap avoided by `models.speed_up_frozen_generate`.
- On CPU, decode steps run `_decode_attention` over a two-level cache (`_two_level_class`): each key/value
  head meets its group of query heads in one matmul (no `repeat_kv` copy, no SDPA kernel
  on a 3-row query), and new keys/values wait in a 16-slot buffer instead of being
  concatenated onto the whole cache at every step. Same logits as transformers' SDPA path
  in float32 (tests/test_decode_attention.py). With 136 rows a batch (the cpu preset) this
  is 1.3x the tokens per second of the previous loop at its 72 rows (bench/bench_throughput.py);
  the rest of a step is the model's own matmuls (about half), attention, top-p and norms.

With vLLM importable, CUDA present and the model given as a name/path, the vLLM backend
is used instead (LoRA through `LoRARequest`, per-unit seeds, prefix caching); it writes
the same files. One engine serves the whole process (every split and adapter; `free_vllm`
drops it), with `max_model_len` = the longest prompt + max_new_tokens, and it stops at the
chat template's end of turn as the HF loop does. It has not run on a GPU yet; CI drives it
through a stand-in vllm module.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import inspect
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import torch

from . import models
from .errors import UserError
from .files import atomic_write_json, config_hash, machine, versions
from .samples import FINISH_REASONS, RECORD_FIELDS, OutputPaths, output_paths, read_samples, validate_record  # noqa: F401
from .samples import load_problems as read_problems
from .samples import append_samples, feature_chunk, write_feature_chunk, scan_jsonl as _scan_jsonl, sync_problems as _sync_problems

SCHEMA_VERSION = 1

# Top-p: the top-k sizes tried before a full sort (see _sample_rows).
_TOP_K_STEPS = (64, 1024)
# Compact the KV cache once this share of a batch's rows has finished.
_COMPACT_FRACTION = 0.125
# CPU decoding: new keys/values gathered this many steps before joining the contiguous cache.
_RECENT = 16


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SamplingConfig:
    """What decides the samples (all of it goes into the output's config hash).

    n: sampled solutions per problem (paper: 64); greedy: also one greedy solution (k=-1).
    stop: extra stop strings besides EOS; None = automatic: data.PLAIN_STOP for a
    tokenizer without a chat template (a base model goes on with the next "Problem:"),
    none otherwise.
    """

    n: int = 64
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 512
    greedy: bool = True
    seed: int = 0
    stop: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.n < 0 or self.max_new_tokens < 1:
            raise UserError(f"sampling: need n >= 0 and max_new_tokens >= 1 (got n={self.n}, max_new_tokens={self.max_new_tokens})")
        if self.n > 0 and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise UserError(f"sampling: need temperature > 0 and 0 < top_p <= 1 (got {self.temperature}, {self.top_p})")
        if self.n == 0 and not self.greedy:
            raise UserError("sampling: n=0 and greedy=False asks for nothing")
        if self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))

    def resolved(self, tokenizer) -> "SamplingConfig":
        """The config with `stop` made explicit for this tokenizer."""
        if self.stop is not None:
            return self
        from .data import PLAIN_STOP, has_chat_template

        return dataclasses.replace(self, stop=() if has_chat_template(tokenizer) else (PLAIN_STOP,))


def unit_seed(seed: int, problem_id: str, k: int) -> int:
    """The seed of one (problem, k) unit: independent of batching, order and resumes."""
    h = hashlib.sha256(f"{seed}\0{problem_id}\0{k}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1  # 63 bits: fits torch and vLLM seeds


# ---------------------------------------------------------------------------- records


def metric_records(out: str | Path) -> list[dict[str, Any]]:
    """The output as per-problem records in mathlite.metrics' input format
    ({id, level, subject, greedy, samples}), in problem-file order."""
    paths = output_paths(out)
    by_id = read_samples(paths.samples)
    rows = []
    for p in read_problems(paths.problems):
        entry = by_id.get(p.id, {"greedy": None, "samples": []})
        g = entry["greedy"]
        rows.append({
            "id": p.id, "level": p.level, "subject": p.subject,
            "greedy": None if g is None else {"answer": g["answer"], "correct": g["correct"], "tokens": g["tokens"]},
            "samples": [{"answer": s["answer"], "correct": s["correct"], "score": None, "tokens": s["tokens"]} for s in entry["samples"]],
        })
    return rows


# ---------------------------------------------------------------------------- identity


def _state_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:12]


def adapter_fingerprint(model_or_dir) -> str | None:
    """A hash of a LoRA adapter's weights, the same whether read from a saved adapter
    folder or from a loaded PeftModel; None for a model without an adapter."""
    if isinstance(model_or_dir, (str, Path)):
        f = Path(model_or_dir) / "adapter_model.safetensors"
        if not f.exists():
            raise models.ModelNotFound(f"{model_or_dir}: no adapter_model.safetensors here")
        from safetensors.torch import load_file

        return _state_fingerprint(load_file(str(f)))
    if not hasattr(model_or_dir, "peft_config"):
        return None
    from peft import get_peft_model_state_dict

    return _state_fingerprint(get_peft_model_state_dict(model_or_dir))


def _weights_kind(model) -> str:
    if getattr(model, "is_loaded_in_4bit", False):
        return "nf4"
    if getattr(model, "is_loaded_in_8bit", False):
        return "int8"
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def model_identity(model, model_id: str | None = None, adapter: str | Path | None = None) -> dict[str, Any]:
    """What the samples came from: name, weights kind and adapter hash (part of the config hash).

    Pass `model_id` for a stable name (e.g. "smollm2-135m-offline" rather than the cache
    path it resolves to); a merged model needs one too, since its adapter is no longer visible.
    """
    name = model_id or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    return {
        "name": str(name),
        "weights": _weights_kind(model),
        "adapter": str(adapter) if adapter else None,
        "adapter_sha": adapter_fingerprint(model),
    }


def prompt_fingerprint(prompt_fn: Callable[[Any], str], example) -> str:
    """Hash of the prompt built for a fixed probe question: it changes with the template,
    the instruction and the few-shot examples, not with the problem set."""
    probe = dataclasses.replace(example, id="<probe>", question="<<question>>", solution="", answer=None)
    return hashlib.sha256(prompt_fn(probe).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------- engines


class Unit(NamedTuple):
    """One sequence to generate."""

    key: tuple[str, int]  # (problem id, k)
    prompt_ids: tuple[int, ...]
    seed: int | None  # None: greedy


class Generation(NamedTuple):
    text: str
    tokens: int
    finish: str  # "eos" | "length"
    logprob_sum: float | None = None  # sum of the tokens' log-probs at temperature 1 (module docstring)
    token_ids: tuple[int, ...] = ()  # the generated tokens (HF engine; not written to the records)
    features: torch.Tensor | None = None  # (2, hidden): mean hidden states behind the tokens (HFEngine(features=True))


def end_of_turn_ids(tokenizer) -> set[int]:
    """The special token that closes an assistant turn in the tokenizer's chat template, which
    need not be its EOS: Qwen2.5 base ends a turn with <|im_end|> but its eos is <|endoftext|>.
    Found by rendering a two-turn chat and reading the first token after the assistant's text."""
    if not getattr(tokenizer, "chat_template", None) or not hasattr(tokenizer, "apply_chat_template"):
        return set()
    probe = "mathliteendofturnprobe"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
                                             tokenize=False)
    except Exception:  # a template that refuses this chat: nothing to add
        return set()
    if probe not in text:
        return set()
    tail = tokenizer(text[text.rfind(probe) + len(probe):], add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return {int(tail[0])} if tail and tail[0] in special else set()


def _eos_ids(model, tokenizer) -> set[int]:
    """EOS of the tokenizer and of the generation config, and the chat template's end of turn."""
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if not ids:
        raise UserError("the tokenizer and the model's generation config name no EOS token")
    return ids | end_of_turn_ids(tokenizer)


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _sample_rows(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One top-p sample per row by inverse CDF with the row's own uniform number u.

    Sorting 49k logits per row costs more than a CPU forward step of the model, so the
    nucleus is looked for in the top-64 tokens first; only rows whose top-64 mass is
    below top_p (rare at temperature ~1) retry with a larger k, then with a full sort.
    """
    x = logits / temperature
    vocab = x.shape[-1]
    if top_p >= 1.0:  # no truncation: sample in vocabulary order, no sort at all
        c = torch.softmax(x, dim=-1).cumsum(-1)
        idx = torch.searchsorted(c, (u * c[:, -1]).unsqueeze(-1), right=True)
        return idx.clamp_(max=vocab - 1).squeeze(-1)
    # log-normalizer once; probabilities then only for the candidates (no full softmax)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    out = torch.empty(len(u), dtype=torch.long, device=logits.device)
    todo = torch.arange(len(u), device=logits.device)
    for k in (*[s for s in _TOP_K_STEPS if s < vocab], vocab):
        top, i = x[todo].topk(k, dim=-1) if k < vocab else x[todo].sort(dim=-1, descending=True)
        p = (top - lse[todo]).exp()
        cum = p.cumsum(-1)
        ok = cum[:, -1] >= top_p if k < vocab else torch.ones_like(cum[:, -1], dtype=torch.bool)
        p, i, cum, rows = p[ok], i[ok], cum[ok], todo[ok]
        keep = (cum - p) < top_p  # the smallest prefix whose mass reaches top_p
        p = p * keep
        c = p.cumsum(-1)
        j = torch.searchsorted(c, (u[rows] * c[:, -1]).unsqueeze(-1), right=True)
        j = torch.minimum(j, keep.sum(-1, keepdim=True) - 1)  # float round-off at the edge
        out[rows] = i.gather(-1, j).squeeze(-1)
        todo = todo[~ok]
        if len(todo) == 0:
            break
    return out


# ---------------------------------------------------------------------------- decode attention

_DECODE_ATTENTION = "mathlite_decode"


class _Parts(NamedTuple):
    """A layer's cached keys (or values) in two parts: `base`, contiguous, and the last few
    steps' `recent` (a view into a small preallocated buffer)."""

    base: torch.Tensor
    recent: torch.Tensor


@functools.cache
def _two_level_class():
    """The cache layer class, made on first use (transformers is imported only then)."""
    from transformers.cache_utils import DynamicLayer

    class TwoLevelLayer(DynamicLayer):
        """One layer's KV cache for CPU decoding, without copying the whole cache every step.

        A plain `DynamicCache` concatenates each new token onto the layer's keys and values:
        a fresh copy of the whole cache per layer per step (about a quarter of a decode step on
        2 CPU cores at 144 rows). Here new tokens go into a small buffer of `_RECENT` slots,
        folded into the contiguous base once it is full: one copy per `_RECENT` steps.
        Attention then runs on the two parts (`_decode_attention`)."""

        def __init__(self):
            super().__init__()
            self.base_k = self.base_v = self.rec_k = self.rec_v = None
            self.r = 0

        def update(self, k: torch.Tensor, v: torch.Tensor, *args, **kwargs):
            if self.base_k is None:  # the prefill: one contiguous block
                self.base_k, self.base_v = k.contiguous(), v.contiguous()
                b, h, _, d = k.shape
                self.rec_k, self.rec_v = k.new_empty((b, h, _RECENT, d)), v.new_empty((b, h, _RECENT, d))
                self.r, self.is_initialized = 0, True
                return self.base_k, self.base_v
            q = k.shape[-2]
            if self.r + q > _RECENT:
                self._fold()
            self.rec_k[:, :, self.r : self.r + q] = k
            self.rec_v[:, :, self.r : self.r + q] = v
            self.r += q
            return _Parts(self.base_k, self.rec_k[:, :, : self.r]), _Parts(self.base_v, self.rec_v[:, :, : self.r])

        def _fold(self) -> None:
            if self.r:
                self.base_k = torch.cat([self.base_k, self.rec_k[:, :, : self.r]], dim=-2)
                self.base_v = torch.cat([self.base_v, self.rec_v[:, :, : self.r]], dim=-2)
                self.r = 0

        def get_seq_length(self) -> int:
            return 0 if self.base_k is None else self.base_k.shape[-2] + self.r

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def get_max_length(self) -> int:
            return -1

        def reorder_cache(self, rows: torch.Tensor) -> None:
            if self.base_k is not None:
                self._fold()
                self.base_k, self.base_v = self.base_k.index_select(0, rows), self.base_v.index_select(0, rows)
                self.rec_k, self.rec_v = self.rec_k.index_select(0, rows), self.rec_v.index_select(0, rows)

    return TwoLevelLayer


def new_two_level_layer():
    """One layer of the CPU decode cache (see `_two_level_class`)."""
    return _two_level_class()()


def _decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Attention for one new token per row, on a two-level cache (`_two_level_class`), without copying
    the cache per query head.

    Grouped-query models (SmolLM2: 9 query heads on 3 key/value heads) otherwise expand
    every cached key and value 3x at every step of every layer (eager's `repeat_kv`), or
    run SDPA's CPU kernel on a 3-row query; here each key/value head meets its group of
    query heads in one matmul per cache part. The prefill (several query tokens, plain
    tensors) goes to PyTorch's SDPA unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not isinstance(key, _Parts):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    b, hq, _, d = query.shape
    hk = key.base.shape[1]
    scale = scaling if scaling is not None else d ** -0.5
    q = query.reshape(b, hk, hq // hk, d)  # a group's query heads share their key/value head
    nb = key.base.shape[-2]
    s = torch.cat([torch.matmul(q, key.base.transpose(-1, -2)), torch.matmul(q, key.recent.transpose(-1, -2))], dim=-1)
    s = s.float() * scale  # (b, hk, group, kv_len)
    if attention_mask is not None:  # (b, 1, 1, kv_len): bool (True = attend) or additive
        s = s.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool else s + attention_mask
    p = torch.softmax(s, dim=-1).to(value.base.dtype)
    out = torch.matmul(p[..., :nb], value.base) + torch.matmul(p[..., nb:], value.recent)  # (b, hk, group, d)
    return out.reshape(b, hq, 1, d).transpose(1, 2), None


def _register_decode_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_DECODE_ATTENTION, _decode_attention)
    AttentionMaskInterface.register(_DECODE_ATTENTION, sdpa_mask)


@contextmanager
def decode_attention(lm):
    """Use `_decode_attention` in `lm` (a transformers model) for the duration, on CPU only
    (on a GPU, SDPA's fused kernels already handle one-token queries well)."""
    cfg = getattr(lm, "config", None)
    before = getattr(cfg, "_attn_implementation", None)
    if models.has_cuda() or before not in ("eager", "sdpa"):
        yield False
        return
    _register_decode_attention()
    cfg._attn_implementation = _DECODE_ATTENTION
    try:
        yield True
    finally:
        cfg._attn_implementation = before


@contextmanager
def generation_mode(model):
    """eval() + the CPU speed fixes for the duration of a generation, then the model's own
    state back (greedy checks run between training phases and must not change it)."""
    was_training = model.training
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb_grad = emb.weight.requires_grad if emb is not None else None
    model.eval()
    models.speed_up_frozen_generate(model)  # 2.2x on CPU when every weight is frozen
    if not models.has_cuda() and getattr(model, "is_loaded_in_4bit", False):
        models.disable_bnb_cpu_repack(model)  # else later LoRA training silently breaks
    try:
        yield
    finally:
        if emb is not None:
            emb.weight.requires_grad_(emb_grad)
        model.train(was_training)


class HFEngine:
    """Batched generation with a plain KV-cache decode loop over a Hugging Face causal LM.

    A hand-written loop rather than `generate()`: it gives each row its own random
    stream (per-unit determinism), shares a prompt's prefill across its samples, drops
    finished rows, and avoids the full-vocabulary sort of top-p.
    """

    name = "hf"

    def __init__(self, model, tokenizer, cfg: SamplingConfig, batch_size: int = 64, share_prefill: bool = True,
                 features: bool = False):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.batch_size, self.share_prefill, self.features = batch_size, share_prefill, features
        self._hidden: list[torch.Tensor] = []
        # LoRA layers live inside the base model, so calling it directly runs the adapter too
        self.lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.device = getattr(self.lm, "device", None) or next(self.lm.parameters()).device
        self.eos = _eos_ids(model, tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos)
        params = inspect.signature(self.lm.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5
        self.stop = tuple(cfg.stop or ())
        # enough tokens to hold any stop string even at one character per token
        self.stop_window = max((len(s) for s in self.stop), default=0) + 4

    def _new_cache(self):
        from transformers import DynamicCache

        try:
            cache = DynamicCache(config=self.lm.config)
        except (TypeError, AttributeError):  # older transformers, or a model without a real config
            cache = DynamicCache()
        if getattr(self, "_two_level", False):
            cache.layers = [new_two_level_layer() for _ in range(self.lm.config.num_hidden_layers)]
            cache.layer_class_to_replicate = None
        return cache

    def _forward(self, ids, attn, pos, cache) -> torch.Tensor:
        self._hidden.clear()
        out = self.lm(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1, **{self.cache_kw: cache})
        return out.logits[:, -1, :].float()

    @contextmanager
    def _capture(self):
        """With `features`: keep the last position's output of a middle decoder layer and of the final
        norm (the state the logits come from) at every forward pass, through forward hooks."""
        if not self.features:
            yield
            return
        inner = self.lm.get_decoder() if hasattr(self.lm, "get_decoder") else self.lm.model
        mid = inner.layers[(2 * len(inner.layers)) // 3]

        def keep(_m, _i, out):
            h = out[0] if isinstance(out, tuple) else out
            self._hidden.append(h[:, -1, :].float())

        hooks = [mid.register_forward_hook(keep), inner.norm.register_forward_hook(keep)]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    def _stopped(self, toks: list[int]) -> bool:
        tail = self.tokenizer.decode(toks[-self.stop_window :], skip_special_tokens=True)
        return any(s in tail for s in self.stop)

    def run(self, units: Sequence[Unit], on_step: Callable[[int], None] | None = None) -> list[Generation]:
        with generation_mode(self.model), decode_attention(self.lm) as two_level, torch.inference_mode():
            self._two_level = two_level
            with self._capture():
                return self._decode(units, on_step)

    def _decode(self, units: Sequence[Unit], on_step) -> list[Generation]:
        cfg, dev, T = self.cfg, self.device, self.cfg.max_new_tokens
        # distinct prompts of the batch, and for each row the prompt it continues
        index: dict[tuple[int, ...], int] = {}
        row_prompt = [index.setdefault(u.prompt_ids, len(index)) for u in units]
        prompts = list(index)
        if not self.share_prefill:
            prompts, row_prompt = [u.prompt_ids for u in units], list(range(len(units)))
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        attn = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding: every prompt ends at the same column
            ids[r, width - len(p) :] = torch.tensor(p)
            attn[r, width - len(p) :] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        pos = (attn.cumsum(-1) - 1).clamp_(min=0)
        cache = self._new_cache()
        logits = self._forward(ids, attn, pos, cache)
        hidden = torch.stack(self._hidden, 1) if self.features else None  # (rows, 2, hidden)
        if len(prompts) < len(units):  # one prefill per prompt, copied to each of its rows
            rows = torch.tensor(row_prompt, device=dev)
            cache.reorder_cache(rows)
            logits, attn, pos = logits[rows], attn[rows], pos[rows]
            hidden = hidden[rows] if hidden is not None else None
        feat_sum = torch.zeros((len(units), 2, hidden.shape[-1]), dtype=torch.float64) if hidden is not None else None
        next_pos = pos[:, -1:] + 1

        # each row's random stream: one uniform number per step, from its unit's seed
        u_all = torch.zeros((len(units), T), dtype=torch.float32)
        for r, unit in enumerate(units):
            if unit.seed is not None:
                u_all[r] = torch.rand(T, generator=torch.Generator().manual_seed(unit.seed))
        u_all = u_all.to(dev)
        greedy_all = torch.tensor([u.seed is None for u in units], device=dev)

        live = list(range(len(units)))  # original row of each batch position
        done_in_batch: set[int] = set()  # positions whose row finished but is still in the cache
        gen: list[list[int]] = [[] for _ in units]
        finish: list[str | None] = [None] * len(units)
        lp_sum = torch.zeros(len(units), dtype=torch.float64)  # per original row
        for t in range(T):
            live_t = torch.tensor(live, device=dev)
            nxt = torch.empty(len(live), dtype=torch.long, device=dev)
            greedy = greedy_all[live_t]
            if greedy.any():
                nxt[greedy] = logits[greedy].argmax(-1)
            if not greedy.all():
                s = ~greedy
                nxt[s] = _sample_rows(logits[s], u_all[live_t[s], t], cfg.temperature, cfg.top_p)
            # log p(token) under the model's own softmax (temperature 1), from the logits at hand
            lp = (logits.gather(-1, nxt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)).clamp_(max=0.0).tolist()
            if feat_sum is not None:  # the states these logits came from, for the rows still writing
                act = [j for j in range(len(live)) if j not in done_in_batch]
                feat_sum.index_add_(0, torch.tensor([live[j] for j in act]), hidden[act].double().cpu())
            for j, (r, tok) in enumerate(zip(live, nxt.tolist())):
                if j in done_in_batch:
                    continue
                gen[r].append(tok)
                lp_sum[r] += lp[j]
                if tok in self.eos or (self.stop and self._stopped(gen[r])):
                    finish[r] = "eos"
                    done_in_batch.add(j)
            if on_step:
                on_step(len(live) - len(done_in_batch))
            if len(done_in_batch) == len(live) or t == T - 1:
                break
            if len(done_in_batch) >= max(1, _COMPACT_FRACTION * len(live)):
                keep = [j for j in range(len(live)) if j not in done_in_batch]
                sel = torch.tensor(keep, device=dev)
                cache.reorder_cache(sel)
                attn, next_pos, nxt = attn[sel], next_pos[sel], nxt[sel]
                live, done_in_batch = [live[j] for j in keep], set()
            attn = torch.cat([attn, attn.new_ones((len(live), 1))], dim=-1)
            logits = self._forward(nxt.unsqueeze(-1), attn, next_pos, cache)
            hidden = torch.stack(self._hidden, 1) if self.features else None
            next_pos = next_pos + 1

        results = []
        for r, toks in enumerate(gen):
            body = toks[:-1] if toks and toks[-1] in self.eos else toks
            text, cut = _cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), self.stop)
            feats = (feat_sum[r] / max(len(toks), 1)).float() if feat_sum is not None else None
            results.append(Generation(text, len(toks), "eos" if finish[r] or cut else "length", float(lp_sum[r]),
                                      tuple(toks), feats))
        return results


# One vLLM engine per process: it takes most of the GPU's memory, so a second one (say for the
# second split) would not fit, and the weights would load twice. Reused while its settings fit.
_VLLM: dict[str, Any] = {"llm": None, "key": None}


def _vllm_llm(key: dict):
    """The process's LLM for `key` (model, dtype, max_model_len, LoRA rank): the cached one when it
    was built with the same settings and at least this max_model_len, else a new one (the old one freed)."""
    old = _VLLM["key"]
    if _VLLM["llm"] is not None and old is not None and {**old, "max_model_len": 0} == {**key, "max_model_len": 0} \
            and old["max_model_len"] >= key["max_model_len"]:
        return _VLLM["llm"]
    free_vllm()
    from vllm import LLM

    kwargs = {k: v for k, v in key.items() if v is not None and k != "max_lora_rank"}
    if key.get("max_lora_rank"):
        kwargs.update(enable_lora=True, max_lora_rank=key["max_lora_rank"])
    _VLLM["llm"], _VLLM["key"] = LLM(**kwargs), dict(key)
    return _VLLM["llm"]


def free_vllm() -> None:
    """Drop the process's vLLM engine and give its GPU memory back (e.g. before training)."""
    if _VLLM["llm"] is None:
        return
    _VLLM["llm"], _VLLM["key"] = None, None
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# LoRA target layers vLLM serves for Qwen2/Llama-style models (q/k/v and gate/up are packed there)
VLLM_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def check_vllm_adapter(adapter: str | Path) -> int:
    """What vLLM's LoRA loader accepts, checked before the engine starts; returns the rank.

    peft 0.21 saves `target_modules` of an "all-linear" adapter as a list of fully qualified
    module names. vLLM does not match that list: it reads the module names of the tensors in
    adapter_model.safetensors and wants each one's last part in the model's LoRA-capable layers;
    it refuses `modules_to_save` (a trained score or LM head) and DoRA. So those are checked here,
    with one-line errors, from the tensors, as vLLM does."""
    adapter = Path(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    if cfg.get("modules_to_save"):
        raise UserError(f"{adapter}: vLLM cannot serve an adapter with modules_to_save {cfg['modules_to_save']}; "
                        "use --backend hf")
    if cfg.get("use_dora"):
        raise UserError(f"{adapter}: vLLM cannot serve a DoRA adapter; use --backend hf")
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        names = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in f.keys() if ".lora_" in k}
    odd = sorted(names - set(VLLM_LORA_MODULES))
    if odd:
        raise UserError(f"{adapter}: LoRA on {odd}, layers vLLM does not serve; use --backend hf")
    return int(cfg["r"])


class VLLMEngine:
    """The same units through vLLM (GPU only): one request per unit with the unit's seed,
    so that resumes draw the same samples; prefix caching shares the prompt's prefill.
    The engine is built once per process and reused (`_vllm_llm`); CI tests it with a stand-in
    vllm module (no GPU there)."""

    name = "vllm"

    def __init__(self, model_name: str, tokenizer, cfg: SamplingConfig, adapter: str | Path | None = None,
                 batch_size: int = 1024, max_model_len: int | None = None):
        import vllm  # noqa: F401  first: fail early when absent

        self.cfg, self.tokenizer, self.batch_size = cfg, tokenizer, max(batch_size, 256)
        lora_rank = check_vllm_adapter(adapter) if adapter else None
        key: dict[str, Any] = {"model": models.resolve_model(model_name), "dtype": vllm_dtype(), "seed": 0,
                               "enable_prefix_caching": True, "max_model_len": max_model_len, "max_lora_rank": None}
        if adapter:  # vLLM takes a LoRA rank from a fixed menu: the smallest that fits
            key["max_lora_rank"] = next((r for r in (8, 16, 32, 64, 128, 256) if r >= lora_rank), lora_rank)
        self.llm = _vllm_llm(key)
        # per-request seeds decide the samples; the engine's own seed is fixed so the engine is shareable
        self.stop_ids = sorted(end_of_turn_ids(tokenizer))
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            # one id per adapter folder: vLLM caches adapters by id
            self.lora = LoRARequest(f"adapter-{adapter_fingerprint(adapter)}", _lora_id(str(adapter)), str(adapter))

    def run(self, units: Sequence[Unit], on_step=None) -> list[Generation]:
        from vllm import SamplingParams

        cfg = self.cfg
        params = [
            SamplingParams(
                n=1, max_tokens=cfg.max_new_tokens, stop=list(cfg.stop or ()), stop_token_ids=self.stop_ids,
                skip_special_tokens=True,
                logprobs=0,  # the sampled token's log-prob (vLLM's default mode: raw, before temperature/top-p)
                **({"temperature": 0.0} if u.seed is None else {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": u.seed}),
            )
            for u in units
        ]
        prompts = [{"prompt_token_ids": list(u.prompt_ids)} for u in units]
        outs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        results = []
        for o in outs:
            c = o.outputs[0]
            results.append(Generation(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "eos",
                                      getattr(c, "cumulative_logprob", None)))
            if on_step:
                on_step(len(c.token_ids))
        return results


_LORA_IDS: dict[str, int] = {}


def _lora_id(path: str) -> int:
    return _LORA_IDS.setdefault(path, len(_LORA_IDS) + 1)


def vllm_dtype() -> str:
    """The dtype vLLM serves the base model in: the compute dtype (float16 on a T4)."""
    return str(models.compute_dtype()).removeprefix("torch.")


def vllm_usable() -> bool:
    import importlib.util

    return models.has_cuda() and importlib.util.find_spec("vllm") is not None


# ---------------------------------------------------------------------------- grading


def grade(text: str, gold: str | None) -> tuple[str | None, bool]:
    """(extracted answer, correct) for one solution."""
    from .answers import extract_answer, is_equiv

    answer = extract_answer(text)
    return answer, bool(answer is not None and gold is not None and is_equiv(answer, gold))


def _record(problem, k: int, g: Generation) -> dict[str, Any]:
    answer, correct = grade(g.text, problem.answer)
    rec = {"id": problem.id, "k": k, "text": g.text, "answer": answer, "correct": correct, "tokens": g.tokens, "finish": g.finish}
    if g.logprob_sum is not None:
        rec["logprob_sum"] = round(g.logprob_sum, 6)
        rec["logprob_mean"] = round(g.logprob_sum / g.tokens, 6) if g.tokens else 0.0
    return rec


# ---------------------------------------------------------------------------- the driver


def _prompt_fn(tokenizer, prompt_fn, fewshot) -> Callable[[Any], str]:
    if prompt_fn is not None:
        if fewshot:
            raise ValueError("pass either prompt_fn or fewshot, not both")
        return prompt_fn
    from .data import build_prompt

    shots = [(s.question, s.solution) if hasattr(s, "question") else tuple(s) for s in fewshot]
    return lambda p: build_prompt(tokenizer, p.question, shots)


def _encode(tokenizer, prompt: str) -> tuple[int, ...]:
    # build_prompt's text may already start with the BOS token: do not add a second one
    bos = getattr(tokenizer, "bos_token", None)
    special = not (bos and prompt.startswith(bos))
    return tuple(tokenizer(prompt, add_special_tokens=special)["input_ids"])


def plan_batches(problems, prompt_ids: dict[str, tuple[int, ...]], cfg: SamplingConfig, batch_size: int) -> list[list[Unit]]:
    """Every unit of the run, cut into batches of `batch_size` sequences.

    Longest prompt first, and a problem's units together (greedy first), so that
    neighbours share a prompt (one prefill) or have a similar length (little padding).
    The plan depends only on the problems, prompts, config and batch size, never on
    what is already done: a resumed run recomputes exactly the batches of an
    uninterrupted one, hence the same bf16 numerics and the same samples.
    """
    ks = ([-1] if cfg.greedy else []) + list(range(cfg.n))
    order = sorted(range(len(problems)), key=lambda i: -len(prompt_ids[problems[i].id]))  # stable
    units = [
        Unit((p.id, k), prompt_ids[p.id], None if k < 0 else unit_seed(cfg.seed, p.id, k))
        for p in (problems[i] for i in order)
        for k in ks
    ]
    return [units[i : i + batch_size] for i in range(0, len(units), batch_size)]


class _Progress:
    """A rich progress bar over units with live tokens/s; silent when disabled."""

    def __init__(self, enabled: bool, desc: str, total: int):
        self.tokens, self.t0, self.bar = 0, time.time(), None
        if enabled and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                transient=False,
            )
            self.task = self.bar.add_task(desc, total=total, rate="-")
            self.bar.start()
            self._last = 0.0

    def step(self, n_tokens: int) -> None:
        self.tokens += n_tokens
        now = time.time()
        if self.bar is not None and now - self._last > 0.5:
            self._last = now
            self.bar.update(self.task, rate=f"{self.tokens / max(now - self.t0, 1e-9):.0f}")

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=n, rate=f"{self.tokens / max(time.time() - self.t0, 1e-9):.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _run_batches(engine, batches: list[list[Unit]], done: set, by_id: dict, sink: Callable[[list[dict]], None], progress: _Progress,
                 features_to: Path | None = None) -> int:
    """Generate, grade and hand each batch's new records to `sink`; returns tokens generated.

    A batch with some units already done (a kill cut its write short) is generated
    whole again, not just its missing units: same batch, same numerics, same samples.
    With `features_to` (a samples path), each batch's hidden-state features are written
    next to it (samples.write_feature_chunk); a done batch without its features file is
    generated again for them (its samples, already written, are not written twice).
    """
    tokens = 0
    for i, batch in enumerate(batches):
        if all(u.key in done for u in batch) and (features_to is None or feature_chunk(features_to, i).exists()):
            continue
        gens = engine.run(batch, on_step=progress.step)
        if features_to is not None:
            write_feature_chunk(features_to, i, [u.key for u in batch], torch.stack([g.features for g in gens]))
        tokens += sum(g.tokens for g in gens)
        recs = [_record(by_id[u.key[0]], u.key[1], g) for u, g in zip(batch, gens) if u.key not in done]
        sink(recs)
        progress.advance(len(recs) or len(batch))
    return tokens


def _check_problems(problems) -> dict[str, Any]:
    by_id: dict[str, Any] = {}
    for p in problems:
        if p.id in by_id:
            raise UserError(f"problem id {p.id!r} appears twice in the problem list; ids must be unique")
        by_id[p.id] = p
    return by_id


def _check_meta(meta_path: Path, meta: dict, samples_exist: bool) -> dict | None:
    """The existing meta (None if new); UserError when it belongs to another config."""
    if not meta_path.exists():
        if samples_exist:
            raise UserError(f"{meta_path}: missing, but samples exist next to it; cannot tell their config (delete them or use another output path)")
        return None
    try:
        old = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{meta_path}: not valid JSON; delete the output or use another path") from None
    if old.get("config_hash") != meta["config_hash"] and samples_exist:  # nothing to mix without samples
        was, now = _hashed_part(old), _hashed_part(meta)
        diff = [f"{k}: {was.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        raise UserError(
            f"{meta_path}: samples here were made with another sampling config ({'; '.join(diff)[:300]}); "
            "use another output path, or delete it to start over"
        )
    return old


def _hashed_part(meta: dict) -> dict:
    flat = {f"config.{k}": v for k, v in (meta.get("config") or {}).items()}
    # the adapter's weights are identified by adapter_sha; its folder may move (a copied run folder)
    flat.update({f"model.{k}": v for k, v in (meta.get("model") or {}).items() if k != "adapter"})
    flat["prompt"] = meta.get("prompt_sha")
    return json.loads(json.dumps(flat, default=str))  # as stored: tuples and lists compare equal


def sample_problems(
    model,
    tokenizer,
    problems: Sequence,
    out: str | Path,
    config: SamplingConfig | None = None,
    *,
    prompt_fn: Callable[[Any], str] | None = None,
    fewshot: Sequence = (),
    model_id: str | None = None,
    adapter: str | Path | None = None,
    batch_size: int = 64,
    backend: str = "auto",
    max_model_len: int | None = None,
    share_prefill: bool = True,
    progress: bool = True,
    desc: str = "sampling",
    features: bool = False,
) -> dict[str, Any]:
    """Sample, grade and append to `out` (resumable); return the summary of the whole output.

    model: a loaded causal LM (a PeftModel is fine), or a model name/path: then it is
        loaded here, with `adapter` (a LoRA folder) on top: through vLLM when
        `backend` is "auto"/"vllm" and vLLM + CUDA are available, else models.load_model.
    tokenizer: may be None when `model` is a name.
    prompt_fn(problem) -> prompt text; default data.build_prompt with `fewshot`
        ((question, solution) pairs or Problems).
    model_id / adapter: recorded as the model identity (in the config hash); the LoRA
        weights of a loaded PeftModel are hashed either way.
    batch_size: sequences per batch (HF backend); a throughput knob, not in the hash.
    max_model_len: vLLM's context length (at least the longest prompt + max_new_tokens; pass the
        largest over several calls so that they share one engine).
    features: also keep the model's hidden states behind each sample (HF engine only), in
        `samples.features_dir(out)`: the mean over the sample's tokens of a middle layer's and
        the final norm's output, at no extra forward pass. The probe evaluator trains on them.
    """
    cfg = config or SamplingConfig()
    if backend not in ("auto", "hf", "vllm"):
        raise ValueError(f"backend must be auto, hf or vllm, not {backend!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    by_id = _check_problems(problems)
    paths = output_paths(out)
    paths.samples.parent.mkdir(parents=True, exist_ok=True)

    use_vllm = False
    if isinstance(model, (str, Path)):
        name = str(model)
        tokenizer = tokenizer or models.load_tokenizer(name)
        use_vllm = backend == "vllm" or (backend == "auto" and vllm_usable())
        if use_vllm:  # the engine (slow to start) is made after the output checks
            identity = {"name": model_id or name, "weights": "vllm-" + vllm_dtype(),
                        "adapter": str(adapter) if adapter else None,
                        "adapter_sha": adapter_fingerprint(adapter) if adapter else None}
        else:
            model = models.load_model(name)
            if adapter:
                model = models.load_adapter(model, adapter)
            model_id = model_id or name
    elif backend == "vllm":
        raise ValueError("backend='vllm' needs the model as a name/path, not a loaded model")
    if features and use_vllm:
        raise UserError("hidden-state features need the transformers engine: pass backend='hf' (--backend hf)")
    if tokenizer is None:
        raise ValueError("a loaded model needs its tokenizer")
    cfg = cfg.resolved(tokenizer)
    if not use_vllm:
        identity = model_identity(model, model_id, adapter)

    build = _prompt_fn(tokenizer, prompt_fn, fewshot)
    meta = {
        "schema": SCHEMA_VERSION,
        "config": dataclasses.asdict(cfg),
        "model": identity,
        "prompt_sha": prompt_fingerprint(build, problems[0]) if problems else None,
    }
    meta["config_hash"] = config_hash(_hashed_part(meta))

    # The lock is held on the samples file itself until the end: kill -9 releases it.
    with open(paths.samples, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{paths.samples}: another process is sampling into this file") from None
        existing, good, torn = _scan_jsonl(paths.samples, validate_record)
        old_meta = _check_meta(paths.meta, meta, samples_exist=good > 0)
        if torn is not None:
            fh.truncate(good)
            print(f"[sampling] {paths.samples}: dropped a half-written last line ({torn}); resuming")
        done = {(r["id"], r["k"]) for r in existing}
        if len(done) != len(existing):
            raise UserError(f"{paths.samples}: holds duplicate samples; delete it to start over")
        if problems:
            _sync_problems(paths.problems, problems)
        meta.update(
            created=(old_meta or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
            backends=sorted(set((old_meta or {}).get("backends", [])) | {"vllm" if use_vllm else "hf"}),
            # what the base ran as: vLLM serves it unquantized in the compute dtype, the HF path as loaded (NF4 on GPU)
            backend="vllm" if use_vllm else "hf", base_precision=identity["weights"].removeprefix("vllm-"),
            versions=versions(), machine=machine(), complete=False,
        )
        atomic_write_json(paths.meta, meta)

        prompt_ids = {p.id: _encode(tokenizer, build(p)) for p in problems}
        if use_vllm:  # context for the longest prompt + max_new_tokens (vLLM's default is the model's 128k)
            need = max((len(v) for v in prompt_ids.values()), default=0) + cfg.max_new_tokens
            engine = VLLMEngine(str(model), tokenizer, cfg, adapter=adapter, batch_size=batch_size,
                                max_model_len=max(max_model_len or 0, need))
        else:
            engine = HFEngine(model, tokenizer, cfg, batch_size=batch_size, share_prefill=share_prefill, features=features)
        batches = plan_batches(problems, prompt_ids, cfg, engine.batch_size)
        todo = sum(1 for b in batches for u in b if u.key not in done)
        if features:  # for the progress bar: done batches without their features run again
            todo += sum(len(b) for i, b in enumerate(batches)
                        if all(u.key in done for u in b) and not feature_chunk(paths.samples, i).exists())

        def sink(recs: list[dict]) -> None:
            append_samples(fh, recs)

        bar = _Progress(progress, desc, todo)
        t0 = time.time()
        try:
            tokens = _run_batches(engine, batches, done, by_id, sink, bar, paths.samples if features else None)
        finally:
            bar.close()
        seconds = time.time() - t0

    summary = summarize(read_samples(paths.samples), [p.id for p in problems], cfg)
    summary.update(new_samples=todo, resumed_from=len(done), session_tokens=tokens, seconds=round(seconds, 2),
                   tokens_per_s=round(tokens / seconds, 1) if seconds > 0 else None, out=str(paths.samples))
    meta.update(complete=True, summary=summary, seconds_last_session=round(seconds, 2))
    atomic_write_json(paths.meta, meta)
    return summary


def greedy_accuracy(
    model, tokenizer, problems: Sequence, *, max_new_tokens: int = 512, batch_size: int = 32,
    prompt_fn: Callable[[Any], str] | None = None, fewshot: Sequence = (), stop: Sequence[str] | None = None,
    desc: str = "greedy", progress: bool = True,
) -> dict[str, Any]:
    """Greedy decode + grade in memory (no files): the quick before/after check of a training
    recipe. Returns summarize()'s dict with "accuracy" (= greedy_accuracy) and "records"."""
    cfg = SamplingConfig(n=0, greedy=True, max_new_tokens=max_new_tokens, stop=None if stop is None else tuple(stop)).resolved(tokenizer)
    by_id = _check_problems(problems)
    build = _prompt_fn(tokenizer, prompt_fn, fewshot)
    prompt_ids = {p.id: _encode(tokenizer, build(p)) for p in problems}
    engine = HFEngine(model, tokenizer, cfg, batch_size=batch_size)
    records: list[dict] = []
    bar = _Progress(progress, desc, len(problems))
    t0 = time.time()
    try:
        tokens = _run_batches(engine, plan_batches(problems, prompt_ids, cfg, batch_size), set(), by_id, records.extend, bar)
    finally:
        bar.close()
    seconds = time.time() - t0
    grouped = {p.id: {"greedy": None, "samples": []} for p in problems}
    for r in records:
        grouped[r["id"]]["greedy"] = r
    summary = summarize(grouped, [p.id for p in problems], cfg)
    summary.update(accuracy=summary["greedy_accuracy"], session_tokens=tokens, seconds=round(seconds, 2),
                   tokens_per_s=round(tokens / seconds, 1) if seconds > 0 else None, records=records)
    return summary


# ---------------------------------------------------------------------------- summary


def summarize(by_id: dict[str, dict], ids: Iterable[str] | None = None, cfg: SamplingConfig | None = None) -> dict[str, Any]:
    """Accuracy summary of read_samples()' dict (restricted to `ids` when given).

    greedy_accuracy: share of problems whose greedy solution is correct (None without greedy);
    sample_accuracy: mean correctness over all sampled solutions; pass_at_n: share of
    problems with at least one correct sample; no_answer / truncated: shares of the sampled
    solutions (of the greedy ones when n=0) with no extractable answer / cut at max_new_tokens.
    """
    ids = list(by_id) if ids is None else list(ids)
    entries = [by_id.get(i, {"greedy": None, "samples": []}) for i in ids]
    greedy = [e["greedy"] for e in entries if e["greedy"] is not None]
    samples = [s for e in entries for s in e["samples"]]
    pool = samples or greedy
    every = greedy + samples

    def share(xs, pred):
        return round(sum(1 for x in xs if pred(x)) / len(xs), 4) if xs else None

    return {
        "problems": len(ids),
        "n": cfg.n if cfg else (max((len(e["samples"]) for e in entries), default=0)),
        "greedy_accuracy": share(greedy, lambda r: r["correct"]) if greedy else None,
        "sample_accuracy": share(samples, lambda r: r["correct"]),
        "pass_at_n": share([e for e in entries if e["samples"]], lambda e: any(s["correct"] for s in e["samples"])),
        "no_answer": share(pool, lambda r: r["answer"] is None),
        "truncated": share(pool, lambda r: r["finish"] == "length"),
        "records": len(every),
        "tokens": sum(r["tokens"] for r in every),
        "mean_tokens": round(sum(r["tokens"] for r in every) / len(every), 1) if every else None,
    }


def print_summary(summary: dict[str, Any], title: str = "sampling") -> None:
    """The summary as a rich table."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    pct = ("greedy_accuracy", "sample_accuracy", "pass_at_n", "no_answer", "truncated")
    labels = {
        "greedy_accuracy": "greedy accuracy", "sample_accuracy": "mean sample accuracy", "pass_at_n": "pass@N",
        "no_answer": "no extractable answer", "truncated": "truncated (length)", "tokens": "tokens (whole output)",
        "session_tokens": "tokens (this run)", "seconds": "seconds (this run)", "tokens_per_s": "tokens/s (this run)",
        "problems": "problems", "n": "samples per problem", "new_samples": "new samples this run",
        "resumed_from": "samples already there", "mean_tokens": "mean tokens/solution",
    }
    t = Table(title=escape(title), show_header=False, title_justify="left", box=None, padding=(0, 1))
    for key, label in labels.items():
        if key not in summary:
            continue
        v = summary[key]
        if v is None:
            text = "-"
        elif key in pct:
            text = f"{v:.1%}"
        elif isinstance(v, float):
            text = f"{v:,.1f}"
        else:
            text = f"{v:,}" if isinstance(v, int) else str(v)
        t.add_row(f"[cyan]{label}[/]", escape(text))
    if "out" in summary:
        t.add_row("[cyan]output[/]", escape(str(summary["out"])))
    Console().print(t)


__all__ = [
    "SCHEMA_VERSION", "FINISH_REASONS", "RECORD_FIELDS", "SamplingConfig", "OutputPaths", "output_paths", "unit_seed",
    "validate_record", "read_samples", "read_problems", "metric_records",
    "model_identity", "adapter_fingerprint", "prompt_fingerprint",
    "Unit", "Generation", "plan_batches", "HFEngine", "VLLMEngine", "vllm_usable", "free_vllm", "check_vllm_adapter",
    "end_of_turn_ids", "generation_mode", "grade",
    "sample_problems", "greedy_accuracy", "summarize", "print_summary",
]
