"""Solution evaluators: a model that reads (question, candidate solution) and scores how likely
the solution is correct. After Liu et al. 2023, "Improving Large Language Model Fine-tuning for
Solving Math Problems" (arXiv 2310.10047), Sec. 3.2 and Eq. 8-9.

The evaluator is trained on the generator's own samples for the *training* problems (each
sample graded against the reference answer), then used to re-rank samples of the test problems
(`mathlite.select`).

Two scorers behind one interface, `Evaluator.score(questions, solutions) -> list[float]`:

    head    a scalar score head on the LM (AutoModelForSequenceClassification, num_labels=1) with
            LoRA; the head is a new Linear(hidden, 1), saved with the adapter (modules_to_save).
    verbal  the paper's template on the LM head, no new parameters:
                <prompt><solution>\\nThe above candidate solution is
            score = p(" correct") / (p(" correct") + p(" incorrect")) for the next token.

Both reduce to one logit z per sequence, and every loss and score is a function of z:

    head:   z = the head's output at the last token
    verbal: z = logit(" correct") - logit(" incorrect")   (so sigmoid(z) is the 2-token ratio above)

    pointwise (Eq. 8):  BCE-with-logits(z, label); for verbal this *is* the cross-entropy over
                        the two verdict tokens
    pairwise  (Eq. 9):  -log sigmoid(z_chosen - z_rejected), a correct (chosen) and an incorrect
                        (rejected) solution of the same problem (Bradley-Terry)

`score` always returns sigmoid(z), in (0, 1): `mathlite.select`'s weighted voting adds scores up
and needs them non-negative, and a monotone map changes no ranking or AUC.

Design decisions (each is tested in tests/test_evaluator.py):

* Uniform problems. A training problem whose samples are all correct or all wrong has no
  correct/incorrect contrast. Dropping them would show the evaluator only 50/50 problems, so it
  would never learn that a confident solution to an easy problem is usually right (calibration,
  and W-RR sums scores). Keeping them all would flood the data with easy-problem positives and
  teach "problem difficulty" instead of "solution correctness". We keep a small capped number,
  `KEEP_UNIFORM` = 2 per uniform problem (`keep_uniform=0` drops them). The pairwise loss cannot
  use them either way: it has no pair to make.
* Balance and cap. Per problem at most `max_per_problem` (paper: about 10 of 64 samples);
  with `balance=True` as many correct as incorrect (`max_per_problem // 2` each at most), so a
  problem contributes no majority-class prior. Exact duplicate texts count once.
* Starting point. By default the evaluator starts from the SSFT adapter, as the paper's evaluator
  is initialised from the generator. The SSFT adapter is a CAUSAL_LM LoRA; a seq-cls model has the
  same backbone under the same names (`model.layers...`), so for `head` we build a SEQ_CLS LoRA
  with the SSFT adapter's own config (r, alpha, target modules) plus `modules_to_save=["score"]`
  and load the SSFT LoRA weights into it: training continues the generator's adapter, and nothing
  is merged (merging into a 4-bit base would be lossy). Its rank wins over `lora_r`.
* Score head in fp32. The head is the only full-rank layer we train. In bf16 an Adam step of
  size ~lr is below the weights' resolution and would be partly rounded away, and bf16 scores
  tie easily (bad for re-ranking); so the head is kept in fp32 and its input is cast up. TRL's
  RewardTrainer casts a 4-bit model's trainable weights to bf16 when it is built; train_evaluator
  puts the head back in fp32 right after (`models.settle_trainable_dtypes`).
* Where the score is read. With pad == eos (SmolLM2's `<|im_end|>`), HF's seq-cls model reads
  the score at the last token that is not the pad id. The evaluator input therefore never ends
  with EOS/pad (stripped from the solution), batches are right-padded, and the verbal scorer reads
  the position given by the attention mask. A test checks padded-batch scores equal one-by-one.
  The same encoding is used for training (we tokenise ourselves, so TRL does not append an EOS).
* Verdict tokens. SmolLM2 encodes " correct" and " incorrect" as one token each (2887, 11798).
  A tokenizer that splits them gets the first token where the two encodings differ (for
  "correct" vs "inc"+"orrect" that is the first token of each), which still decides the verdict.
* Threshold for accuracy. 0.5 where something made the score a probability of correctness: the
  pointwise loss, or the untrained verbal template. A pairwise (Bradley-Terry) score is only
  defined up to a shift, so 0.5 means nothing there: we use the median score, which assumes
  roughly balanced classes (true for `build_examples(balance=True)` data).
* Compute axis. `score` counts `n_scored` (solutions read) and `tokens_scored` (tokens read,
  prompt included): the paper's x-axis for re-ranking cost.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Literal, NamedTuple, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F

from . import files, models, sampling
from .data import build_prompt
from .errors import DataError, UserError
from .metrics import auc

# peft, transformers, trl, datasets (and .trainer, which imports transformers) are imported inside the
# functions that train or load a model: recipes 03 and 05 import this module to check their flags and
# files in seconds, before any of those load

Kind = Literal["head", "verbal"]  # score head (our default) | the paper's verbal p(correct) template
Loss = Literal["pointwise", "pairwise"]  # Eq. 8 | Eq. 9
KINDS, LOSSES = get_args(Kind), get_args(Loss)
MAX_PER_PROBLEM = 10  # paper: about 10 of the 64 samples of each training problem
KEEP_UNIFORM = 2  # samples kept from a problem whose samples are all right or all wrong
VERDICT_SUFFIX = "\nThe above candidate solution is"
VERDICT_WORDS = (" correct", " incorrect")
# Batches are padded to a multiple of this length. On CPU, bf16 kernels are built once per input
# shape (measured ~0.5 s of CPU each on the 2-core box); bounding the number of shapes makes
# scoring and training with varied lengths about 3x cheaper. On GPU it suits tensor cores.
PAD_MULTIPLE = 16
META_FILE = "evaluator.json"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------- training data


def _question(problem) -> str:
    # a Problem dataclass, or the dict a problems JSONL line gives
    return problem["question"] if isinstance(problem, dict) else problem.question


def build_examples(
    problems: dict[str, Any],
    samples: Iterable[dict],
    max_per_problem: int = MAX_PER_PROBLEM,
    balance: bool = True,
    keep_uniform: int = KEEP_UNIFORM,
    seed: int = 0,
) -> list[dict]:
    """Evaluator training examples from graded samples of the training problems.

    problems: id -> Problem (or its dict); samples of other problems are ignored, so passing a
        subset of the problems selects which ones to train on.
    samples: records of the samples JSONL (`id`, `text`, `correct`, ...), greedy (k=-1) included.
    Returns [{"id", "question", "solution", "label"}] with label 1 (correct) or 0, grouped by
    problem. See the module docstring for the uniform-problem, balance and cap rules.
    """
    rng = random.Random(seed)
    by_problem: dict[str, list[dict]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for s in samples:
        key = (s["id"], s["text"].strip())
        if s["id"] not in problems or key in seen:
            continue
        seen.add(key)
        by_problem[s["id"]].append(s)

    examples = []
    for pid in sorted(by_problem):
        group = by_problem[pid]
        right = [s for s in group if s["correct"]]
        wrong = [s for s in group if not s["correct"]]
        rng.shuffle(right)
        rng.shuffle(wrong)
        if not right or not wrong:  # a uniform problem: keep a few (calibration), or none
            chosen = (right or wrong)[: min(keep_uniform, max_per_problem)]
        elif balance:
            n = min(len(right), len(wrong), max(1, max_per_problem // 2))
            chosen = right[:n] + wrong[:n]
        else:  # the generator's own mix of right and wrong
            chosen = right + wrong
            rng.shuffle(chosen)
            chosen = chosen[:max_per_problem]
        rng.shuffle(chosen)
        question = _question(problems[pid])
        examples += [
            {"id": pid, "question": question, "solution": s["text"], "label": int(bool(s["correct"]))} for s in chosen
        ]
    return examples


def split_by_problem(examples: Sequence[dict], val_fraction: float = 0.1,
                     seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, val) with every problem on one side only: solutions of one problem share most of
    their text, so a per-example split would leak the answer into validation."""
    ids = sorted({e["id"] for e in examples})
    random.Random(seed).shuffle(ids)
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    val_ids = set(ids[:n_val])
    return [e for e in examples if e["id"] not in val_ids], [e for e in examples if e["id"] in val_ids]


