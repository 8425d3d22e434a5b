"""The steps of multi-task sequential fine-tuning (recipe 05): one LoRA adapter trained as
generator -> verbal evaluator -> generator, the control (the same generator steps without the
evaluator step), their test samples, and the comparison of the generators with paired tests.

Every step is a `Stage` (mathlite.stage) keyed by everything that decides its result, the fingerprint
of its starting adapter included, so a retrained upstream step is never combined with an old one."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import data, evaluator, files, generator, metrics, models, report, sampling
from .errors import UserError
from .samples import Meta, ModelId
from .stage import Stage


@contextmanager
def clock():
    """Wall and process CPU seconds (all threads). On a busy shared box the wall time says little, and
    the CPU time says more only when torch has no more threads than free cores (idle threads spin)."""
    t = {}
    wall, cpu = time.time(), time.process_time()
    yield t
    t["seconds"] = round(time.time() - wall, 1)
    t["cpu_seconds"] = round(time.process_time() - cpu, 1)


@dataclass
class Inputs:
    """What the steps start from: recipe 01's SSFT run and recipe 02's samples, read once and checked."""

    out: Path  # <run>/multitask
    base: str  # the SSFT run's model
    quant: str
    ssft_cfg: dict  # recipe 01's config.json
    ssft_adapter: Path
    ssft_fp: str  # its fingerprint: the key of every step that starts from it
    train_samples: Path  # recipe 02's, what the evaluator step learns from
    test_samples: Path
    problems: list  # the test problems compared
    scfg: sampling.SamplingConfig  # recipe 02's test sampling settings (n maybe lowered)
    backend: str  # hf | vllm, as recipe 02 sampled
    ssft_weights: str | None  # the base precision recipe 02 sampled from
    evaluator_data: evaluator.TrainingData
    train_id: dict  # what the evaluator step trains on (sampling config, problems, record count)
    tok: Any

    @functools.cached_property
    def records(self) -> list[dict]:
        """Recipe 01's training records, built only if a generator step has to run."""
        s = self.ssft_cfg
        return data.prompt_completion_records(
            data.load_problems(s["data"], "train", limit=s["train_size"] or None, seed=s["seed"]), self.tok, s["style"])


def inputs(cfg, run: Path, out: Path) -> Inputs:
    """The SSFT run of `run` and recipe 02's samples there, checked: the evaluator learns from the SSFT
    generator's own samples, and the SSFT row must be that generator, sampled as the others will be."""
    ssft_dir, samples_dir = run / "ssft", run / "samples"
    if not files.stage_done(ssft_dir) or not (ssft_dir / "adapter" / "adapter_config.json").exists():
        raise UserError(f"{ssft_dir}: no finished SSFT run; run recipes/01_ssft.py --run {run} first")
    train_samples, test_samples = samples_dir / "samples-train.jsonl", samples_dir / "samples-test.jsonl"
    for f in (train_samples, test_samples):
        if not sampling.output_paths(f).meta.exists():
            raise UserError(f"{f}: missing; run recipes/02_sample.py --run {run} (both splits) first")
    train_meta, test_meta = (files.read_json(sampling.output_paths(f).meta) for f in (train_samples, test_samples))
    ssft_fp = sampling.adapter_fingerprint(ssft_dir / "adapter")
    for f, meta in ((train_samples, train_meta), (test_samples, test_meta)):
        if not meta.get("complete"):
            raise UserError(f"{f}: unfinished; rerun recipes/02_sample.py --run {run} to complete it")
        if Meta.from_dict(meta, sampling.output_paths(f).meta).model.adapter_hash != ssft_fp:
            raise UserError(f"{f}: not sampled from {ssft_dir / 'adapter'} (made by "
                            f"{meta.get('model', {}).get('name')}); rerun recipes/02_sample.py --run {run}")
    ssft_cfg = files.read_json(ssft_dir / "config.json")
    # the problems and sampling settings of recipe 02's test samples, so that the SSFT row is comparable
    all_problems = sampling.read_problems(sampling.output_paths(test_samples).problems)
    if cfg.test_problems > len(all_problems):
        raise UserError(f"--test_problems {cfg.test_problems}: {test_samples} has {len(all_problems)} problems "
                        "(pass a smaller number, or 0 for all)")
    run_n = test_meta["config"]["n"]
    if cfg.n > run_n:
        raise UserError(f"--n {cfg.n}: the run's test samples have {run_n} per problem (pass <= {run_n}, or 0)")
    ev_data = evaluator.training_data(train_samples, max_per_problem=cfg.max_per_problem, balance=cfg.balance,
                                      keep_uniform=cfg.keep_uniform, val_fraction=cfg.val_fraction, seed=cfg.seed)
    return Inputs(
        out=out, base=ssft_cfg["model"], quant=ssft_cfg.get("quant", "auto"), ssft_cfg=ssft_cfg,
        ssft_adapter=ssft_dir / "adapter", ssft_fp=ssft_fp, train_samples=train_samples, test_samples=test_samples,
        problems=all_problems[: cfg.test_problems or None],
        scfg=sampling.SamplingConfig(**{**test_meta["config"], "n": cfg.n or run_n}),
        backend=sampling_backend(test_samples, test_meta), ssft_weights=(test_meta.get("model") or {}).get("weights"),
        evaluator_data=ev_data,
        train_id={"config": train_meta.get("config_hash"), "problems": data.fingerprint(ev_data.problems.values()),
                  "records": sum(len(e["samples"]) + (e["greedy"] is not None) for e in ev_data.by_id.values())},
        tok=generator.load_tokenizer(ssft_cfg["model"]))


