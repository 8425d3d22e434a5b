"""Where the CPU sampling engine's time goes, and what a larger batch does to it (the README's profile
under "Throughput").

    python bench/profile_sampling.py      # ~5 min on 2 cores; writes bench/results/sampling_profile.json

1. `torch.profiler` over one batch of 136 rows (8 synthetic problems x (greedy + 16 samples), 96 new
   tokens, the offline SmolLM2-135M in bf16): each op's share of the CPU time.
2. mathlite.sampling.HFEngine on 60 problems x (greedy + 8) at 136 and at 544 rows a batch: tokens per
   second, the time inside the model's forward and the mean number of rows per decode step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from mathlite import files, models, sampling, synthetic

OUT = Path(__file__).resolve().parent / "results" / "sampling_profile.json"


def _engine_run(model, tok, problems, n: int, batch: int) -> dict:
    cfg = sampling.SamplingConfig(n=n, max_new_tokens=96, temperature=0.9, top_p=0.95, seed=0)
    ids = {p.id: sampling._encode(tok, sampling._prompt_fn(tok, None, ())(p)) for p in problems}
    eng = sampling.HFEngine(model, tok, cfg, batch_size=batch)
    inner, seen = eng._forward, {"s": 0.0, "decode_steps": 0, "decode_rows": 0}

    def timed(ids_, attn, pos, cache):
        t = time.perf_counter()
        out = inner(ids_, attn, pos, cache)
        seen["s"] += time.perf_counter() - t
        if ids_.shape[1] == 1:
            seen["decode_steps"] += 1
            seen["decode_rows"] += ids_.shape[0]
        return out

    eng._forward = timed
    w0, c0 = time.perf_counter(), time.process_time()
    gens = [g for b in sampling.plan_batches(problems, ids, cfg, batch) for g in eng.run(b)]
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    tokens = sum(g.tokens for g in gens)
    return {"rows_per_batch": batch, "tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "tokens_per_cpu_s": round(tokens / cpu, 1), "forward_share_of_wall": round(seen["s"] / wall, 3),
            "mean_rows_per_decode_step": round(seen["decode_rows"] / max(1, seen["decode_steps"]), 1)}


def main() -> None:
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(2)
    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    model = models.load_model(models.OFFLINE_MODEL, quant="none")
    out: dict = {"threads": 2, "machine": files.machine()}
    cfg = sampling.SamplingConfig(n=16, max_new_tokens=96, temperature=0.9, top_p=0.95, seed=0)
    problems = synthetic.generate(8, seed=0)
    ids = {p.id: sampling._encode(tok, sampling._prompt_fn(tok, None, ())(p)) for p in problems}
    batch = sampling.plan_batches(problems, ids, cfg, 136)[0]
    eng = sampling.HFEngine(model, tok, cfg, batch_size=136)
    eng.run(batch)  # warm up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        eng.run(batch)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    out["profile_rows"] = len(batch)
    out["profile_self_cpu_share"] = {e.key: round(e.self_cpu_time_total / total, 4) for e in events[:25]}
    out["profile_calls"] = {e.key: e.count for e in events[:25]}
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    problems = synthetic.generate(60, seed=0)
    out["batch_size"] = [_engine_run(model, tok, problems, 8, b) for b in (136, 544)]
    for r in out["batch_size"]:
        print(r)
    files.atomic_write_json(OUT, out)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