class TrainingData(NamedTuple):
    """What an evaluator learns from: the graded samples of the generator's training problems."""

    problems: dict  # id -> Problem
    by_id: dict  # id -> {"greedy": record | None, "samples": [record, ...]} (sampling.read_samples)
    train: list[dict]  # build_examples' rows of the training problems
    val: list[dict]  # ... of the held-out problems

    def for_loss(self, loss: str, seed: int, where: str | Path) -> tuple[list[dict], list[dict]]:
        """(training rows, validation rows) for `loss`: the examples, or pairs of them for the pairwise
        loss. UserError naming `where` (the samples file) when no training row is left."""
        train, val = self.train, self.val
        if loss == "pairwise":
            train, val = pair_examples(train, seed), pair_examples(val, seed)
        if not train:
            raise UserError(f"{where}: no evaluator training examples for the {loss} loss "
                            "(pairwise needs problems with both correct and incorrect samples)")
        return train, val


def describe_rows(rows: Sequence[dict], loss: str) -> str:
    """"40 examples (25% correct)" / "12 pairs (100% correct)": what an evaluator trains on."""
    share = sum(e.get("label", 1) for e in rows) / max(len(rows), 1)
    return f"{len(rows)} {'pairs' if loss == 'pairwise' else 'examples'} ({share:.0%} correct)"


