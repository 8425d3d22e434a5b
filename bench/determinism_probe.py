"""Are torch's CPU kernels repeatable here? The offline 135M model (bf16 weights, fp32 LoRA, as the
recipes load it): a forward pass and a LoRA forward+backward on a fixed batch, repeated, once on their
own and once while a busy loop competes for the cores; the logits and gradients are hashed.
Also: are they the same at 1 and at 2 threads?

    python bench/determinism_probe.py          # writes bench/results/determinism_probe.json
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mathlite import models, runs  # noqa: E402

REPEATS = 3


def _hash(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def probe(threads: int) -> dict[str, list[str]]:
    from peft import get_peft_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_peft_model(models.load_model(models.OFFLINE_MODEL, quant="none"), models.lora_config(8, 16, 0.0))
    ids = torch.randint(0, 49000, (4, 96), generator=torch.Generator().manual_seed(0))
    out: dict[str, list[str]] = {"forward": [], "backward": []}
    for _ in range(REPEATS):
        with torch.inference_mode():
            out["forward"].append(_hash([model(input_ids=ids).logits]))
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        out["backward"].append(_hash([p.grad for p in model.parameters() if p.grad is not None]))
    return out


def main() -> None:
    if len(sys.argv) > 1:  # child: one thread count, with or without load
        print(json.dumps(probe(int(sys.argv[1]))))
        return
    results = {}
    for threads in (1, 2):
        for loaded in (False, True):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
            try:
                proc = subprocess.run([sys.executable, __file__, str(threads)], capture_output=True, text=True,
                                      check=True, cwd=ROOT)
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
            results[f"threads={threads} {'with' if loaded else 'without'} a busy loop"] = json.loads(proc.stdout.splitlines()[-1])
    hashes = {kind: {h for r in results.values() for h in r[kind]} for kind in ("forward", "backward")}
    out = {"command": "python bench/determinism_probe.py", "repeats": REPEATS, "results": results,
           "distinct_hashes": {k: len(v) for k, v in hashes.items()},
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "note": "shared machine: other jobs were running (load average 10-16 on 2 cores)"},
           "versions": runs.versions()}
    path = ROOT / "bench" / "results" / "determinism_probe.json"
    runs.atomic_write_json(path, out)
    print(json.dumps(out["distinct_hashes"]), "->", path)


if __name__ == "__main__":
    main()
