"""mathlite: a single-GPU LoRA cookbook for Liu et al. 2023, "Improving Large Language Model
Fine-tuning for Solving Math Problems" — SSFT, sampling, evaluators, solution-cluster re-ranking."""

__version__ = "0.1.0"
