"""Throughput of each stage against its baseline, measured in the same run, and as a share of
the bf16 matmul roofline that this run measures on this machine.

    python bench/bench_throughput.py                 # every stage (tens of minutes on 2 cores)
    python bench/bench_throughput.py --quick         # small sizes; a smoke run
    python bench/bench_throughput.py --only roofline,scoring
    # on a shared machine: one process per stage (more CPU for the run), then one table
    python bench/bench_throughput.py --only sft --out parts/sft.json   # ... and so on per stage
    python bench/bench_throughput.py --merge parts/*.json --out bench/results/throughput.json

Stages and their baselines (same model: the offline SmolLM2-135M in bf16, LoRA r=16 on every
linear layer; same data; same batches):

  roofline         a 2048x2048 bf16 matmul (and fp32, for reference): FLOP per CPU-second
  sft              recipes/01_ssft.py's trainer (`sft_trainer`, cpu preset: TRL SFTTrainer, lean
                   loss, bf16 LoRA, length-grouped batches) vs
                   - a plain PyTorch + peft loop (model(**batch).loss, backward, AdamW) over the
                     very batches the recipe's dataloader yields, and
                   - the recipe's trainer as it was before this work ("recipe_before": stock
                     SFTTrainer, fp32 LoRA, LoRA dropout 0.05, random batches; see _sft_before)
  sampling         mathlite.sampling.HFEngine vs the engine before this work (kept below as
                   `BaselineEngine`) and vs a naive `generate(num_return_sequences=N)` per problem,
                   at N=8 and N=16 (greedy + N per problem, 02's batch of 72 sequences)
  scoring          Evaluator.score (head and verbal) in batches vs one solution at a time
  evaluator_train  mathlite.evaluator.train_evaluator (head, pointwise) vs a plain loop over the
                   same batches

Every time is measured twice: wall clock and this process's CPU time. The machine this ran on is
shared (load average recorded); with one torch thread (the default here) CPU time is the compute
time and a neighbour's load disturbs it far less, so ratios and roofline shares use CPU time.
Roofline share = useful model FLOPs (training 6 x params per token, inference 2 x params per
token) / the bf16 matmul FLOP rate measured at the start of the run. "ceiling" = 1 / the
baseline's roofline share: the largest ratio any change could reach against that baseline (ours
at 100% of the matmul rate); a goal above it cannot be met on this machine. For sampling the
ceiling is the tighter of that and the decode floor (`decode_floor`: the least work of one decode
step, its matmuls, attention over the mean cache (the fastest way timed) and one log-normalizer a row, at 1,
2 and 4 times the engine's batch, the best of them). Writes
bench/results/throughput.json (bench/results/quick/ with --quick) and prints the table.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("roofline", "sft", "sampling", "scoring", "evaluator_train")
# stage -> (baseline key, goal ratio): the goals
GOALS = {
    "sft": [("plain_loop", 0.9), ("recipe_before", 3.0)],
    "sampling_n8": [("engine_before", 3.0), ("naive_generate", None)],
    "sampling_n16": [("engine_before", 3.0), ("naive_generate", None)],
    "scoring_head": [("batch1", 3.0)],
    "scoring_verbal": [("batch1", 3.0)],
    "evaluator_train": [("plain_loop", 0.9)],
}


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def rate(tokens: int, clock_wall: float, clock_cpu: float, flops_per_token: float, roof: float | None) -> dict:
    r = {"tokens": int(tokens), "wall_s": round(clock_wall, 3), "cpu_s": round(clock_cpu, 3),
         "tokens_per_s": tokens / clock_wall if clock_wall else None,
         "tokens_per_cpu_s": tokens / clock_cpu if clock_cpu else None}
    if roof and r["tokens_per_cpu_s"]:
        r["roofline_share"] = r["tokens_per_cpu_s"] * flops_per_token / roof
    return r


# ---------------------------------------------------------------------------- roofline


def matmul_roofline(size: int = 2048, seconds: float = 2.0) -> dict:
    """FLOP per CPU-second (and per wall second) of a square matmul, bf16 and fp32."""
    import torch

    out = {"size": size}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=g).to(dtype)
        b = torch.randn(size, size, generator=g).to(dtype)
        torch.mm(a, b)  # warm up (oneDNN picks its kernel)
        n = 0
        with Clock() as c:
            while True:
                torch.mm(a, b)
                n += 1
                if time.perf_counter() - c.w0 >= seconds and n >= 2:
                    break
        flops = 2 * size**3 * n
        out[name] = {"matmuls": n, "flop_per_cpu_s": flops / c.cpu, "flop_per_s": flops / c.wall}
    out["bf16_over_fp32"] = out["bf16"]["flop_per_cpu_s"] / out["fp32"]["flop_per_cpu_s"]
    return out


# ---------------------------------------------------------------------------- SFT


def _load_recipe(name: str):
    spec = importlib.util.spec_from_file_location("recipe_" + name.replace(".py", ""), REPO / "recipes" / name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _sft_cfg(steps: int, batch_size: int):
    r01 = _load_recipe("01_ssft.py")
    cfg = r01.Config(**r01.PRESETS["cpu"])
    cfg.max_steps, cfg.batch_size, cfg.save_steps, cfg.log_steps = steps, batch_size, 10**6, 5
    return r01, cfg


class _StepClock:
    def __init__(self):
        self.wall, self.cpu = [], []

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                outer._w, outer._c = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kw):
                outer.wall.append(time.perf_counter() - outer._w)
                outer.cpu.append(time.process_time() - outer._c)

        return CB()


def _count_tokens(trainer_obj) -> list[int]:
    """Wrap training_step to record each batch's non-padding tokens."""
    counts: list[int] = []
    orig = trainer_obj.training_step

    def step(model, inputs, *a, **k):
        counts.append(int(inputs["attention_mask"].sum()) if "attention_mask" in inputs
                      else int(inputs["input_ids"].numel()))
        return orig(model, inputs, *a, **k)

    trainer_obj.training_step = step
    return counts