def verbal_skill(ev, d: evaluator.TrainingData) -> dict:
    """AUC and accuracy of a verbal evaluator over every sample of the held-out problems (as recipe 03).
    Measured on the generator adapters too: does the evaluator skill survive the last generator step,
    and does the control (never trained as an evaluator) have any?"""
    val_ids = sorted({e["id"] for e in d.val})
    pairs, _, m = evaluator.held_out_scores(ev, evaluator.TrainingData(d.problems, d.by_id, [], d.val))
    if not pairs:
        return {"val_problems": len(val_ids), "val_solutions": 0}
    return {"auc": m["auc"], "accuracy": m["accuracy"], "positive_rate": m["positive_rate"],
            "val_problems": len(val_ids), "val_solutions": len(pairs)}


def train_evaluator(cfg, x: Inputs) -> dict:
    """Step 1: the SSFT adapter continued as a verbal evaluator (recipe 03 with kind=verbal)."""
    st = Stage(x.out / "stage1_evaluator", "multitask/evaluator", {
        "stage": "evaluator", "base": x.base, "init": x.ssft_fp, "samples": x.train_id, "kind": cfg.kind,
        "loss": cfg.loss, "steps": cfg.evaluator_steps, "epochs": cfg.evaluator_epochs, "lr": cfg.evaluator_lr,
        "batch_size": cfg.evaluator_batch_size, "max_length": cfg.evaluator_max_length,
        "max_per_problem": cfg.max_per_problem, "keep_uniform": cfg.keep_uniform, "balance": cfg.balance,
        "val_fraction": cfg.val_fraction, "quant": x.quant, "seed": cfg.seed})
    if done := st.done():
        print(f"[05] stage 1 (evaluator) already complete: {st.out}")
        return done["metrics"]
    st.begin(cfg)  # train_evaluator saves once, at the end, over whatever an interrupted attempt left
    train_ex, val = x.evaluator_data.for_loss(cfg.loss, cfg.seed, x.train_samples)
    from . import trainer  # transformers: only when a step trains

    print(f"[05] stage 1: verbal evaluator ({cfg.loss}) on {evaluator.describe_rows(train_ex, cfg.loss)}, "
          "from the SSFT adapter")
    with clock() as t:
        ev = evaluator.train_evaluator(
            x.base, train_ex, kind="verbal", loss=cfg.loss, init_adapter=str(x.ssft_adapter), out_dir=st.out,
            lr=cfg.evaluator_lr, epochs=cfg.evaluator_epochs, max_steps=cfg.evaluator_steps,
            batch_size=cfg.evaluator_batch_size, max_length=cfg.evaluator_max_length, seed=cfg.seed,
            val_examples=val or None, quant=x.quant, log_steps=cfg.log_steps,
            callbacks=[trainer.ProgressCallback(f"stage 1: evaluator ({cfg.loss})")])
    shutil.rmtree(st.out / "checkpoints", ignore_errors=True)
    result = {"verbal": verbal_skill(ev, x.evaluator_data), "train_examples": len(train_ex),
              "steps": max((h.get("step", 0) for h in ev.history), default=0), **t}
    del ev
    generator.free_memory()
    st.finish(cfg, metrics=result, timings=t)
    return result


