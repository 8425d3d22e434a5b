"""Export: merge a LoRA adapter into its unquantized base and save a stand-alone model + model card.

The last step after the paper's pipeline: the generator you keep (the multi-task adapter of recipe 05,
or the SSFT adapter of recipe 01) becomes a plain transformers checkpoint (safetensors, config,
tokenizer with chat template) that vLLM, TGI, llama.cpp converters and `from_pretrained` load without
PEFT. The base is loaded in its published precision (or --dtype), never in 4-bit, even when training
used a 4-bit QLoRA base (mathlite/export.py explains why). The README.md model card states the data,
preset and training stages, and the results measured on samples of this very adapter (read from the
run's sampling outputs and recipe 04/05 reports, matched by the adapter's weight hash; never typed in).

    python recipes/export.py                                  # runs/<preset>: multitask adapter if any, else SSFT
    python recipes/export.py --preset smoke --run /tmp/runs/smoke --adapter /tmp/runs/smoke/ssft/adapter
    python recipes/export.py --dtype fp32 --out exported/mathlite-135m
    HF_TOKEN=hf_... python recipes/export.py --push_to_hub you/mathlite-lora   # adapter + card to the hub

Time and memory (CPU merge; no GPU needed): 135M: ~10 s, < 1 GB RAM; 1.5B (t4 preset) in bf16: ~1 min,
~4 GB RAM; 7B (a100 preset) in bf16: a few minutes, ~16 GB RAM (fp32: twice that), ~15 GB of disk.
Writes <out> (default <run>/export/<adapter stage>): model.safetensors, config.json, generation_config.json,
tokenizer files, README.md; the folder appears only once complete.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mathlite import export, runs


@dataclass
class Config:
    adapter: str = ""  # default: <run>/multitask/stage2_generator if finished, else <run>/ssft/adapter
    model: str = ""  # default: the base the SSFT run trained (its ssft/config.json)
    dtype: export.Dtype = "auto"  # auto (the base's published precision) | fp32 | bf16 | fp16; never 4-bit
    out: str = ""  # default: <run>/export/<name of the adapter's stage>
    push_to_hub: str = ""  # a hub repo id (owner/name): push the adapter + card; needs HF_TOKEN
    private: bool = True  # a new hub repo is private unless --private false
    run: str = ""
    preset: str = ""


# the presets only pick the default run folder; an export has nothing to scale
PRESETS = {"smoke": dict(), "cpu": dict(), "t4": dict(), "a100": dict()}


def resolve(cfg: Config) -> tuple[Path, str, Path]:
    """(adapter folder, base model name, output folder) from the flags and the run folder."""
    run = Path(cfg.run)
    if cfg.adapter:
        adapter = Path(cfg.adapter)
    elif runs.stage_done(run / "multitask" / "stage2_generator"):
        adapter = run / "multitask" / "stage2_generator"
    else:
        adapter = run / "ssft" / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise runs.UserError(f"{adapter}: no adapter here; train one (recipes 01/05) or pass --adapter DIR")
    model = cfg.model
    if not model and (run / "ssft" / "config.json").exists():
        model = runs.read_json(run / "ssft" / "config.json").get("model", "")
    if not model:  # an adapter from elsewhere: PEFT recorded the base it was trained on
        model = export.adapter_config(adapter).get("base_model_name_or_path") or ""
    if not model:
        raise runs.UserError(f"{adapter}: cannot tell its base model; pass --model")
    label = adapter.name if adapter.name != "adapter" else adapter.parent.name  # ssft/adapter -> "ssft"
    out = Path(cfg.out) if cfg.out else run / "export" / label
    return adapter, model, out


def main(argv):
    cfg = runs.parse_config(Config, PRESETS, argv)
    runs.print_config(cfg, "export config")
    adapter, model_name, out = resolve(cfg)
    export.check_generator_adapter(adapter)
    if cfg.push_to_hub and not os.environ.get("HF_TOKEN"):
        # checked before the minutes of merging, not after
        raise runs.UserError("--push_to_hub needs HF_TOKEN in the environment (a write token from "
                             "https://huggingface.co/settings/tokens)")
    with runs.timer() as t:
        merged, tok = export.merge_adapter(model_name, adapter, cfg.dtype)
    dtype = str(next(merged.parameters()).dtype).removeprefix("torch.")
    info = export.describe(cfg.run, adapter, model_name, dtype=dtype)
    export.save_merged(merged, tok, out, card=export.model_card(info, kind="merged"))
    runs.write_manifest(out, cfg, complete=True, stage="export", adapter=str(adapter), base=model_name, dtype=dtype,
                        adapter_fingerprint=info["fingerprint"], timings={"merge": round(t["seconds"], 1)})
    print(f"[export] {model_name} + {adapter} merged ({dtype}) -> {out} "
          f"({len(info['samples'])} measured sample sets, {len(info['reports'])} reports in the card)")
    if cfg.push_to_hub:
        url = export.push_adapter(cfg.push_to_hub, adapter, export.model_card(info, kind="adapter"), cfg.private)
        print(f"[export] adapter + card pushed to {url}")


if __name__ == "__main__":
    runs.run_main(main)
