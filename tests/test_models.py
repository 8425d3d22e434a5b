"""Model loading: clear errors for missing models/adapters, and the 4-bit CPU gradient trap."""

import pytest
import torch

from mathlite import models


def test_missing_model_and_adapter_are_clear_errors(tmp_path):
    with pytest.raises(models.ModelNotFound, match="no such model folder"):
        models.resolve_model("./no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelNotFound, match="no config.json"):
        models.resolve_model(str(tmp_path / "empty"))
    with pytest.raises(models.ModelNotFound, match="adapter_config.json missing"):
        models.load_adapter(torch.nn.Linear(2, 2), tmp_path / "empty")


def test_lora_config_saves_the_score_head():
    assert models.lora_config(task="seq_cls").modules_to_save == ["score"]
    assert models.lora_config().task_type == "CAUSAL_LM"


@pytest.mark.slow
def test_4bit_lora_gradients_survive_generate_on_cpu():
    """bitsandbytes repacks 4-bit weights for CPU inference at the first eval forward, after which LoRA
    gradients vanish. load_model turns that off; this generates first, then checks every LoRA-B gradient."""
    from peft import get_peft_model

    model = models.load_model(models.OFFLINE_MODEL, quant="4bit", for_training=True)
    model = get_peft_model(model, models.lora_config(r=4, alpha=8))
    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    batch = tok("Compute 2+3. The answer is \\boxed{5}.", return_tensors="pt")
    model.eval()
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=3, do_sample=False)
    model.train()
    # lora_B starts at zero, so its gradient is the one that vanishes when the base path is broken
    model(**batch, labels=batch["input_ids"]).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