def train_generator(cfg, x: Inputs, name: str, init_adapter: Path, loss: str | None) -> dict:
    """Step 2 (and the control): `init_adapter` continued as a generator for gen2_steps of SFT on recipe
    01's data, batch, length and quantization. The two calls differ only in init_adapter.

    loss: the evaluator loss the adapter was trained with (step 2), recorded in evaluator.json so the
    final adapter loads as a verbal evaluator; None for the control, which never was one."""
    s = x.ssft_cfg
    lr, batch_size = cfg.gen2_lr or s["lr"], cfg.gen2_batch_size or s["batch_size"]
    st = Stage(x.out / name, f"multitask/{name}", {
        "stage": "generator", "base": x.base, "init": sampling.adapter_fingerprint(init_adapter),
        "steps": cfg.gen2_steps, "lr": lr, "batch_size": batch_size,
        **{k: s.get(k) for k in ("data", "style", "train_size", "grad_accum", "max_length")},
        "quant": x.quant, "seed": cfg.seed})
    if done := st.done():
        print(f"[05] {name} already complete: {st.out}")
        return done["metrics"]
    st.begin(cfg)  # checkpoints of an interrupted attempt with this key stay: they resume
    print(f"[05] {name}: {cfg.gen2_steps} SFT steps from {init_adapter} on {len(x.records)} examples "
          f"({s['data']}, style {s['style']}), lr {lr:g}")
    model = models.load_model(x.base, quant=x.quant, for_training=True)
    model = models.load_adapter(model, init_adapter, trainable=True)
    with clock() as t:
        sft, result = generator.train_generator(
            model, x.tok, x.records, st.out / "checkpoints", tag=f"[05] {name}:", label=name, lr=lr,
            batch_size=batch_size, grad_accum=s["grad_accum"], max_steps=cfg.gen2_steps, epochs=1.0, seed=cfg.seed,
            save_steps=cfg.save_steps, log_steps=cfg.log_steps, max_length=s["max_length"])
    model = sft.model
    model.eval()
    # the trained causal-LM adapter, in memory, seen as the verbal evaluator it also is
    ev = evaluator.Evaluator(model, x.tok, "verbal", loss=loss, base=x.base, init_adapter=str(init_adapter),
                             max_length=cfg.evaluator_max_length)
    generator.save(model, x.tok, st.out, {evaluator.META_FILE: ev.meta()} if loss is not None else {})
    out = {"verbal": verbal_skill(ev, x.evaluator_data), "steps": sft.state.global_step,
           "train_loss": result.get("train_loss"), **t}
    shutil.rmtree(st.out / "checkpoints", ignore_errors=True)
    st.finish(cfg, init_adapter=str(init_adapter), metrics=out, timings=t)
    del sft, model, ev
    generator.free_memory()
    return out


def sampling_backend(test_samples: Path, meta: dict) -> str:
    """The backend that made recipe 02's test samples, which the other generators then use too: vLLM
    serves an unquantized base, the HF path a 4-bit one on GPU, so rows sampled by the two are not
    comparable. Refused: a file made by both, or a vLLM file where vLLM is not usable."""
    backends = sorted(meta.get("backends") or ["hf"])
    if len(backends) > 1:
        raise UserError(f"{test_samples}: sampled partly with each of {backends} (different base precisions); "
                        "rerun recipes/02_sample.py into a fresh --out with one --backend")
    if backends[0] == "vllm" and not sampling.vllm_usable():
        raise UserError(f"{test_samples}: sampled with vLLM ({meta.get('base_precision', '?')} base); the other "
                        "generators must be sampled the same way, which needs vllm and a GPU here "
                        "(or rerun recipes/02_sample.py with --backend hf)")
    return backends[0]