def _sft_before(cfg, model, tok, records, ckpt_dir, callbacks):
    """01's trainer before this work (commit 7d3a07b): stock SFTTrainer (its fused LM head scores
    every position and computes entropy and token accuracy over the vocabulary at every step),
    peft's default fp32 LoRA weights, LoRA dropout 0.05, batches in random order."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mathlite import models, trainer

    args = SFTConfig(
        **trainer.common_training_args(ckpt_dir, lr=cfg.lr, batch_size=cfg.batch_size, grad_accum=1,
                                       max_steps=cfg.max_steps, epochs=1.0, seed=cfg.seed, save_steps=10**6,
                                       log_steps=cfg.log_steps),
        max_length=cfg.max_length, completion_only_loss=True, packing=False)
    sft = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tok,
                     peft_config=models.lora_config(cfg.lora_r, cfg.lora_alpha, 0.05), callbacks=list(callbacks))
    trainer.drop_printer(sft)
    return sft


def _summarize_steps(clock: _StepClock, tokens: list[int], warmup: int, flops_per_token: float, roof) -> dict:
    w, c, n = clock.wall[warmup:], clock.cpu[warmup:], tokens[warmup:len(clock.wall)]
    r = rate(sum(n), sum(w), sum(c), flops_per_token, roof)
    r.update(steps_timed=len(w), warmup_steps=warmup, step_cpu_s=[round(x, 2) for x in clock.cpu],
             tokens_per_step=tokens[: len(clock.wall)])
    return r


def bench_sft(args, roof: float | None) -> dict:
    import torch

    from mathlite import data, models

    steps = args.sft_steps + args.warmup
    r01, cfg = _sft_cfg(steps, args.batch_size)
    tok = models.load_tokenizer(cfg.model)
    problems = data.load_problems(cfg.data, "train", limit=args.sft_problems, seed=cfg.seed)
    records = data.prompt_completion_records(problems, tok, cfg.style)
    out: dict = {"config": {"steps_timed": args.sft_steps, "warmup": args.warmup, "batch_size": cfg.batch_size,
                            "train_problems": len(problems), "lr": cfg.lr, "lora_r": cfg.lora_r,
                            "lora_dropout_now": cfg.lora_dropout, "group_by_length": cfg.group_by_length}}
    batches = None
    params = None
    recipe_attn = None
    for rep in range(args.repeats):
        for variant in ("recipe_now", "plain_loop", "recipe_before"):
            if variant == "plain_loop" and batches is None:
                continue
            gc.collect()
            model = models.load_model(cfg.model, quant="none", for_training=True)
            params = params or sum(p.numel() for p in model.parameters())
            fpt = 6 * params
            with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
                if variant == "plain_loop":
                    res = _plain_sft_loop(model, cfg, batches, args.warmup, fpt, roof, recipe_attn)
                else:
                    clock = _StepClock()
                    build = r01.sft_trainer if variant == "recipe_now" else _sft_before
                    sft = build(cfg, model, tok, records, Path(tmp) / "ck", [clock.callback()])
                    if variant == "recipe_now":  # the plain loop replays exactly these batches
                        batches = [b for _, b in zip(range(steps), sft.get_train_dataloader())]
                        recipe_attn = sft.model.get_base_model().config._attn_implementation
                    counts = _count_tokens(sft)
                    sft.train()
                    res = _summarize_steps(clock, counts, args.warmup, fpt, roof)
                    res["lora_dtype"] = str(next(p.dtype for n, p in sft.model.named_parameters() if "lora_" in n))
                    res["attention"] = sft.model.get_base_model().config._attn_implementation
                    del sft
            res["loadavg"] = _loadavg()
            out.setdefault("runs", {}).setdefault(variant, []).append(res)
            print(f"[bench] sft {variant} (rep {rep + 1}): {res['tokens_per_cpu_s']:.0f} tok/CPU-s, "
                  f"{res['tokens_per_s']:.0f} tok/s wall, load {res['loadavg']}", flush=True)
            del model
    out["params"] = params
    _medians(out)
    torch.set_grad_enabled(True)
    return out


def _plain_sft_loop(model, cfg, batches, warmup: int, fpt: float, roof, recipe_attn: str | None = None) -> dict:
    """model(**batch).loss, backward, AdamW: what a hand-written loop does, same LoRA config."""
    import torch

    from mathlite import models, trainer

    torch.manual_seed(cfg.seed)
    if recipe_attn:  # the model as 01 configures it (eager attention on CPU), so only the loop differs
        model.set_attn_implementation(recipe_attn)
    model = trainer.lora_model(model, models.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    clock, tokens = _StepClock(), []
    for batch in batches:
        with Clock() as c:
            loss = model(**batch, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        clock.wall.append(c.wall)
        clock.cpu.append(c.cpu)
        tokens.append(int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel()))
    return _summarize_steps(clock, tokens, warmup, fpt, roof)


def _medians(out: dict) -> None:
    med = {}
    for variant, rs in out.get("runs", {}).items():
        med[variant] = {k: statistics.median(r[k] for r in rs) for k in ("tokens_per_cpu_s", "tokens_per_s")}
        shares = [r["roofline_share"] for r in rs if "roofline_share" in r]
        if shares:
            med[variant]["roofline_share"] = statistics.median(shares)
    out["median"] = med


# ---------------------------------------------------------------------------- sampling


def _baseline_engine_class():
    """mathlite.sampling.HFEngine's decode loop as it was before this work (commit 7d3a07b)."""
    import torch

    from mathlite import sampling

    class BaselineEngine(sampling.HFEngine):
        def run(self, units, on_step=None):  # as before: the model's own attention and a DynamicCache
            self._two_level = False
            with sampling.generation_mode(self.model), torch.inference_mode():
                return self._decode(units, on_step)

        def _decode(self, units, on_step):
            cfg, T = self.cfg, self.cfg.max_new_tokens
            index: dict = {}
            row_prompt = [index.setdefault(u.prompt_ids, len(index)) for u in units]
            prompts = list(index)
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
            attn = torch.zeros((len(prompts), width), dtype=torch.long)
            for r, p in enumerate(prompts):
                ids[r, width - len(p):] = torch.tensor(p)
                attn[r, width - len(p):] = 1
            pos = (attn.cumsum(-1) - 1).clamp_(min=0)
            cache = self._new_cache()
            logits = self._forward(ids, attn, pos, cache)
            if len(prompts) < len(units):
                rows = torch.tensor(row_prompt)
                cache.reorder_cache(rows)
                logits, attn, pos = logits[rows], attn[rows], pos[rows]
            next_pos = pos[:, -1:] + 1
            u_all = torch.zeros((len(units), T), dtype=torch.float32)
            for r, unit in enumerate(units):
                if unit.seed is not None:
                    u_all[r] = torch.rand(T, generator=torch.Generator().manual_seed(unit.seed))
            greedy_all = torch.tensor([u.seed is None for u in units])
            live = list(range(len(units)))
            done_in_batch: set[int] = set()
            gen: list[list[int]] = [[] for _ in units]
            finish: list = [None] * len(units)
            for t in range(T):
                live_t = torch.tensor(live)
                nxt = torch.empty(len(live), dtype=torch.long)
                greedy = greedy_all[live_t]
                if greedy.any():
                    nxt[greedy] = logits[greedy].argmax(-1)
                if not greedy.all():
                    s = ~greedy
                    nxt[s] = sampling._sample_rows(logits[s], u_all[live_t[s], t], cfg.temperature, cfg.top_p)
                for j, (r, tok) in enumerate(zip(live, nxt.tolist())):
                    if j in done_in_batch:
                        continue
                    gen[r].append(tok)
                    if tok in self.eos or (self.stop and self._stopped(gen[r])):
                        finish[r] = "eos"
                        done_in_batch.add(j)
                if len(done_in_batch) == len(live) or t == T - 1:
                    break
                if len(done_in_batch) >= max(1, 0.125 * len(live)):
                    keep = [j for j in range(len(live)) if j not in done_in_batch]
                    sel = torch.tensor(keep)
                    cache.reorder_cache(sel)
                    attn, next_pos, nxt = attn[sel], next_pos[sel], nxt[sel]
                    live, done_in_batch = [live[j] for j in keep], set()
                attn = torch.cat([attn, attn.new_ones((len(live), 1))], dim=-1)
                logits = self._forward(nxt.unsqueeze(-1), attn, next_pos, cache)
                next_pos = next_pos + 1
            results = []
            for r, toks in enumerate(gen):
                body = toks[:-1] if toks and toks[-1] in self.eos else toks
                text, cut = sampling._cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), self.stop)
                results.append(sampling.Generation(text, len(toks), "eos" if finish[r] or cut else "length"))
            return results

    return BaselineEngine