def training_data(samples: str | Path, *, max_per_problem: int = MAX_PER_PROBLEM, balance: bool = True,
                  keep_uniform: int = KEEP_UNIFORM, val_fraction: float = 0.1, seed: int = 0) -> TrainingData:
    """The examples of recipe 02's samples file `samples` (greedy and sampled solutions), split by
    problem: the one preparation recipes 03 and 05 share (same rules, same seeded split)."""
    paths = sampling.output_paths(samples)
    try:
        problems = {p.id: p for p in sampling.read_problems(paths.problems)}
    except DataError as e:
        raise DataError(f"{paths.problems}: {e}") from None
    by_id = sampling.read_samples(paths.samples)
    records = [s for e in by_id.values() for s in ([e["greedy"]] if e["greedy"] else []) + e["samples"]]
    examples = build_examples(problems, records, max_per_problem, balance, keep_uniform, seed)
    train, val = split_by_problem(examples, val_fraction, seed)
    return TrainingData(problems, by_id, train, val)


def held_out_scores(ev: "Evaluator", data: TrainingData) -> tuple[list[tuple[str, dict]], list[float], dict]:
    """Every sample of the held-out problems (not only the capped training examples), as (id, record)
    pairs in problem order, `ev`'s score of each, and score_metrics over them ({} when there are none)."""
    val_ids = sorted({e["id"] for e in data.val})
    pairs = [(pid, s) for pid in val_ids for s in data.by_id[pid]["samples"]]
    if not pairs:
        return [], [], {}
    scores = ev.score([data.problems[pid].question for pid, _ in pairs], [s["text"] for _, s in pairs])
    return pairs, scores, score_metrics([int(s["correct"]) for _, s in pairs], scores, ev.threshold)


def pair_examples(examples: Sequence[dict], seed: int = 0) -> list[dict]:
    """[{"id", "question", "chosen", "rejected"}]: a correct and an incorrect solution of the same
    problem, for the pairwise loss. Each problem gives max(#correct, #incorrect) pairs, cycling
    through the smaller side, so every solution is used and, on balanced data, each exactly once:
    a pairwise epoch then reads as many sequences as a pointwise one (a fair compute comparison).
    Problems with only one class give no pairs."""
    rng = random.Random(seed)
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for e in examples:
        by_problem[e["id"]].append(e)
    pairs = []
    for pid in sorted(by_problem):
        group = by_problem[pid]
        right = [e["solution"] for e in group if e["label"]]
        wrong = [e["solution"] for e in group if not e["label"]]
        if not right or not wrong:
            continue
        rng.shuffle(right)
        rng.shuffle(wrong)
        for i in range(max(len(right), len(wrong))):
            pairs.append(
                {"id": pid, "question": group[0]["question"], "chosen": right[i % len(right)],
                 "rejected": wrong[i % len(wrong)]}
            )
    return pairs


# ---------------------------------------------------------------------------- metrics