def sample(cfg, x: Inputs, label: str, adapter: Path) -> dict:
    """The test samples of one generator, exactly as recipe 02 makes them (its generator loading or its
    vLLM backend, the run's sampling config, problems and per-sample seeds)."""
    fp = sampling.adapter_fingerprint(adapter)
    vllm = x.backend == "vllm"
    st = Stage(x.out / f"samples-{label}", f"multitask/samples-{label}", {
        "stage": "samples", "adapter": fp, "config": dataclasses.asdict(x.scfg),
        "problems": data.fingerprint(x.problems), **({"backend": "vllm"} if vllm else {})})
    if done := st.done():
        print(f"[05] samples of the {label} generator already complete: {st.out}")
        return {**done["summary"], **done["timings"]}
    st.begin(cfg)
    shutil.rmtree(x.out / "report" / label, ignore_errors=True)  # its scores belong to the old samples
    if vllm:
        model, tok, model_id = x.base, x.tok, str(ModelId(x.base, fp))
        weights = "vllm-" + sampling.vllm_dtype()
    else:
        model, tok, model_id = generator.load_generator(x.base, str(adapter))
        weights = sampling.model_identity(model)["weights"]
    if x.ssft_weights and weights != x.ssft_weights:
        raise UserError(f"{x.test_samples}: the SSFT row was sampled from a {x.ssft_weights} base, this generator "
                        f"would be sampled from a {weights} one; rerun recipes/02_sample.py here first")
    with clock() as t:
        summary = sampling.sample_problems(model, tok, x.problems, st.out / "samples-test.jsonl", x.scfg,
                                           model_id=model_id, adapter=str(adapter), batch_size=cfg.batch_size,
                                           desc=f"sampling test ({label})", backend="vllm" if vllm else "hf")
    sampling.print_summary(summary, title=f"{label}: {len(x.problems)} problems x (greedy + {x.scfg.n})")
    files.atomic_write_json(st.out / "summary.json", summary)
    st.finish(cfg, model=model_id, adapter=str(adapter), summary=summary, timings=t)
    del model
    if not vllm:  # the vLLM engine stays for the next generator's samples (free_memory drops it)
        generator.free_memory()
    return {**summary, **t}


def ssft_samples(x: Inputs) -> Path:
    """The SSFT row: recipe 02's test samples restricted to the problems and the first n samples used
    here. Sample k of a problem has the same seed whatever N was, so the first n of N samples are
    draws of an n-sample run; the three generators even share their random numbers per sample."""
    src = sampling.output_paths(x.test_samples)
    dst = sampling.output_paths(x.out / "samples-ssft" / "samples-test.jsonl")
    ids = [p.id for p in x.problems]
    by_id = sampling.read_samples(src.samples)
    missing = [i for i in ids if i not in by_id or len(by_id[i]["samples"]) < x.scfg.n]
    if missing:
        raise UserError(f"{src.samples}: fewer than {x.scfg.n} samples for {len(missing)} of the chosen "
                        f"problems (e.g. {missing[0]}); rerun recipe 02 to finish it, or lower --n")
    lines = []
    for pid in ids:
        entry = by_id[pid]
        recs = ([entry["greedy"]] if entry["greedy"] else []) + entry["samples"][: x.scfg.n]
        lines += [json.dumps(r, ensure_ascii=False) for r in recs]
    text = "\n".join(lines) + "\n"
    if not dst.samples.exists() or dst.samples.read_text() != text:
        shutil.rmtree(x.out / "report" / "ssft", ignore_errors=True)
        files.atomic_write_text(dst.problems, "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n"
                                                      for p in x.problems))
        files.atomic_write_text(dst.samples, text)
        meta = files.read_json(src.meta)
        meta["config"]["n"] = x.scfg.n
        meta.update(subset_of=str(src.samples), subset={"problems": len(ids), "n": x.scfg.n},
                    summary=sampling.summarize(sampling.read_samples(dst.samples), ids, x.scfg))
        files.atomic_write_json(dst.meta, meta)
    return dst.samples


# ---------------------------------------------------------------------------- the comparison


PAIRS = (("multitask", "ssft"), ("multitask", "control"))


def generator_pairs(chosen: dict[str, list[dict]], methods: list[str], n_boot: int, seed: int
                    ) -> list[metrics.PairedStats]:
    """Per method, the multi-task generator against SSFT and against the control on the same problems:
    wins / losses / ties, the exact sign test and a paired bootstrap CI (metrics.paired, one seeded set
    of resamples for all pairs). `chosen`: per generator, each problem's choices (a report's choices file)."""
    labels = [lab for lab in chosen]
    ids = [c["id"] for c in chosen[labels[0]]]
    for lab in labels:
        if [c["id"] for c in chosen[lab]] != ids:
            raise ValueError(f"generator_pairs: the {lab} report covers other problems than the {labels[0]} one")
    counts = metrics._resample_counts(len(ids), n_boot, np.random.default_rng(seed))
    out = []
    for a, b in PAIRS:
        if a not in chosen or b not in chosen:
            continue
        for m in methods:
            if not all(m in c["correct"] for c in chosen[a] + chosen[b]):
                continue
            w, l, t, d, lo, hi, p = metrics.paired([c["correct"][m] for c in chosen[a]],
                                                   [c["correct"][m] for c in chosen[b]], counts)
            label = metrics.full_label(m)
            out.append(metrics.PairedStats(f"{a}:{m}", f"{b}:{m}", f"{a}: {label}", f"{b}: {label}",
                                           w, l, t, len(ids), d, lo, hi, p))
    return out