def _naive_generate(model, tok, units_by_problem, n: int, cfg) -> int:
    import torch

    from mathlite import sampling

    eos, tokens = tok.eos_token_id, 0
    with sampling.generation_mode(model), torch.inference_mode():
        for prompt_ids in units_by_problem:
            out = model.generate(input_ids=torch.tensor([list(prompt_ids)]), do_sample=True,
                                 temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
                                 max_new_tokens=cfg.max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tok.pad_token_id, eos_token_id=eos)
            for row in out[:, len(prompt_ids):].tolist():
                tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens


def bench_sampling(args, roof: float | None) -> dict:
    from mathlite import models, sampling, synthetic

    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    model = models.load_model(models.OFFLINE_MODEL, quant="none")
    params = sum(p.numel() for p in model.parameters())
    problems = synthetic.generate(args.sample_problems, seed=0)
    out: dict = {"config": {"problems": len(problems), "max_new_tokens": args.max_new_tokens,
                            "batch_size": args.sample_batch, "batch_size_before": args.sample_batch_before, "temperature": 0.9, "top_p": 0.95,
                            "greedy_row": True}, "params": params}
    Baseline = _baseline_engine_class()
    drawn: list = []  # (prompt, generated tokens) of engine_now's first batches: the decode floor's real logits
    for n in args.sample_n:
        cfg = sampling.SamplingConfig(n=n, max_new_tokens=args.max_new_tokens, temperature=0.9, top_p=0.95, seed=0)
        ids = {p.id: sampling._encode(tok, sampling._prompt_fn(tok, None, ())(p)) for p in problems}
        batch_of = {"engine_now": args.sample_batch, "engine_before": args.sample_batch_before}
        runs: dict = {}
        texts: dict = {}
        for rep in range(args.repeats):
            for variant in ("engine_now", "engine_before", "naive_generate"):
                if variant == "naive_generate" and rep > 0:
                    continue  # slow and far behind: once is enough
                with Clock() as c:
                    if variant == "naive_generate":
                        tokens = _naive_generate(model, tok, [ids[p.id] for p in problems], n, cfg)
                    else:
                        bs = batch_of[variant]  # each engine at its own default batch size
                        eng = (sampling.HFEngine if variant == "engine_now" else Baseline)(model, tok, cfg, batch_size=bs)
                        gens = []
                        for b in sampling.plan_batches(problems, ids, cfg, bs):
                            gens += eng.run(b)
                            if variant == "engine_now" and not drawn:  # one batch: rows x ~40 positions
                                drawn += [(u.prompt_ids, g.token_ids) for u, g in zip(b, gens[-len(b):])]
                        tokens = sum(g.tokens for g in gens)
                        texts.setdefault(variant, [g.text for g in gens])
                res = rate(tokens, c.wall, c.cpu, 2 * params, roof)
                res["loadavg"] = _loadavg()
                runs.setdefault(variant, []).append(res)
                print(f"[bench] sampling N={n} {variant} (rep {rep + 1}): {res['tokens_per_cpu_s']:.0f} tok/CPU-s, "
                      f"{res['tokens_per_s']:.0f} tok/s wall, load {res['loadavg']}", flush=True)
        now, before = texts.get("engine_now", []), texts.get("engine_before", [])
        block = {"runs": runs, "samples_identical_to_engine_before": sum(a == b for a, b in zip(now, before)),
                 "samples": len(now)}
        _medians(block)
        out[f"n{n}"] = block
    sizes = sorted({args.sample_batch, 2 * args.sample_batch, 4 * args.sample_batch})
    logits = drawn_logits(model, drawn, max(sizes))
    cache = mean_cache(drawn)
    out["decode_floor"] = {str(r): decode_floor(model, r, cfg, roof, 2 * params, logits, cache=cache,
                                                rows_per_prompt=cfg.n + 1) for r in sizes}
    return out


