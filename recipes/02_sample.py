"""Step 2: sample N solutions per problem and grade them (the paper: N=64, top-p 0.95, temperature 0.9).

The train-split samples become the evaluator's training data (03); the test-split samples
are what voting and re-ranking choose from (04). Every sample is graded on the spot
(extracted answer, is_equiv to the gold answer, tokens, finish reason).

    python recipes/02_sample.py                          # the SSFT adapter of runs/<preset>
    python recipes/02_sample.py --preset smoke
    python recipes/02_sample.py --fewshot 4 --adapter none   # the paper's few-shot baseline (base model)
    python recipes/02_sample.py --n 64 --splits test --test_problems 500

Interrupted (even kill -9)? Rerun the same command: it continues where it stopped, and never
mixes samples of two configurations in one file (a changed config is refused).
Time: cpu preset (135M, 2 cores) measured 1.4 min for 120 + 60 problems x 9 solutions (bench/results/cpu_chain);
powered preset 9.1-9.8 min for 200 + 500 problems x 17 (bench/results/powered); a100 preset (7B 4-bit,
HF backend) is dominated by 500 x 64 x ~400 tokens; with vLLM installed it is used automatically.
Writes runs/<preset>/samples/samples-{train,test}.jsonl (+ .problems.jsonl, .meta.json) and summary.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# light imports only: a bad flag or path is reported in seconds (transformers loads after the checks)
from mathlite import data, generator, models, runs, samples, sampling
from mathlite.stage import Stage


@dataclass
class Config:
    model: str = ""  # default: the model the SSFT run trained
    adapter: str = ""  # default: <run>/ssft/adapter; "none" = the base model alone
    fewshot: int = 0  # k worked examples in the prompt (the paper's few-shot baseline, Table 5)
    fewshot_style: Literal["math", "steps"] = "steps"  # math (terse) | steps (one step per line)
    data: str = ""  # default: the SSFT run's data
    splits: tuple[Literal["train", "test", "val"], ...] = ("train", "test")
    train_problems: int = 60  # train-split problems; their samples train the evaluator
    test_problems: int = 60  # test-split problems; at 60, accuracy is known to about +-6 points
    val_problems: int = 200  # val-split problems (when the SSFT run kept some out of training: its val_size)
    n: int = 8  # sampled solutions per problem (paper: 64)
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 160
    batch_size: int = 72  # sequences per forward pass; lower it on an out-of-memory
    backend: Literal["auto", "hf", "vllm"] = "auto"  # auto: vLLM when it is installed and a GPU is present, else transformers | hf | vllm
    seed: int = 0  # the samples' random draws
    problem_seed: int = 0  # which problems (a seeded subset): kept apart from `seed`, so that runs of several seeds are paired on the same problems
    features: bool = False  # keep the hidden states behind each sample (for 03 --kind probe; transformers engine only)
    out: str = ""  # default: <run>/samples (few-shot: <run>/samples-fewshot<k>)
    run: str = ""
    preset: str = ""


PRESETS = {
    "smoke": dict(train_problems=4, test_problems=4, n=2, max_new_tokens=32, batch_size=16),
    "cpu": dict(train_problems=120, batch_size=136),  # 136 = 8 problems x 17 at N=16: 1.3x the tok/s of 72 on 2 cores
    # powered: 500 test problems x 16, and the 200 problems the SSFT run kept out of training ("val") x 16 for
    # the probe evaluator; max_new_tokens 96: of the cpu chain's 540 test samples, 1 ran past 96 tokens and none reached 160
    "powered": dict(splits=("val", "test"), val_problems=200, test_problems=500, n=16, max_new_tokens=96, batch_size=136,
                    features=True),
    "t4": dict(train_problems=500, test_problems=500, n=16, max_new_tokens=512, batch_size=32),
    "a100": dict(train_problems=2000, test_problems=500, n=64, max_new_tokens=768, batch_size=128),
}


def _ssft_config(cfg: Config) -> dict:
    path = Path(cfg.run) / "ssft" / "config.json"
    return runs.read_json(path) if path.exists() else {}


def resolve(cfg: Config) -> tuple[str, str | None, str, Path]:
    """Fill the defaults from the SSFT run: model, adapter, data, output folder."""
    ssft = Path(cfg.run) / "ssft"
    ssft_cfg = _ssft_config(cfg)
    model = cfg.model or ssft_cfg.get("model") or models.OFFLINE_MODEL
    dataset = cfg.data or ssft_cfg.get("data") or "synthetic"
    if cfg.adapter.lower() == "none" or (cfg.fewshot and not cfg.adapter):
        adapter = None
    else:
        adapter = cfg.adapter or str(ssft / "adapter")
        if not (Path(adapter) / "adapter_config.json").exists():
            raise runs.UserError(f"{adapter}: no SSFT adapter here; run recipes/01_ssft.py --run {cfg.run} first, "
                                 "or pass --adapter none (base model) / --adapter DIR")
        if not (Path(adapter) / "adapter_model.safetensors").exists():
            raise runs.UserError(f"{adapter}: no adapter_model.safetensors (only safetensors adapters are loaded); "
                                 "save the adapter with save_pretrained(..., safe_serialization=True)")
    out = Path(cfg.out) if cfg.out else Path(cfg.run) / ("samples" if not cfg.fewshot else f"samples-fewshot{cfg.fewshot}")
    return model, adapter, dataset, out


def check_existing(out: Path, splits, scfg: sampling.SamplingConfig) -> None:
    """Refuse, before any model loads, to add samples to files made with other sampling numbers.
    (The sampler checks the full config, model and prompt included, once the model is loaded.)"""
    for split in splits:
        paths = sampling.output_paths(out / f"samples-{split}.jsonl")
        if not paths.meta.exists() or not paths.samples.exists() or paths.samples.stat().st_size == 0:
            continue
        meta = runs.read_json(paths.meta)
        old = meta.get("config") if isinstance(meta, dict) else None
        old, new = (old if isinstance(old, dict) else {}), dataclasses.asdict(scfg)
        diff = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in ("n", "temperature", "top_p", "max_new_tokens", "greedy", "seed")
                if k in old and old[k] != new[k]]
        if diff:
            raise runs.UserError(f"{paths.meta}: samples here were made with another sampling config ({'; '.join(diff)}); "
                                 "use another --out or --run, or delete them to start over")


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "02 sampling config")
    vllm_ok = cfg.backend != "hf" and sampling.vllm_usable()
    use_vllm = cfg.backend == "vllm" or (cfg.backend == "auto" and vllm_ok)
    if cfg.features and use_vllm:
        raise runs.UserError("--features true needs the transformers engine (vLLM does not expose hidden states); "
                             "add --backend hf")
    if cfg.backend == "vllm" and not vllm_ok:
        raise runs.UserError("--backend vllm needs the vllm package and a CUDA GPU (pip install vllm); "
                             "use --backend hf")
    scfg = sampling.SamplingConfig(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                                   max_new_tokens=cfg.max_new_tokens, greedy=True, seed=cfg.seed)
    model_name, adapter, dataset, out = resolve(cfg)
    models.resolve_model(model_name)  # a misspelt --model fails here, before any weights load
    sizes = {"train": cfg.train_problems, "test": cfg.test_problems, "val": cfg.val_problems}
    val_size = int(_ssft_config(cfg).get("val_size") or 0)  # the SSFT run's held-out slice of train (seed 0)
    if "val" in cfg.splits and not val_size:
        raise runs.UserError(f"split val: the SSFT run in {Path(cfg.run) / 'ssft'} kept no problems out of training "
                             "(01's val_size is 0); sample train or test")
    problems = {s: data.load_problems(dataset, s, limit=sizes[s], seed=cfg.problem_seed, val_size=val_size, val_seed=0)
                for s in cfg.splits}
    for s, ps in problems.items():
        if not ps:
            raise runs.UserError(f"{dataset}: the {s} split is empty")
    fewshot = data.fewshot_examples(cfg.fewshot, style=cfg.fewshot_style, seed=cfg.seed) if cfg.fewshot else ()
    check_existing(out, cfg.splits, scfg)

    from mathlite import trainer

    trainer.setup_runtime()
    if use_vllm:  # vLLM loads the weights itself, with the LoRA adapter served on top
        tok = generator.load_tokenizer(model_name)
        model = models.resolve_model(model_name)
        model_id = str(samples.ModelId(model_name, sampling.adapter_fingerprint(adapter) if adapter else None))
    else:
        model, tok, model_id = generator.load_generator(model_name, adapter)
    shots = f", {cfg.fewshot}-shot ({cfg.fewshot_style})" if cfg.fewshot else ""
    print(f"[02] {model_id}{' (vLLM)' if use_vllm else ''}{shots} -> {out}")

    summaries = {}
    # vLLM: one engine for every split, its context sized for the longest prompt of all of them
    longest = max(len(tok(data.build_prompt(tok, p.question, fewshot), add_special_tokens=False)["input_ids"])
                  for ps in problems.values() for p in ps) if use_vllm else 0
    for split, ps in problems.items():
        summary = sampling.sample_problems(model, tok, ps, out / f"samples-{split}.jsonl", scfg, fewshot=fewshot,
                                           model_id=model_id, adapter=adapter, batch_size=cfg.batch_size,
                                           desc=f"sampling {split}", backend="vllm" if use_vllm else "hf",
                                           max_model_len=longest + cfg.max_new_tokens + 1 if use_vllm else None,
                                           features=cfg.features)
        sampling.print_summary(summary, title=f"{split}: {len(ps)} problems x (greedy + {cfg.n} samples)")
        summaries[split] = summary
    if use_vllm:
        sampling.free_vllm()
    runs.atomic_write_json(out / "summary.json", summaries)
    fingerprints = {s: data.fingerprint(ps) for s, ps in problems.items()}
    Stage(out, "samples", {"model": model_id, "sampling": dataclasses.asdict(scfg), "problems": fingerprints,
                           "fewshot": [cfg.fewshot, cfg.fewshot_style] if cfg.fewshot else None}).finish(
        cfg, model=model_id, adapter=adapter, data=dataset, data_fingerprint=fingerprints,
        timings={s: v.get("seconds") for s, v in summaries.items()})


if __name__ == "__main__":
    runs.run_main(main)