def claim_lines(pairs: list[metrics.PairedStats]) -> list[str]:
    """One generated line per paired test: held / reversed / not shown (report.verdict), with its evidence."""
    who = {"ssft": "the SSFT generator", "control": "the control (the same generator steps, no evaluator step)"}
    return [f"- **{report.verdict(c)}**: The multi-task generator beats {who[c.baseline.split(':')[0]]} at "
            f"{metrics.full_label(c.method.split(':', 1)[1])}. {report._evidence(c)}." for c in pairs]


def pairs_markdown(pairs: list[metrics.PairedStats]) -> str:
    """The paired table and the generated "which claims held" lines, as the 04 report words them."""
    if not pairs:
        return ""
    return ("## Paired per problem: multi-task vs SSFT and vs the control\n\n"
            + report.markdown_table(report.PAIRED_HEADER, report.paired_rows(pairs))
            + f"\n## Which claims held here\n\nGenerated from the paired tests above: **held** = better with "
            f"two-sided sign test p < {report.ALPHA}; **reversed** = worse with p < {report.ALPHA}; **not shown** = "
            "no significant difference at this number of problems.\n\n" + "\n".join(claim_lines(pairs)) + "\n")


def comparison_text(cfg, x: Inputs, columns: dict, skill: dict, timings: dict, pairs: list, rerank_label: str,
                    ssft_steps) -> str:
    """comparison.md: the one table, the paired tests, the evaluator-skill table, and what the run was."""
    n_problems = next(iter(next(iter(columns.values())).values())).n_problems
    sc = x.scfg
    text = (f"# Multi-task sequential fine-tuning vs SSFT vs the control\n\n"
            f"{x.base} on {x.ssft_cfg['data']} ({n_problems} test problems, N={sc.n}, T={sc.temperature}, "
            f"top-p {sc.top_p}, {sc.max_new_tokens} new tokens); preset {cfg.preset}.\n\n"
            f"- **ssft**: the SSFT adapter of recipe 01 ({ssft_steps} steps), recipe 02's samples\n"
            f"- **multitask**: SSFT -> verbal evaluator ({cfg.loss}, {skill.get('stage1_steps', '?')} steps on "
            f"{x.train_samples.name}) -> generator ({cfg.gen2_steps} SFT steps)\n")
    if "control" in columns:
        text += f"- **control**: SSFT -> generator ({cfg.gen2_steps} SFT steps), no evaluator stage\n"
    text += (f"\nRe-ranking evaluator: {rerank_label}. All generators are sampled with the same seed per "
             "(problem, sample), so their differences come from the models, not from the draws.\n\n"
             "## Accuracy (%) [95% Wilson CI]\n\n" + report.comparison_markdown(columns) +
             f"\nWith {n_problems} problems an interval spans about "
             f"±{100 * 1.96 * 0.5 / max(n_problems, 1) ** 0.5:.0f} "
             "points at 50% accuracy: differences inside the intervals are not evidence.\n")
    if pairs:
        text += "\n" + pairs_markdown(pairs)
    fmt = report.fmt
    rows = [[name, fmt(m.get("auc")), fmt(m.get("accuracy")), str(m.get("val_solutions", "-")),
             fmt(m.get("positive_rate"))] for name, m in skill["rows"].items()]
    text += ("\n## The adapters as verbal evaluators (held-out training problems)\n\n"
             "AUC: chance that a correct solution scores above an incorrect one (0.5 = no skill; "
             "'-' when the held-out samples are all right or all wrong). Accuracy: verdicts right at "
             "p(correct) >= 0.5 (the median score after a pairwise loss).\n\n"
             + report.markdown_table(["Adapter", "AUC", "accuracy", "solutions", "share correct"], rows))
    text += "\n## Time\n\n" + report.markdown_table(
        ["Stage", "wall s", "CPU s"], [[k, str(v.get("seconds", "-")), str(v.get("cpu_seconds", "-"))]
                                      for k, v in timings.items()])
    return text