def mean_cache(drawn) -> tuple[int, int]:
    """(prompt, generated): the mean number of cached positions a decode step attends to over the drawn
    rows, split into the prompt's and the row's own: a row's step i (i = 0, 1, ...) reads its prompt
    and its first i generated tokens, plus the new one."""
    steps = [(len(prompt), i + 1) for prompt, toks in drawn for i in range(len(toks))]
    if not steps:
        return 1, 1
    return round(sum(p for p, _ in steps) / len(steps)), round(sum(g for _, g in steps) / len(steps))


def drawn_logits(model, drawn, rows: int):
    """The logits the engine drew its tokens from: (prompt, generated tokens) pairs run through the model
    again, the position before each generated token, up to `rows` rows (cycled if fewer)."""
    import torch

    got, n = [], 0
    with torch.inference_mode():
        for prompt, toks in drawn:
            if n >= rows:
                break
            if toks:
                ids = torch.tensor([list(prompt) + list(toks)])
                got.append(model(input_ids=ids).logits[0, len(prompt) - 1 : ids.shape[1] - 1].float())
                n += len(toks)
    logits = torch.cat(got)
    return logits.repeat((rows + len(logits) - 1) // len(logits), 1)[:rows]


def shared_prefix_attention(q, k_prompt, v_prompt, k_gen, v_gen, sizes: list[int]):
    """One-token attention where consecutive rows continue the same prompt: q (rows, hq, 1, d); the
    prompt's keys/values once per prompt, (prompts, hk, prompt, d); each row's own, (rows, hk, gen, d);
    sizes[j] rows continue prompt j. The prompts' part runs as one batched matmul over prompts, each with
    all its rows' query heads (rows x group per key/value head); prompts of one size go together.
    Returns (rows, hq, 1, d)."""
    import torch

    rows, hq, _, d = q.shape
    hk, n_prompt = k_prompt.shape[1], k_prompt.shape[2]
    grp = hq // hk
    out, a, j = [], 0, 0
    while a < rows:
        m = sizes[j]
        n = next((i for i in range(j, len(sizes)) if sizes[i] != m), len(sizes)) - j  # prompts of m rows from j
        qg = q[a : a + n * m].reshape(n, m, hk, grp, d)
        qp = qg.permute(0, 2, 1, 3, 4).reshape(n, hk, m * grp, d)  # per prompt and key/value head: all its queries
        sp = torch.matmul(qp, k_prompt[j : j + n].transpose(-1, -2)).reshape(n, hk, m, grp, n_prompt)
        sp = sp.permute(0, 2, 1, 3, 4).reshape(n * m, hk, grp, n_prompt)
        sg = torch.matmul(qg.reshape(n * m, hk, grp, d), k_gen[a : a + n * m].transpose(-1, -2))
        p = torch.softmax(torch.cat([sp, sg], dim=-1).float() * d ** -0.5, dim=-1).to(q.dtype)
        pp = p[..., :n_prompt].reshape(n, m, hk, grp, n_prompt).permute(0, 2, 1, 3, 4).reshape(n, hk, m * grp, n_prompt)
        o = torch.matmul(pp, v_prompt[j : j + n]).reshape(n, hk, m, grp, d).permute(0, 2, 1, 3, 4)
        out.append(o.reshape(n * m, hk, grp, d) + torch.matmul(p[..., n_prompt:], v_gen[a : a + n * m]))
        a, j = a + n * m, j + n
    return torch.cat(out).reshape(rows, hq, 1, d)


def decode_floor(model, rows: int, cfg, roof: float | None, flops_per_token: float, logits, steps: int = 6,
                 cache: tuple[int, int] | None = None, rows_per_prompt: int = 1) -> dict:
    """The least one decode step of `rows` one-token rows must do, each part timed alone:

      matmuls     every decoder layer's q/k/v/o projections and MLP, and the LM head
      attention   (with `cache` = (prompt, generated) cached positions) each layer's one-token queries
                  against their cached keys and values, the fastest of three ways: PyTorch's fused SDPA
                  (grouped-query), one matmul per key/value head for its group of query heads (as the
                  engine does), and that with the prompt's keys and values shared by the
                  `rows_per_prompt` rows that continue it (one matmul for all their queries; the engine
                  copies the prompt's cache to each row). Contiguous caches, no mask.
      normalizer  one log-sum-exp over each row's full-vocabulary logits: an exact temperature / top-p
                  draw cannot know a token's probability without it
      top_p       the engine's own top-p draw and its log-normalizer for the token log-probs, on the
                  `logits` the engine really drew from (drawn_logits: random hidden states give flat
                  logits, and top-p then sorts the whole vocabulary)

    Reported as "matmuls", "with_top_p" (matmuls + top_p), and with `cache` also "least_work" (matmuls
    + attention + normalizer: what every engine must do, however written) and "with_attention_and_top_p".
    No norms, rotary, cache writes, prefill or Python: no engine at this batch size generates tokens
    faster than "least_work", so least_work / engine_before bounds any sampling speed-up from above."""
    import torch
    import torch.nn.functional as F

    from mathlite import sampling

    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, model.config.hidden_size, generator=g).to(model.dtype)
    u = torch.rand(rows, generator=g)
    logits = logits[:rows]
    c = model.config
    hq, hk = c.num_attention_heads, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    d = getattr(c, "head_dim", None) or c.hidden_size // hq
    grp = hq // hk

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(model.dtype)

    if cache:
        n_prompt, n_gen = cache
        q = rand(rows, hq, 1, d)
        kv = [rand(rows, hk, n_prompt + n_gen, d) for _ in range(2)]
        per = max(1, min(rows_per_prompt, rows))
        sizes = [per] * (rows // per) + ([rows % per] if rows % per else [])  # the rows of each prompt
        kv_prompt = [rand(len(sizes), hk, n_prompt, d) for _ in range(2)]
        kv_gen = [rand(rows, hk, n_gen, d) for _ in range(2)]

    def attention_sdpa():
        for _ in model.model.layers:
            F.scaled_dot_product_attention(q, kv[0], kv[1], enable_gqa=hq != hk)

    def grouped(qg, k, v):  # each key/value head against its group of query heads: one matmul per side
        s = torch.matmul(qg, k.transpose(-1, -2)).float() * d ** -0.5
        return torch.matmul(torch.softmax(s, dim=-1).to(v.dtype), v)

    def attention_grouped():
        for _ in model.model.layers:
            grouped(q.reshape(rows, hk, grp, d), kv[0], kv[1])

    def attention_shared():
        for _ in model.model.layers:
            shared_prefix_attention(q, *kv_prompt, *kv_gen, sizes)

    def matmuls():
        for layer in model.model.layers:
            a = layer.self_attn
            a.q_proj(x), a.k_proj(x), a.v_proj(x), a.o_proj(x)
            layer.mlp(x)
        return model.lm_head(x).float()

    def normalizer():
        torch.logsumexp(logits, -1)

    def top_p():
        sampling._sample_rows(logits, u, cfg.temperature, cfg.top_p), torch.logsumexp(logits, -1)

    parts = {"matmuls": matmuls, "top_p": top_p}
    if cache:
        parts.update(attention_sdpa=attention_sdpa, attention_grouped=attention_grouped,
                     attention_shared=attention_shared, normalizer=normalizer)
    clocks = {}
    with torch.inference_mode():
        for name, step in parts.items():
            step()  # warm up
            with Clock() as clock:
                for _ in range(steps):
                    step()
            clocks[name] = clock
    ways = ("sdpa", "grouped", "shared")
    if cache:  # the fastest way (on some CPUs SDPA's one-token-query kernel is ~10x slower)
        fastest = min((f"attention_{w}" for w in ways), key=lambda n: clocks[n].cpu)
        clocks["attention"] = clocks[fastest]

    def combined(*names):
        return rate(rows * steps, sum(clocks[n].wall for n in names), sum(clocks[n].cpu for n in names),
                    flops_per_token, roof)

    out = {"matmuls": combined("matmuls"), "with_top_p": combined("matmuls", "top_p")}
    if cache:
        out["least_work"] = combined("matmuls", "attention", "normalizer")
        out["with_attention_and_top_p"] = combined("matmuls", "attention", "top_p")
        out["cache"] = {"prompt": cache[0], "generated": cache[1], "rows_per_prompt": per}
        out["attention_cpu_s"] = {w: clocks[f"attention_{w}"].cpu for w in ways}
    for name, r in out.items():
        if isinstance(r, dict) and "tokens_per_cpu_s" in r:
            print(f"[bench] decode floor, {rows} rows, {name}: {r['tokens_per_cpu_s']:.0f} tok/CPU-s", flush=True)
    return out


def forward_floor(model, rows: int, useful: float, roof: float | None, flops_per_token: float, steps: int = 3) -> dict:
    """The least a scoring batch must do: every decoder layer's linear layers (q/k/v/o, gate/up/down
    projections) on `rows` token rows (a batch's tokens, padding included), timed alone; `useful` of
    those rows are real tokens. "with_lora": the layers as the evaluator runs them, LoRA adapters
    included; "merged": the base layers only, as if the adapters were merged into them. No attention,
    norms, activations, embeddings or head (one row per solution: negligible). Batching cannot score
    faster than "merged", so merged / batch1 bounds the batching speed-up from above."""
    import torch

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, rows, lm.config.hidden_size, generator=g).to(lm.dtype)
    h = torch.randn(1, rows, lm.config.intermediate_size, generator=g).to(lm.dtype)

    def linears(merged: bool):
        for layer in lm.model.layers:
            a, m = layer.self_attn, layer.mlp
            for mod, inp in ((a.q_proj, x), (a.k_proj, x), (a.v_proj, x), (a.o_proj, x), (m.gate_proj, x),
                             (m.up_proj, x), (m.down_proj, h)):
                (getattr(mod, "base_layer", mod) if merged else mod)(inp)

    was_training = model.training
    model.eval()  # as Evaluator.logits runs it: no LoRA dropout
    out: dict = {"rows": rows, "useful_rows": useful}
    try:
        with torch.inference_mode():
            for name, merged in (("with_lora", False), ("merged", True)):
                linears(merged)  # warm up
                with Clock() as c:
                    for _ in range(steps):
                        linears(merged)
                out[name] = rate(useful * steps, c.wall, c.cpu, flops_per_token, roof)
                print(f"[bench] forward floor, {rows} rows ({useful:.0f} real tokens), {name}: "
                      f"{out[name]['tokens_per_cpu_s']:.0f} tok/CPU-s", flush=True)
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------- evaluator