def accuracy(labels: Sequence[int | bool], scores: Sequence[float], threshold: float | None = None) -> float:
    """Share of solutions classified right, predicting "correct" when score >= threshold.
    threshold None: the median score (for scores without an absolute scale; see module doc)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0:
        return float("nan")
    thr = float(np.median(s)) if threshold is None else threshold
    return float(((s >= thr) == y).mean())


def score_metrics(labels: Sequence[int | bool], scores: Sequence[float], threshold: float | None = None) -> dict:
    """AUC, accuracy and the threshold used, for a report table or JSON (undefined values are
    None, not NaN, which is not valid JSON): e.g. AUC when the labels hold one class only."""
    thr = float(np.median(scores)) if threshold is None and len(scores) else threshold
    m = {
        "n": len(labels),
        "positive_rate": float(np.mean(labels)) if len(labels) else None,
        "auc": auc(labels, scores),
        "accuracy": accuracy(labels, scores, thr),
        "threshold": thr,
        "threshold_rule": "median" if threshold is None else "fixed",
    }
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in m.items()}


# ---------------------------------------------------------------------------- scoring internals


def verdict_token_ids(tokenizer) -> tuple[int, int]:
    """Token ids for " correct" and " incorrect": their first token where the encodings differ."""
    a, b = (tokenizer(w, add_special_tokens=False).input_ids for w in VERDICT_WORDS)
    for x, y in zip(a, b):
        if x != y:
            return x, y
    raise ValueError(f"the tokenizer cannot tell {VERDICT_WORDS[0]!r} from {VERDICT_WORDS[1]!r}")


def _pad_right(seqs: Sequence[Sequence[int]], pad_id: int,
               multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding: positions of real tokens are the same as unpadded, and the last real token
    of a row is at attention_mask.sum() - 1."""
    width = -(-max(len(s) for s in seqs) // multiple) * multiple
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def batch_logits(kind: str, model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 verdict_ids: Sequence[int]) -> torch.Tensor:
    """One fp32 logit z per (right-padded) row; the scorers differ only here."""
    if kind == "head":
        # HF pools at the last non-pad token; our inputs never end with pad/eos, so that is the last real token
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits.squeeze(-1).float()
    # verbal: run the backbone only and project the last real position onto the two verdict rows
    # of the LM head, in fp32: 2 of 49k vocabulary rows, and no bf16 ties between close scores
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    last = attention_mask.sum(dim=1) - 1
    h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    head = lm.get_output_embeddings()
    idx = torch.tensor(list(verdict_ids), device=h.device)
    bias = head.bias[idx].float() if getattr(head, "bias", None) is not None else None
    two = F.linear(h, head.weight[idx].float(), bias)
    return two[:, 0] - two[:, 1]


def _cast_input_to_weight_dtype(module, args):
    return (args[0].to(module.weight.dtype),) + tuple(args[1:])


def _keep_head_in_fp32(peft_model) -> None:
    """The trainable copy of the score head in fp32, its bf16 input cast up (module docstring)."""
    from peft.utils import ModulesToSaveWrapper

    for name, module in peft_model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and name.split(".")[-1] == "score":
            for head in module.modules_to_save.values():
                head.float()
                head.register_forward_pre_hook(_cast_input_to_weight_dtype)


def _init_score_head(model, seed: int) -> None:
    """Re-draw the new score head with HF's own init (normal, initializer_range) but from our seed,
    so reruns, and base- vs SSFT-initialised evaluators, start from the same head."""
    head = getattr(model, "score", None)
    if not isinstance(head, torch.nn.Linear):
        return
    g = torch.Generator().manual_seed(seed)
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        w = torch.randn(head.weight.shape, generator=g, dtype=torch.float32) * std
        head.weight.copy_(w.to(head.weight.dtype))
        if head.bias is not None:
            head.bias.zero_()


def _attach_lora(model, config, kind: str, weights_dir: str | Path | None, trainable: bool, new_head: bool):
    """get_peft_model with `config`, then (optionally) the LoRA/head weights saved in weights_dir.

    One path for three cases: a fresh adapter, the SSFT adapter (CAUSAL_LM) continued as an
    evaluator (new_head=True: it has no score head), and a saved evaluator (new_head=False: its
    head must be in the file, or we would silently score with a random one). Building the
    structure first and loading weights second lets the head be made fp32 before its saved fp32
    weights are copied in (no bf16 round trip)."""
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    config = copy.deepcopy(config)
    config.inference_mode = not trainable
    if kind == "head":
        config.task_type = "SEQ_CLS"
        config.modules_to_save = sorted(set(config.modules_to_save or []) - {"lm_head"} | {"score"})
    # LoRA weights in the base's dtype (bf16): fp32 adapters on a bf16 base cast at every layer and
    # miss the CPU's bf16 matmul units (mathlite.trainer.lora_model); a 4-bit base keeps peft's fp32
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=quantized)
    if kind == "head":
        _keep_head_in_fp32(peft_model)
    if weights_dir is None:
        return peft_model

    current = get_peft_model_state_dict(peft_model)  # every key the adapter saves, in file format
    weights = load_peft_weights(str(weights_dir), device="cpu")
    if kind == "head":  # a causal adapter may carry LM-head weights; the seq-cls model has no LM head
        weights = {k: v for k, v in weights.items() if "lm_head" not in k}
    missing = [k for k in current if k not in weights and ("lora_" in k or not new_head)]
    unexpected = [k for k in weights if k not in current]
    if missing or unexpected:
        raise models.ModelNotFound(
            f"{weights_dir}: adapter does not fit this {kind} evaluator "
            f"(missing {missing[:2]}, unexpected {unexpected[:2]}); was it made for another base model?"
        )
    current.update(weights)  # a new head keeps its fresh init; everything else comes from the file
    try:
        set_peft_model_state_dict(peft_model, current)
    except RuntimeError as e:  # same names, other shapes: another size of the same architecture
        first_line = str(e).splitlines()[0][:200]
        raise models.ModelNotFound(f"{weights_dir}: adapter does not fit this base model ({first_line})") from None
    return peft_model


