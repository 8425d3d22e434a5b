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


def test_t4_gets_fp16_and_the_t4_preset(monkeypatch):
    """A T4 (sm75): torch.cuda.is_bf16_supported() says True (it counts emulation); mathlite must not."""
    from mathlite import runs, sampling, trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert not models.cuda_bf16()
    assert models.compute_dtype() == torch.float16
    assert models.bnb_config().bnb_4bit_compute_dtype == torch.float16
    assert runs.default_preset() == "t4"
    assert sampling.vllm_dtype() == "float16"
    args = trainer.common_training_args("out", lr=1e-4, batch_size=1, grad_accum=1, max_steps=1, epochs=1.0, seed=0,
                                        save_steps=1, log_steps=1)
    assert args["fp16"] is True and args["bf16"] is False
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))  # A100
    assert models.compute_dtype() == torch.bfloat16 and runs.default_preset() == "a100"


def test_trainable_dtypes_after_trl_cast(monkeypatch):
    """The score head goes back to fp32 after TRL's bf16 cast; on a T4 every trainable weight is fp32."""
    net = torch.nn.Module()
    net.score = torch.nn.Linear(4, 1).to(torch.bfloat16)
    net.lora_A = torch.nn.Linear(4, 2, bias=False).to(torch.bfloat16)
    net.frozen = torch.nn.Linear(4, 4).to(torch.bfloat16).requires_grad_(False)
    models.settle_trainable_dtypes(net)
    assert net.score.weight.dtype == torch.float32 and net.lora_A.weight.dtype == torch.bfloat16
    assert net.frozen.weight.dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert models.settle_trainable_dtypes(net) == {"float32": 3}
    assert net.frozen.weight.dtype == torch.bfloat16


def test_multi_gpu_host_trains_on_one_device():
    """transformers sets n_gpu to the device count without a launcher, and TRL's SFTTrainer then refuses
    (DataParallel). one_device brings it to 1. The device count is faked (no GPU in CI)."""
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    from mathlite import trainer

    tok = models.load_tokenizer(models.OFFLINE_MODEL)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    ds = Dataset.from_list([{"prompt": "1+1=", "completion": "2"}])

    def args(tmp):
        a = SFTConfig(output_dir=str(tmp), use_cpu=True, report_to="none", max_steps=1, per_device_train_batch_size=2)
        _ = a.device  # sets the device up, as the Trainer does
        a._n_gpu = 2  # what that leaves on a host with two GPUs and no launcher
        return a

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(ValueError, match="DataParallel"):
            SFTTrainer(model=model, args=args(tmp), train_dataset=ds, processing_class=tok)
        fixed = trainer.one_device(args(tmp))
        assert fixed.n_gpu == 1 and fixed.train_batch_size == 2
        SFTTrainer(model=model, args=fixed, train_dataset=ds, processing_class=tok)  # no error


def test_checkpointing_every_nth_layer_and_its_fallback(monkeypatch):
    """gradient_checkpointing=n reaches TrainingArguments as transformers' every_n_layers; a transformers
    without it (4.x) checkpoints every layer instead (its checkpoint function would reject the key)."""
    from mathlite import trainer

    monkeypatch.setattr(models, "gpu_path", lambda: False)  # the CPU path: the GPU path checkpoints every layer
    common = dict(lr=1e-4, batch_size=1, grad_accum=1, max_steps=1, epochs=1.0, seed=0, save_steps=1, log_steps=1)
    none = trainer.common_training_args("out", **common)
    assert none["gradient_checkpointing"] is False and none["gradient_checkpointing_kwargs"] is None
    every2 = trainer.common_training_args("out", gradient_checkpointing=2, **common)
    assert every2["gradient_checkpointing"] is True
    assert every2["gradient_checkpointing_kwargs"] == {"use_reentrant": False, "every_n_layers": 2}
    monkeypatch.setattr(trainer, "_checkpoints_some_layers", lambda: False)
    fallback = trainer.common_training_args("out", gradient_checkpointing=2, **common)
    assert fallback["gradient_checkpointing"] is True and fallback["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