def _scoring_texts(n: int):
    from mathlite import data, models

    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    problems = data.load_problems("synthetic:levels=1-3", "train", limit=n, seed=1)
    recs = data.prompt_completion_records(problems, tok, "steps")[:n]
    qs = {p.id: p.question for p in problems}
    questions = [p.question for p in problems][: len(recs)]
    return tok, questions, [r["completion"] for r in recs], qs


def bench_scoring(args, roof: float | None) -> dict:
    from mathlite import evaluator, models

    tok, questions, solutions, _ = _scoring_texts(args.score_n)
    out: dict = {"config": {"solutions": len(solutions), "batch_size": args.score_batch}}
    for kind in ("head", "verbal"):
        base = models.load_model(models.OFFLINE_MODEL, quant="none", task="seq_cls" if kind == "head" else "causal")
        params = sum(p.numel() for p in base.parameters())
        ev = evaluator.Evaluator.create(base, kind, tokenizer=tok, seed=0)
        encoded = [ev.encode(q, s) for q, s in zip(questions, solutions)]
        tokens = sum(len(e) for e in encoded)
        runs: dict = {}
        for rep in range(args.repeats):
            for variant, bs in (("batched", args.score_batch), ("batch1", 1)):
                with Clock() as c:
                    z = ev.logits(encoded, batch_size=bs)
                res = rate(tokens, c.wall, c.cpu, 2 * params, roof)
                res["loadavg"] = _loadavg()
                runs.setdefault(variant, []).append(res)
                runs.setdefault("_z", {})[variant] = z
                print(f"[bench] scoring {kind} {variant} (rep {rep + 1}): {res['tokens_per_cpu_s']:.0f} tok/CPU-s, "
                      f"load {res['loadavg']}", flush=True)
        zs = runs.pop("_z")
        block = {"runs": runs, "params": params,
                 "max_abs_z_diff_batched_vs_batch1": max(abs(a - b) for a, b in zip(zs["batched"], zs["batch1"]))}
        _medians(block)
        lengths = sorted((len(e) for e in encoded), reverse=True)  # Evaluator.logits: longest first
        batches = [lengths[i : i + args.score_batch] for i in range(0, len(lengths), args.score_batch)]
        padded = round(sum(len(b) * b[0] for b in batches) / len(batches))
        block["forward_floor"] = forward_floor(ev.model, padded, tokens / len(batches), roof, 2 * params)
        out[kind] = block
        del ev, base
        gc.collect()
    return out