def _adapter_config(adapter_dir: str | Path):
    from peft import LoraConfig

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise models.ModelNotFound(
            f"{adapter_dir}: no adapter here (adapter_config.json missing); run the previous recipe first")
    return LoraConfig.from_pretrained(str(adapter_dir))


def _load_base(base_model, kind: str, quant: str, for_training: bool):
    """(model, name): a name is loaded with the right head; a loaded model is used as it is
    (get_peft_model injects LoRA into it, so pass a copy if you need the original again)."""
    task = "seq_cls" if kind == "head" else "causal"
    if isinstance(base_model, (str, Path)):
        return models.load_model(str(base_model), quant=quant, for_training=for_training, task=task), str(base_model)
    is_seq_cls = getattr(base_model, "score", None) is not None
    if is_seq_cls != (kind == "head"):
        want = "AutoModelForSequenceClassification (num_labels=1)" if kind == "head" else "a causal LM"
        raise ValueError(f"the {kind!r} evaluator needs {want}, got {type(base_model).__name__}")
    return base_model, getattr(base_model, "name_or_path", None) or "?"


# ---------------------------------------------------------------------------- the evaluator


class Evaluator:
    """A trained (or zero-shot) scorer of (question, solution) pairs. Build one with
    `Evaluator.create` (untrained), `train_evaluator`, or `Evaluator.load`."""

    def __init__(self, model, tokenizer, kind: str, *, loss: str | None = None, base: str = "?",
                 init_adapter: str | None = None, max_length: int = 1024):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.loss = loss  # the training loss, None while untrained
        self.base = base
        self.init_adapter = init_adapter
        self.max_length = max_length
        self.verdict_ids = verdict_token_ids(tokenizer)
        self.eos_pad_ids = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.suffix_ids = tokenizer(VERDICT_SUFFIX, add_special_tokens=False).input_ids if kind == "verbal" else []
        self.history: list[dict] = []  # the Trainer's log after train_evaluator
        self.n_scored = 0
        self.tokens_scored = 0
        self._prompt_ids: dict[str, list[int]] = {}
        if kind == "head":  # HF finds the last real token by this id (see "Where the score is read")
            model.config.pad_token_id = self.pad_id
        # bitsandbytes on CPU repacks 4-bit weights at the first eval forward, after which LoRA
        # gradients vanish; every evaluator passes here before its first forward (no-op otherwise)
        models.disable_bnb_cpu_repack(model)

    # -- construction

    @classmethod
    def create(cls, base_model, kind: str = "head", *, init_adapter: str | Path | None = None, lora_r: int = 16,
               seed: int = 0, quant: str = "auto", max_length: int = 1024, tokenizer=None,
               trainable: bool = True) -> "Evaluator":
        """An untrained evaluator: base model (a name, or a loaded model that will be modified)
        + LoRA, either fresh (rank lora_r) or the SSFT adapter in init_adapter (its own rank)."""
        from transformers import set_seed

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        set_seed(seed)  # LoRA A matrices are drawn at get_peft_model
        model, name = _load_base(base_model, kind, quant, for_training=trainable)
        if kind == "head":
            _init_score_head(model, seed)
        if init_adapter is not None:
            config = _adapter_config(init_adapter)
        else:
            config = models.lora_config(r=lora_r, alpha=2 * lora_r, task="seq_cls" if kind == "head" else "causal")
        model = _attach_lora(model, config, kind, init_adapter, trainable, new_head=True)
        tok = tokenizer if tokenizer is not None else models.load_tokenizer(name)
        return cls(model, tok, kind, base=name, max_length=max_length,
                   init_adapter=str(init_adapter) if init_adapter is not None else None)

    @classmethod
    def load(cls, directory: str | Path, base_model=None, *, quant: str = "auto") -> "Evaluator":
        """A saved evaluator. base_model: None (the base recorded at training), another name or
        folder of the same model, or a loaded model (modified in place)."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        if not (directory / META_FILE).exists():
            raise models.ModelNotFound(
                f"{directory}: no evaluator here ({META_FILE} missing); train one first (recipe 03)")
        meta = files.read_json(directory / META_FILE)
        model, _ = _load_base(base_model if base_model is not None else meta["base"], meta["kind"], quant,
                              for_training=False)
        model = _attach_lora(model, _adapter_config(directory), meta["kind"], directory,
                             trainable=False, new_head=False)
        model.eval()
        tok = AutoTokenizer.from_pretrained(str(directory))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        ev = cls(model, tok, meta["kind"], loss=meta.get("loss"), base=meta["base"],
                 init_adapter=meta.get("init_adapter"), max_length=meta.get("max_length", 1024))
        if ev.kind == "verbal" and list(ev.verdict_ids) != meta["verdict_ids"]:
            raise models.ModelNotFound(f"{directory}: its tokenizer's verdict tokens changed since training")
        return ev

    def save(self, directory: str | Path) -> None:
        """Adapter (+ score head), tokenizer, and evaluator.json, written last: its presence marks
        a complete save."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        models.stable_adapter_config(self.model)
        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        if self.history:
            files.atomic_write_json(directory / "train_log.json", self.history)
        files.atomic_write_json(directory / META_FILE, self.meta())

    def meta(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "loss": self.loss,
            "base": self.base,
            "init_adapter": self.init_adapter,
            "max_length": self.max_length,
            "verdict_suffix": VERDICT_SUFFIX if self.kind == "verbal" else None,
            "verdict_words": list(VERDICT_WORDS) if self.kind == "verbal" else None,
            "verdict_ids": list(self.verdict_ids) if self.kind == "verbal" else None,
            "threshold": self.threshold,
        }

    # -- scoring

    @property
    def threshold(self) -> float | None:
        """0.5 where the score is trained/defined as a probability of correctness, else None
        (use the median; see the module docstring)."""
        if self.loss == "pointwise" or (self.kind == "verbal" and self.loss is None):
            return 0.5
        return None

    def encode(self, question: str, solution: str) -> list[int]:
        """Token ids the scorer reads: prompt + solution (+ verdict suffix for verbal).

        Prompt and solution are tokenised separately, as the generator saw them. Trailing EOS/pad
        ids are stripped (see "Where the score is read"). A solution too long for max_length loses
        its end, never the prompt or the suffix."""
        prompt = self._prompt_ids.get(question)
        if prompt is None:
            text = build_prompt(self.tokenizer, question)
            prompt = self._prompt_ids[question] = self.tokenizer(text, add_special_tokens=False).input_ids
        sol = self.tokenizer(solution, add_special_tokens=False).input_ids
        while sol and sol[-1] in self.eos_pad_ids:
            sol.pop()
        budget = max(self.max_length - len(prompt) - len(self.suffix_ids), 0)
        ids = prompt + sol[:budget] + self.suffix_ids
        return ids[-self.max_length:]  # only a prompt longer than max_length gets here: it loses its start

    def score(self, questions: Sequence[str], solutions: Sequence[str], batch_size: int = 16) -> list[float]:
        """sigmoid(z) per (question, solution), in input order; counts n_scored/tokens_scored."""
        if len(questions) != len(solutions):
            raise ValueError(f"{len(questions)} questions but {len(solutions)} solutions")
        encoded = [self.encode(q, s) for q, s in zip(questions, solutions)]
        z = self.logits(encoded, batch_size=batch_size)
        self.n_scored += len(encoded)
        self.tokens_scored += sum(len(e) for e in encoded)
        return [1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v)) for v in z]

    def logits(self, encoded: Sequence[Sequence[int]], batch_size: int = 16) -> list[float]:
        """Raw z for already-encoded inputs, batched longest first: similar lengths share a batch
        (little padding), and an out-of-memory shows up in the first batch, not the last."""
        if not encoded:
            return []
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        out = [0.0] * len(encoded)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    ids, mask = _pad_right([encoded[i] for i in idx], self.pad_id)
                    z = batch_logits(self.kind, self.model, ids.to(device), mask.to(device), self.verdict_ids)
                    for i, v in zip(idx, z.tolist()):
                        out[i] = v
        finally:
            self.model.train(was_training)
        return out

    def reset_counts(self) -> None:
        self.n_scored = 0
        self.tokens_scored = 0


