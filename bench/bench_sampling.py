"""Sampler throughput on CPU: mathlite.sampling vs a naive `generate` baseline.

    python bench/bench_sampling.py                       # 8 problems x N=8, 96 new tokens
    python bench/bench_sampling.py --repeats 3 --threads 1

Same model (the offline SmolLM2-135M, bf16), same prompts, same max_new_tokens, same
stop condition (EOS; the chat template needs no stop string), same top-p/temperature.

- naive: one `model.generate(num_return_sequences=N)` per problem (batch = N rows of
  one problem, no batching across problems), HF's own top-p;
- ours: `sampling.sample_problems` (batches across problems, shared prefill, finished
  rows dropped, top-k-first top-p), grading and fsync'ed JSONL writes included;
- ours without shared prefill, to see what sharing the prompt's prefill buys.

tokens/s counts generated tokens only, up to and including EOS. Runs are interleaved
(naive, ours, ours-noshare, naive, ...) so that a neighbour's load on a shared machine
hits all of them alike; medians are reported. Writes bench/results/sampling_cpu.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mathlite import data, models, runs, sampling, synthetic

ROOT = Path(__file__).resolve().parents[1]


def naive(model, tok, prompts: list[str], n: int, max_new_tokens: int, temperature: float, top_p: float) -> int:
    """Per-problem generate(num_return_sequences=n); returns generated tokens up to EOS."""
    eos = tok.eos_token_id
    tokens = 0
    with sampling.generation_mode(model), torch.inference_mode():
        for prompt in prompts:
            enc = tok(prompt, return_tensors="pt", add_special_tokens=not (tok.bos_token and prompt.startswith(tok.bos_token)))
            out = model.generate(
                **enc, do_sample=True, temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
                num_return_sequences=n, pad_token_id=tok.pad_token_id, eos_token_id=eos,
            )
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens


def ours(model, tok, problems, cfg: sampling.SamplingConfig, batch_size: int, share_prefill: bool) -> int:
    with tempfile.TemporaryDirectory() as d:
        s = sampling.sample_problems(model, tok, problems, Path(d) / "s.jsonl", cfg, batch_size=batch_size,
                                     share_prefill=share_prefill, progress=False)
    return s["session_tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--no-noshare", action="store_true", help="skip the run without shared prefill")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sampling_cpu.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    console = Console()
    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    model = models.load_model(models.OFFLINE_MODEL, quant="none")
    problems = synthetic.generate(args.problems, seed=0)
    prompts = [data.build_prompt(tok, p.question) for p in problems]
    cfg = sampling.SamplingConfig(n=args.n, greedy=False, max_new_tokens=args.max_new_tokens, temperature=0.9, top_p=0.95, seed=0)
    prompt_lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    console.print(f"[bold]{args.problems} problems x N={args.n}, max_new_tokens={args.max_new_tokens}, "
                  f"prompts {min(prompt_lens)}-{max(prompt_lens)} tokens, {torch.get_num_threads()} threads")

    variants = {
        "naive generate": lambda: naive(model, tok, prompts, args.n, args.max_new_tokens, cfg.temperature, cfg.top_p),
        "mathlite.sampling": lambda: ours(model, tok, problems, cfg, args.batch_size, True),
    }
    if not args.no_noshare:
        variants["mathlite.sampling, no shared prefill"] = lambda: ours(model, tok, problems, cfg, args.batch_size, False)
    runs_: dict[str, list[dict]] = {k: [] for k in variants}
    loads = [os.getloadavg()[0]]
    torch.manual_seed(0)
    for rep in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.time()
            tokens = fn()
            seconds = time.time() - t0
            runs_[name].append({"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2)})
            loads.append(os.getloadavg()[0])
            console.print(f"  [{rep + 1}/{args.repeats}] {name}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s")

    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs_.items()}
    base = med["naive generate"]
    table = Table(title="sampling throughput (CPU)", title_justify="left")
    table.add_column("sampler")
    table.add_column("tokens/s", justify="right")
    table.add_column("vs naive", justify="right")
    for name, v in med.items():
        table.add_row(name, f"{v:.1f}", f"[bold]{v / base:.2f}x[/]")
    console.print(table)

    result = {
        "benchmark": "sampling_cpu",
        "setup": {"model": models.OFFLINE_MODEL, "dtype": "bfloat16", "problems": args.problems, "n": args.n,
                  "max_new_tokens": args.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
                  "batch_size": args.batch_size, "prompt_tokens": prompt_lens, "repeats": args.repeats,
                  "threads": torch.get_num_threads(), "stop": "EOS only (chat template)",
                  "tokens": "generated tokens up to and including EOS"},
        "runs": runs_,
        "median_tokens_per_s": {k: round(v, 2) for k, v in med.items()},
        "speedup_vs_naive": {k: round(v / base, 2) for k, v in med.items()},
        "load_average_1min": loads,  # the machine may be shared: read the numbers with this
        "machine": runs.machine(),
        "versions": runs.versions(),
        "git_commit": runs.git_commit(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    runs.atomic_write_json(args.out, result)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