def bench_evaluator_train(args, roof: float | None) -> dict:
    import torch
    import torch.nn.functional as F

    from mathlite import evaluator, models

    tok, questions, solutions, _ = _scoring_texts(args.etrain_n)
    examples = [{"problem_id": f"p{i // 2}", "question": q, "solution": s, "label": i % 2}
                for i, (q, s) in enumerate(zip(questions, solutions))]
    steps = args.etrain_steps + args.warmup
    out: dict = {"config": {"examples": len(examples), "steps_timed": args.etrain_steps, "warmup": args.warmup,
                            "batch_size": args.batch_size, "kind": "head", "loss": "pointwise"}}
    runs: dict = {}
    for rep in range(args.repeats):
        # train_evaluator, timed per step by a callback
        base = models.load_model(models.OFFLINE_MODEL, quant="none", task="seq_cls")
        params = sum(p.numel() for p in base.parameters())
        clock = _StepClock()
        tokens: list[int] = []
        batches: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="bench_etrain_") as tmp:
            orig = evaluator._make_scorer_trainer_class

            def patched():
                cls = orig()

                class Counting(cls):
                    def training_step(self, model, inputs, *a, **k):
                        tokens.append(int(inputs["attention_mask"].sum()))
                        batches.append({k2: v.clone() for k2, v in inputs.items()})
                        return super().training_step(model, inputs, *a, **k)

                return Counting

            evaluator._make_scorer_trainer_class = patched
            try:
                evaluator.train_evaluator(base, examples, "head", "pointwise", out_dir=Path(tmp) / "ev", lr=1e-3,
                                          max_steps=steps, batch_size=args.batch_size, max_length=512,
                                          tokenizer=tok, callbacks=[clock.callback()], log_steps=5)
            finally:
                evaluator._make_scorer_trainer_class = orig
        res = _summarize_steps(clock, tokens, args.warmup, 6 * params, roof)
        res["loadavg"] = _loadavg()
        runs.setdefault("train_evaluator", []).append(res)
        print(f"[bench] evaluator_train train_evaluator (rep {rep + 1}): {res['tokens_per_cpu_s']:.0f} tok/CPU-s",
              flush=True)
        del base
        gc.collect()
        # the plain loop over the same batches
        base = models.load_model(models.OFFLINE_MODEL, quant="none", task="seq_cls")
        ev = evaluator.Evaluator.create(base, "head", tokenizer=tok, seed=0, trainable=True)
        ev.model.train()
        opt = torch.optim.AdamW([p for p in ev.model.parameters() if p.requires_grad], lr=1e-3)
        pclock = _StepClock()
        for b in batches:
            with Clock() as c:
                z = evaluator.batch_logits("head", ev.model, b["input_ids"], b["attention_mask"], ev.verdict_ids)
                F.binary_cross_entropy_with_logits(z, b["labels"].float()).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            pclock.wall.append(c.wall)
            pclock.cpu.append(c.cpu)
        res = _summarize_steps(pclock, tokens, args.warmup, 6 * params, roof)
        res["loadavg"] = _loadavg()
        runs.setdefault("plain_loop", []).append(res)
        print(f"[bench] evaluator_train plain_loop (rep {rep + 1}): {res['tokens_per_cpu_s']:.0f} tok/CPU-s", flush=True)
        del ev, base
        gc.collect()
    out["runs"] = runs
    _medians(out)
    return out