# ---------------------------------------------------------------------------- training


@dataclasses.dataclass
class _PointwiseCollator:
    pad_id: int

    def __call__(self, rows: list[dict]) -> dict:
        ids, mask = _pad_right([r["input_ids"] for r in rows], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([float(r["label"]) for r in rows])}


def _make_scorer_trainer_class():
    # built on first use, so that importing this module for its data and metric helpers stays light
    from transformers import Trainer

    class ScorerTrainer(Trainer):
        """Trainer with the evaluator losses (Eq. 8-9) on z from `batch_logits`, for the cases
        TRL's RewardTrainer does not cover (pointwise; the verbal scorer)."""

        # compute_loss returns a per-batch mean, not a sum over the accumulated batches
        loss_is_scaled_for_ga = False

        def __init__(self, *args, kind: str, objective: str, verdict_ids, **kwargs):
            super().__init__(*args, **kwargs)
            self.kind, self.objective, self.verdict_ids = kind, objective, verdict_ids
            # no "labels" forward argument: let evaluation call compute_loss for eval_loss anyway
            self.label_names = []
            self.can_return_loss = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            net = self.accelerator.unwrap_model(model) if self.kind == "verbal" else model
            z = batch_logits(self.kind, net, inputs["input_ids"], inputs["attention_mask"], self.verdict_ids)
            if self.objective == "pointwise":
                loss = F.binary_cross_entropy_with_logits(z, inputs["labels"].to(z.dtype))
            else:  # rows are [chosen..., rejected...], as TRL's preference collator stacks them
                chosen, rejected = z.chunk(2)
                loss = -F.logsigmoid(chosen - rejected).mean()
            return (loss, {"scores": z.detach()}) if return_outputs else loss

    return ScorerTrainer