# ---------------------------------------------------------------------------- table


def goal_rows(result: dict) -> list[dict]:
    """One row per (stage, baseline): tokens per CPU-second of both, their ratio, the goal, met?"""
    rows = []
    blocks = {"sft": (result.get("sft"), "recipe_now"),
              "evaluator_train": (result.get("evaluator_train"), "train_evaluator")}
    goals = dict(GOALS)
    for key in (result.get("sampling") or {}):
        if key.startswith("n") and key[1:].isdigit():
            blocks[f"sampling_{key}"] = (result["sampling"][key], "engine_now")
            goals.setdefault(f"sampling_{key}", [("engine_before", None), ("naive_generate", None)])
    for kind in ("head", "verbal"):
        blocks[f"scoring_{kind}"] = ((result.get("scoring") or {}).get(kind), "batched")
    for stage, stage_goals in goals.items():
        if stage not in blocks:
            continue
        block, ours = blocks[stage]
        med = (block or {}).get("median") or {}
        if ours not in med:
            continue
        for base, goal in stage_goals:
            if base not in med:
                continue
            ratio = med[ours]["tokens_per_cpu_s"] / med[base]["tokens_per_cpu_s"]
            rows.append({"stage": stage, "ours": ours, "baseline": base,
                         "tokens_per_cpu_s": med[ours]["tokens_per_cpu_s"],
                         "baseline_tokens_per_cpu_s": med[base]["tokens_per_cpu_s"],
                         "ratio": ratio, "goal": goal, "met": None if goal is None else ratio >= goal,
                         "roofline_share": med[ours].get("roofline_share"),
                         "baseline_roofline_share": med[base].get("roofline_share")})
            share = rows[-1]["baseline_roofline_share"]
            # the most any change could give: ours at 100% of the measured bf16 matmul rate
            rows[-1]["ceiling_ratio"] = 1 / share if share else None
            fwd = (block or {}).get("forward_floor") if stage.startswith("scoring") else None
            if fwd:  # a tighter bound: the batch's linear layers alone
                rows[-1]["forward_floor_ratio"] = {k: fwd[k]["tokens_per_cpu_s"] / med[base]["tokens_per_cpu_s"]
                                                   for k in ("with_lora", "merged")}
                rows[-1]["forward_floor_rows"] = fwd["rows"]
                rows[-1]["ceiling_ratio"] = min(rows[-1]["ceiling_ratio"] or float("inf"),
                                                rows[-1]["forward_floor_ratio"]["merged"])
            floor = (result.get("sampling") or {}).get("decode_floor") if stage.startswith("sampling") else None
            if floor:  # a tighter bound: the least work of a decode step, at the best batch size timed
                bound = "least_work" if all("least_work" in f for f in floor.values()) else "matmuls"
                best = max(floor, key=lambda r: floor[r][bound]["tokens_per_cpu_s"])
                rows[-1]["decode_floor_rows"] = int(best)
                rows[-1]["decode_floor_bound"] = bound
                rows[-1]["decode_floor_ratio"] = {k: v["tokens_per_cpu_s"] / med[base]["tokens_per_cpu_s"]
                                                  for k, v in floor[best].items() if isinstance(v, dict) and "tokens_per_cpu_s" in v}
                if "cache" in floor[best]:
                    rows[-1]["decode_floor_cache"] = floor[best]["cache"]
                rows[-1]["ceiling_ratio"] = min(rows[-1]["ceiling_ratio"] or float("inf"),
                                                rows[-1]["decode_floor_ratio"][bound])
    return rows


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(140, Console().width))
    roof = result.get("roofline") or {}
    title = "throughput per CPU-second, ratio to a baseline from the same run"
    if roof.get("bf16"):
        title += (f" (bf16 matmul roofline {roof['bf16']['flop_per_cpu_s'] / 1e9:.0f} GFLOP/CPU-s, "
                  f"fp32 {roof['fp32']['flop_per_cpu_s'] / 1e9:.0f})")
    t = Table(title=title, show_lines=False)
    for col in ("stage", "ours", "baseline", "tok/CPU-s", "baseline tok/CPU-s", "ratio", "goal", "met",
                "roofline share (ours / baseline)", "ceiling"):
        t.add_column(col, justify="left" if col in ("stage", "ours", "baseline", "met") else "right")
    for r in result.get("goals", []):
        share = "-"
        if r.get("roofline_share") is not None:
            share = f"{100 * r['roofline_share']:.1f}% / {100 * (r.get('baseline_roofline_share') or 0):.1f}%"
        t.add_row(r["stage"], r["ours"], r["baseline"], f"{r['tokens_per_cpu_s']:.0f}",
                  f"{r['baseline_tokens_per_cpu_s']:.0f}", f"{r['ratio']:.2f}x",
                  "-" if r["goal"] is None else f">= {r['goal']}x",
                  "-" if r["met"] is None else ("yes" if r["met"] else "NO"), share,
                  f"{r['ceiling_ratio']:.1f}x" if r.get("ceiling_ratio") else "-")
    console.print(t)
    for r in result.get("goals", []):
        if r.get("decode_floor_ratio") and r["goal"] is not None:
            f = r["decode_floor_ratio"]
            line = (f"{r['stage']}: a decode step at {r['decode_floor_rows']} rows, each part timed alone, against "
                    f"{r['baseline']}'s tokens per CPU-second: matmuls {f['matmuls']:.2f}x, + the engine's top-p draw "
                    f"{f['with_top_p']:.2f}x")
            if "least_work" in f:
                cache = r.get("decode_floor_cache") or {}
                line += (f"; + attention over {cache.get('prompt')} prompt and {cache.get('generated')} generated "
                         "cached positions (the fastest way timed) and one log-normalizer, the least work of any "
                         f"exact sampler: {f['least_work']:.2f}x (with the engine's draw instead "
                         f"{f['with_attention_and_top_p']:.2f}x)")
            console.print(line + f": the ceiling for any engine is {r['ceiling_ratio']:.2f}x", highlight=False)
    for r in result.get("goals", []):
        if r.get("forward_floor_ratio") and r["goal"] is not None:
            f = r["forward_floor_ratio"]
            console.print(f"{r['stage']}: a scoring batch's linear layers alone ({r['forward_floor_rows']} token rows) "
                          f"run at {f['with_lora']:.2f}x {r['baseline']}'s tokens per CPU-second with their LoRA "
                          f"adapters, {f['merged']:.2f}x as if merged: the ceiling for any batching is "
                          f"{r['ceiling_ratio']:.2f}x", highlight=False)
    if result.get("peak_rss_01"):
        console.print(f"peak RSS of 01: {result['peak_rss_01']}", highlight=False)
    console.print(f"threads {result['threads']}; load average {result['loadavg_start']} at start, "
                  f"{result.get('loadavg_end')} at end on {result['machine'].get('cpus')} CPUs (shared machine: "
                  "ratios come from the same run, by CPU time)", highlight=False)


def merge(paths: list[Path], out_path: Path) -> int:
    """One result from several partial ones (stages run as parallel processes, one thread each:
    on a shared machine this gets the run more CPU; each ratio still comes from one process)."""
    import json

    from mathlite import runs

    parts = [json.loads(p.read_text()) for p in paths]
    result = {k: v for k, v in parts[0].items() if k not in STAGES}
    result.update(merged_from=[str(p) for p in paths], stages=[], loadavg_start=[d.get("loadavg_start") for d in parts],
                  loadavg_end=[d.get("loadavg_end") for d in parts], total_s=[d.get("total_s") for d in parts],
                  roofline_per_part=[d.get("roofline") for d in parts])
    for d in parts:
        if d.get("partial"):
            raise SystemExit(f"{d.get('stages')}: an unfinished result (partial); rerun it")
        for stage in STAGES[1:]:
            if stage in d:  # sampling at N=8 and N=16 may come from two parts
                result.setdefault(stage, {}).update(d[stage])
                result["stages"] += [] if stage in result["stages"] else [stage]
    result["goals"] = []
    for d in parts:
        result["goals"] += goal_rows(d)
    runs.atomic_write_json(out_path, result)
    print_table(result)
    print(f"[bench] wrote {out_path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(STAGES)}")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run (results under bench/results/quick/)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see the module docstring)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each variant (medians)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--sft-steps", type=int, default=12, help="timed steps a variant (6 read +-10%% run to run)")
    ap.add_argument("--sft-problems", type=int, default=400)
    ap.add_argument("--sample-problems", type=int, default=32)
    ap.add_argument("--sample-n", default="8,16")
    ap.add_argument("--sample-batch", type=int, default=136, help="02's batch_size now (cpu preset)")
    ap.add_argument("--sample-batch-before", type=int, default=72, help="02's batch_size before")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--score-n", type=int, default=96)
    ap.add_argument("--score-batch", type=int, default=16, help="04's batch_size")
    ap.add_argument("--etrain-n", type=int, default=96)
    ap.add_argument("--etrain-steps", type=int, default=6)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                    help="combine the stages of result files written by parallel --only runs into --out "
                         "(each stage keeps its own baseline from its own run) and print the table")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.sft_steps, args.batch_size, args.sft_problems = 1, 2, 4, 40
        args.sample_problems, args.sample_n, args.max_new_tokens, args.sample_batch = 2, "2", 16, 6
        args.score_n, args.score_batch, args.etrain_n, args.etrain_steps = 8, 4, 16, 2
    args.sample_n = [int(x) for x in str(args.sample_n).split(",") if x]
    stages = [s.strip() for s in args.only.split(",")] if args.only else list(STAGES)
    bad = [s for s in stages if s not in STAGES]
    if bad:
        ap.error(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    out_path = args.out or (REPO / "bench" / "results" / ("quick" if args.quick else "") / "throughput.json")

    if args.merge:
        return merge(args.merge, out_path)
    warnings.filterwarnings("ignore")
    import torch

    from mathlite import runs, trainer

    trainer.quiet_libraries()
    torch.set_num_threads(args.threads)
    result: dict = {"benchmark": "throughput", "quick": args.quick, "stages": stages, "threads": args.threads,
                    "machine": runs.machine(), "versions": runs.versions(), "git_commit": runs.git_commit(),
                    "loadavg_start": _loadavg(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "note": "shared 2-core machine: ratios are from the same run, by process CPU time"}
    t0 = time.perf_counter()
    result["roofline"] = matmul_roofline(1024 if args.quick else 2048, 0.5 if args.quick else 2.0)
    roof = result["roofline"]["bf16"]["flop_per_cpu_s"]
    print(f"[bench] bf16 matmul {roof / 1e9:.0f} GFLOP/CPU-s, fp32 "
          f"{result['roofline']['fp32']['flop_per_cpu_s'] / 1e9:.0f} ({args.threads} thread(s))", flush=True)
    for stage, fn in (("sft", bench_sft), ("sampling", bench_sampling), ("scoring", bench_scoring),
                      ("evaluator_train", bench_evaluator_train)):
        if stage in stages:
            result[stage] = fn(args, roof)
            result["goals"] = goal_rows(result)
            runs.atomic_write_json(out_path, {**result, "partial": True})
    result["goals"] = goal_rows(result)
    result["loadavg_end"] = _loadavg()
    result["total_s"] = round(time.perf_counter() - t0, 1)
    runs.atomic_write_json(out_path, result)
    print_table(result)
    print(f"[bench] wrote {out_path} in {result['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