def _dataset(ev: Evaluator, rows: Sequence[dict], objective: str, seed: int):
    """Pre-tokenised rows in the evaluator's own encoding (the one `score` uses). For the pairwise
    loss, rows may be examples (paired here) or `pair_examples` output already."""
    from datasets import Dataset

    if objective == "pointwise":
        if rows and "label" not in rows[0]:
            raise ValueError("the pointwise loss needs labelled examples (build_examples output), not pairs")
        data = [{"input_ids": ev.encode(e["question"], e["solution"]), "label": int(e["label"])} for e in rows]
    else:
        pairs = rows if rows and "chosen" in rows[0] else pair_examples(rows, seed=seed)
        data = [{"chosen_ids": ev.encode(p["question"], p["chosen"]),
                 "rejected_ids": ev.encode(p["question"], p["rejected"])} for p in pairs]
    if not data:
        raise UserError("no training rows" + (": the pairwise loss needs problems with both a correct and an "
                                              "incorrect solution" if objective == "pairwise" else ""))
    return Dataset.from_list(data)


def train_evaluator(
    base_model,
    examples: Sequence[dict],
    kind: str = "head",
    loss: str = "pointwise",
    init_adapter: str | Path | None = None,
    *,
    out_dir: str | Path,
    lr: float = 1e-4,
    epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 1024,
    lora_r: int = 16,
    seed: int = 0,
    val_examples: Sequence[dict] | None = None,
    callbacks: Sequence = (),
    quant: str = "auto",
    log_steps: int = 10,
    tokenizer=None,
) -> Evaluator:
    """Train an evaluator on `build_examples` output and save it to out_dir.

    examples (and val_examples): build_examples output; for the pairwise loss, pair_examples
        output is accepted too.
    base_model: a model name/folder, or a loaded model of the right class (modified in place).
    batch_size: sequences per step for both losses (pairwise: batch_size // 2 pairs), so both
        losses cost the same per step. max_steps > 0 overrides epochs.
    val_examples: evaluated (eval_loss in `history`) before training and at the end.
    Returns the trained Evaluator (its `history` is the Trainer's log).
    """
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from .trainer import common_training_args, one_device

    if kind not in KINDS or loss not in LOSSES:
        raise ValueError(f"kind must be one of {KINDS} and loss one of {LOSSES}; got {kind!r}, {loss!r}")
    out_dir = Path(out_dir)
    ev = Evaluator.create(base_model, kind, init_adapter=init_adapter, lora_r=lora_r, seed=seed, quant=quant,
                          max_length=max_length, tokenizer=tokenizer, trainable=True)
    train_ds = _dataset(ev, examples, loss, seed)
    val_ds = _dataset(ev, val_examples, loss, seed) if val_examples else None
    per_step = batch_size if loss == "pointwise" else max(1, batch_size // 2)

    fields = common_training_args(
        out_dir / "checkpoints", lr=lr, batch_size=per_step, grad_accum=grad_accum, max_steps=max_steps,
        epochs=epochs, seed=seed, save_steps=500, log_steps=log_steps,  # save_steps: unused, see below
    )
    fields.update(
        save_strategy="no",  # the evaluator is saved once, at the end (training it is short next to sampling)
        per_device_eval_batch_size=per_step,
        prediction_loss_only=True,
        remove_unused_columns=False,  # our collators read the pre-tokenised columns
        eval_strategy="no",  # validation runs on start and once at the end (below), whatever the step count
        eval_on_start=val_ds is not None,
    )
    if kind == "head" and loss == "pairwise":
        # Bradley-Terry on a scalar head is exactly TRL's reward-model setup
        from trl import RewardConfig, RewardTrainer

        # max_length None: rows are already truncated by `encode`
        args = one_device(RewardConfig(**fields, max_length=None, pad_to_multiple_of=PAD_MULTIPLE))
        trainer = RewardTrainer(model=ev.model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                                processing_class=ev.tokenizer, callbacks=list(callbacks))
        trainer.loss_is_scaled_for_ga = False  # its loss is a per-batch mean too
    else:
        from trl.trainer.reward_trainer import DataCollatorForPreference
        from trl.trainer.utils import disable_dropout_in_model

        disable_dropout_in_model(ev.model)  # as RewardTrainer does: the four variants train alike
        collator = _PointwiseCollator(ev.pad_id) if loss == "pointwise" else DataCollatorForPreference(
            pad_token_id=ev.pad_id, pad_to_multiple_of=PAD_MULTIPLE)
        trainer = _make_scorer_trainer_class()(
            model=ev.model, args=one_device(TrainingArguments(**fields)), train_dataset=train_ds, eval_dataset=val_ds,
            data_collator=collator, processing_class=ev.tokenizer, callbacks=list(callbacks),
            kind=kind, objective=loss, verdict_ids=ev.verdict_ids,
        )
    # TRL's RewardTrainer casts a 4-bit model's trainable weights to bf16, the score head included: back to fp32
    models.settle_trainable_dtypes(ev.model)
    # with disable_tqdm the Trainer prints every log dict; callers bring their own progress callback
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    if val_ds is not None:
        trainer.evaluate()
    ev.model.eval()
    ev.loss = loss
    ev.history = list(trainer.state.log_history)
    ev.save(out_dir)
    if (out_dir / "checkpoints").is_dir() and not any((out_dir / "checkpoints").iterdir()):
        (out_dir / "checkpoints").rmdir()  # the Trainer's output_dir, unused without checkpoints
    return ev
