"""Evaluators: training data, metrics, both scorers, SSFT initialisation, both losses, save/load.

The model tests use a 2-layer cut of the offline model (SmolLM2-135M-Instruct: its embeddings,
tokenizer, chat template and first 2 of 30 layers), saved once per module. Everything tested
here is mechanics (where a score is read, what is saved, which weights are loaded, that a loss
goes down), which does not depend on depth, and on this shared 2-core box a full-depth training
step takes about 10 s against 0.5 s.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from mathlite import evaluator as E
from mathlite import models
from mathlite.data import Problem

# ---------------------------------------------------------------------------- fixture data

# 6 small problems, each with 2 correct and 2 incorrect hand-written solutions
_HAND = {
    "add": ("What is 7 + 5?", [
        ("7 + 5 = 12. The answer is $\\boxed{12}$.", True),
        ("Adding 7 and 5 gives 12, so the answer is $\\boxed{12}$.", True),
        ("7 + 5 = 13. The answer is $\\boxed{13}$.", False),
        ("Adding 7 and 5 gives 75, so the answer is $\\boxed{75}$.", False),
    ]),
    "sub": ("What is 9 - 4?", [
        ("9 - 4 = 5. The answer is $\\boxed{5}$.", True),
        ("Taking 4 away from 9 leaves 5. The answer is $\\boxed{5}$.", True),
        ("9 - 4 = 13. The answer is $\\boxed{13}$.", False),
        ("Taking 4 away from 9 leaves 6. The answer is $\\boxed{6}$.", False),
    ]),
    "mul": ("What is $3 \\times 6$?", [
        ("$3 \\times 6 = 18$. The answer is $\\boxed{18}$.", True),
        ("Three sixes are 6 + 6 + 6 = 18. The answer is $\\boxed{18}$.", True),
        ("$3 \\times 6 = 36$. The answer is $\\boxed{36}$.", False),
        ("Three sixes are 6 + 6 = 12. The answer is $\\boxed{12}$.", False),
    ]),
    "div": ("What is $20 \\div 4$?", [
        ("$20 \\div 4 = 5$. The answer is $\\boxed{5}$.", True),
        ("Since $4 \\times 5 = 20$, the answer is $\\boxed{5}$.", True),
        ("$20 \\div 4 = 80$. The answer is $\\boxed{80}$.", False),
        ("Since $4 \\times 4 = 20$, the answer is $\\boxed{4}$.", False),
    ]),
    "lin": ("Solve for $x$: $x + 3 = 10$.", [
        ("Subtract 3 from both sides: $x = 7$. The answer is $\\boxed{7}$.", True),
        ("$x = 10 - 3 = 7$, so the answer is $\\boxed{7}$.", True),
        ("Add 3 to both sides: $x = 13$. The answer is $\\boxed{13}$.", False),
        ("$x = 10 + 3 = 13$, so the answer is $\\boxed{13}$.", False),
    ]),
    "pow": ("What is $2^3$?", [
        ("$2^3 = 2 \\times 2 \\times 2 = 8$. The answer is $\\boxed{8}$.", True),
        ("Doubling three times: 2, 4, 8. The answer is $\\boxed{8}$.", True),
        ("$2^3 = 2 \\times 3 = 6$. The answer is $\\boxed{6}$.", False),
        ("Doubling three times: 2, 4, 6. The answer is $\\boxed{6}$.", False),
    ]),
}


def _problem(pid, question, answer="0"):
    return Problem(id=pid, question=question, solution=f"The answer is $\\boxed{{{answer}}}$.", answer=answer,
                   level=1, subject="prealgebra", source="synthetic")


def _sample(pid, k, text, correct):
    return {"id": pid, "k": k, "text": text, "answer": None, "correct": correct, "tokens": 20, "finish": "eos"}


PROBLEMS = {pid: _problem(pid, q) for pid, (q, _) in _HAND.items()}
SAMPLES = [_sample(pid, k, text, ok) for pid, (_, sols) in _HAND.items() for k, (text, ok) in enumerate(sols)]
EXAMPLES = E.build_examples(PROBLEMS, SAMPLES, keep_uniform=0)

# ---------------------------------------------------------------------------- training data


def test_build_examples_caps_balances_and_keeps_a_few_uniform():
    problems = {p: _problem(p, f"question {p}") for p in ("mixed", "easy", "hard", "rare")}
    samples = (
        [_sample("mixed", k, f"right {k}", True) for k in range(20)]
        + [_sample("mixed", 20 + k, f"wrong {k}", False) for k in range(8)]
        + [_sample("mixed", 99, "right 0", True)]  # a duplicate text counts once
        + [_sample("easy", k, f"right {k}", True) for k in range(9)]  # all correct
        + [_sample("hard", k, f"wrong {k}", False) for k in range(9)]  # all wrong
        + [_sample("rare", 0, "right", True)] + [_sample("rare", k, f"wrong {k}", False) for k in range(1, 9)]
        + [_sample("unknown", 0, "x", True)]  # not in `problems`: ignored
    )

    def count(examples, pid):
        labels = [e["label"] for e in examples if e["id"] == pid]
        return sum(labels), len(labels) - sum(labels)

    ex = E.build_examples(problems, samples, max_per_problem=10, keep_uniform=2, seed=0)
    assert count(ex, "mixed") == (5, 5)  # cap 10, balanced
    assert count(ex, "rare") == (1, 1)  # balanced down to the smaller class
    assert count(ex, "easy") == (2, 0) and count(ex, "hard") == (0, 2)  # uniform: capped, kept
    assert {e["id"] for e in ex} == {"mixed", "easy", "hard", "rare"}
    assert all(e["question"] == f"question {e['id']}" for e in ex)
    assert len({(e["id"], e["solution"]) for e in ex}) == len(ex)

    dropped = E.build_examples(problems, samples, keep_uniform=0)
    assert {e["id"] for e in dropped} == {"mixed", "rare"}

    natural = E.build_examples(problems, samples, max_per_problem=6, balance=False, keep_uniform=0, seed=1)
    assert sum(count(natural, "mixed")) == 6 and sum(count(natural, "rare")) == 6

    assert E.build_examples(problems, samples, seed=3) == E.build_examples(problems, samples, seed=3)
    # problems given as the dicts of a problems JSONL work the same
    as_dicts = {p: {"question": f"question {p}"} for p in problems}
    assert E.build_examples(as_dicts, samples, seed=3) == E.build_examples(problems, samples, seed=3)


def test_split_by_problem_and_pairs_stay_within_a_problem():
    train, val = E.split_by_problem(EXAMPLES, val_fraction=0.34, seed=0)
    assert len(train) + len(val) == len(EXAMPLES) == 24
    assert {e["id"] for e in train}.isdisjoint({e["id"] for e in val})
    assert len({e["id"] for e in val}) == 2

    pairs = E.pair_examples(EXAMPLES)
    assert len(pairs) == 12  # 2 correct x 2 incorrect per problem, each solution used once
    correct = {(e["id"], e["solution"]) for e in EXAMPLES if e["label"]}
    wrong = {(e["id"], e["solution"]) for e in EXAMPLES if not e["label"]}
    assert all((p["id"], p["chosen"]) in correct and (p["id"], p["rejected"]) in wrong for p in pairs)
    assert {p["chosen"] for p in pairs} == {s for _, s in correct}

    # 3 correct, 1 incorrect: 3 pairs, the incorrect one reused; a one-class problem: no pair
    uneven = [{"id": "u", "question": "q", "solution": f"right {i}", "label": 1} for i in range(3)]
    uneven += [{"id": "u", "question": "q", "solution": "wrong", "label": 0},
               {"id": "v", "question": "q", "solution": "right", "label": 1}]
    pairs = E.pair_examples(uneven)
    assert sorted(p["chosen"] for p in pairs) == ["right 0", "right 1", "right 2"]
    assert {p["rejected"] for p in pairs} == {"wrong"} and {p["id"] for p in pairs} == {"u"}


# ---------------------------------------------------------------------------- metrics


def test_auc_handles_ties_and_accuracy_thresholds():
    assert E.auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert E.auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert E.auc([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # pairs (pos, neg): (.8,.8) tie = 0.5, (.8,.1) = 1, (.3,.8) = 0, (.3,.1) = 1 -> 2.5 / 4
    assert E.auc([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1]) == pytest.approx(0.625)
    assert math.isnan(E.auc([1, 1], [0.2, 0.3]))

    assert E.accuracy([1, 0, 1, 0], [0.8, 0.8, 0.3, 0.1], threshold=0.5) == 0.5
    # unnormalised scores: the median splits them, the scale does not matter
    assert E.accuracy([1, 1, 0, 0], [12.0, 9.0, 3.0, -4.0]) == 1.0
    m = E.score_metrics([1, 1, 0, 0], [12.0, 9.0, 3.0, -4.0])
    assert m["threshold"] == 6.0 and m["threshold_rule"] == "median" and m["auc"] == 1.0
    assert E.score_metrics([1, 1], [0.2, 0.9], 0.5)["auc"] is None  # JSON-safe, not NaN


def test_verdict_tokens_and_truncation_keep_prompt_and_suffix(tok):
    c, i = E.verdict_token_ids(tok)
    assert c != i
    assert tok.decode([c]) == " correct" and tok.decode([i]) == " incorrect"

    # encoding needs only the tokenizer: a stand-in model is enough
    ev = E.Evaluator(torch.nn.Linear(1, 1), tok, "verbal", max_length=64)
    question = _HAND["add"][0]
    short = ev.encode(question, "12")
    prompt_len = len(short) - len(tok("12", add_special_tokens=False).input_ids) - len(ev.suffix_ids)
    long = ev.encode(question, " ".join(["7 + 5 = 12."] * 50))
    assert len(long) == 64  # the solution lost its end ...
    assert long[:prompt_len] == short[:prompt_len] and long[-len(ev.suffix_ids):] == ev.suffix_ids  # ... nothing else


# ---------------------------------------------------------------------------- model fixtures


@pytest.fixture(scope="module")
def tok():
    return models.load_tokenizer(models.OFFLINE_MODEL)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tok) -> str:
    """The offline model cut to 2 layers, saved as a model folder (loaded once per module)."""
    out = tmp_path_factory.mktemp("smol-2-layers")
    model = models.load_model(models.OFFLINE_MODEL, task="causal")
    model.model.layers = torch.nn.ModuleList(list(model.model.layers)[:2])
    model.config.num_hidden_layers = 2
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _inputs():
    """Varied lengths (so a batch is padded), and one solution ending with the EOS/pad token."""
    qs, ss = [], []
    for pid in ("add", "mul", "lin"):
        q, sols = _HAND[pid]
        qs += [q, q]
        ss += [sols[0][0], sols[3][0]]
    qs += [_HAND["pow"][0], _HAND["pow"][0]]
    ss += ["8", _HAND["pow"][1][1][0] + "<|im_end|>"]
    return qs, ss


@pytest.mark.slow
@pytest.mark.parametrize("kind", E.KINDS)
def test_padded_batch_scores_equal_one_by_one_and_compute_is_counted(tiny, tok, kind):
    # fp32: bf16 kernels round differently for different batch shapes (~1e-2 on the full model),
    # which would hide the off-by-one-token error this test is about
    base = models.load_model(tiny, task="seq_cls" if kind == "head" else "causal").float()
    ev = E.Evaluator.create(base, kind, seed=0, tokenizer=tok)
    qs, ss = _inputs()
    lengths = [len(ev.encode(q, s)) for q, s in zip(qs, ss)]
    assert len(set(lengths)) > 3
    eos = ev.tokenizer.eos_token_id
    assert ev.encode(qs[-1], ss[-1])[-1] != eos  # the trailing <|im_end|> was stripped
    if kind == "verbal":
        assert ev.tokenizer.decode(ev.encode(qs[0], ss[0])).endswith(E.VERDICT_SUFFIX)

    batched = ev.score(qs, ss, batch_size=len(qs))
    assert (ev.n_scored, ev.tokens_scored) == (len(qs), sum(lengths))  # real tokens, not padding
    one_by_one = [ev.score([q], [s])[0] for q, s in zip(qs, ss)]
    assert (ev.n_scored, ev.tokens_scored) == (2 * len(qs), 2 * sum(lengths))
    assert torch.allclose(torch.tensor(batched), torch.tensor(one_by_one), atol=1e-5, rtol=0)
    # and, as logits (the verbal probabilities of the 2-layer model sit near 1, where sigmoid hides
    # differences), the padded batch equals each input alone with no padding at all
    encoded = [ev.encode(q, s) for q, s in zip(qs, ss)]
    with torch.inference_mode():
        alone = [E.batch_logits(kind, ev.model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                                ev.verdict_ids).item() for ids in encoded]
    assert torch.allclose(torch.tensor(ev.logits(encoded, batch_size=len(qs))), torch.tensor(alone), atol=1e-4, rtol=0)
    assert all(0.0 < s < 1.0 for s in batched)
    assert len(set(round(s, 6) for s in batched)) > 1  # not a constant
    ev.reset_counts()
    assert ev.n_scored == ev.tokens_scored == 0


@pytest.fixture(scope="module")
def ssft_adapter(tiny, tmp_path_factory) -> Path:
    """A stand-in for the SSFT adapter: a CAUSAL_LM LoRA with non-zero B (a fresh one is a no-op)."""
    from peft import get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(models.load_model(tiny, task="causal"), models.lora_config(r=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    out = tmp_path_factory.mktemp("ssft")
    model.save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", E.KINDS)
def test_ssft_adapter_initialises_both_scorers(tiny, tok, ssft_adapter, kind):
    from peft.utils import load_peft_weights

    qs, ss = _inputs()
    fresh = E.Evaluator.create(tiny, kind, seed=0, tokenizer=tok)
    from_ssft = E.Evaluator.create(tiny, kind, init_adapter=ssft_adapter, seed=0, tokenizer=tok)
    # every SSFT LoRA weight arrived, under the seq-cls model's names too
    saved = load_peft_weights(str(ssft_adapter))
    params = dict(from_ssft.model.named_parameters())
    for key, value in saved.items():
        name = key.replace(".weight", ".default.weight")  # the file omits the adapter name
        # in the evaluator's LoRA dtype: bf16 on a bf16 base (an fp32 adapter file is rounded once)
        assert params[name].dtype == (torch.bfloat16 if "lora_" in name else params[name].dtype), name
        assert torch.equal(params[name].detach(), value.to(params[name].dtype)), name
    assert all(p.requires_grad for n, p in params.items() if "lora_" in n)  # continued in training
    assert from_ssft.model.peft_config["default"].r == 4  # the adapter's rank, not lora_r
    # same seed, same head: the logits differ only because of the SSFT weights (compared as logits:
    # the 2-layer model's verbal probabilities sit near 1, where sigmoid flattens differences)
    encoded = [fresh.encode(q, s) for q, s in zip(qs, ss)]
    a, b = fresh.logits(encoded), from_ssft.logits(encoded)
    assert max(abs(x - y) for x, y in zip(a, b)) > 1e-2
    with pytest.raises(models.ModelNotFound, match="adapter_config.json missing"):
        E.Evaluator.create(tiny, kind, init_adapter=ssft_adapter / "nowhere", tokenizer=tok)


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tiny, tok, tmp_path_factory):
    """Train each (kind, loss) once on the fixture, a few steps, and share the result."""
    cache = {}

    def get(kind, loss):
        if (kind, loss) not in cache:
            out = tmp_path_factory.mktemp(f"{kind}-{loss}")
            # the pairwise loss takes examples (paired inside) or pairs; the verbal run passes pairs
            rows = E.pair_examples(EXAMPLES) if (kind, loss) == ("verbal", "pairwise") else EXAMPLES
            # lr: Adam moves each of the head's 576 weights by about lr per step, and the 2-layer model's
            # last hidden state has |h|_1 of about 300: the head needs a smaller lr than the verbal scorer
            ev = E.train_evaluator(
                tiny, rows, kind=kind, loss=loss, out_dir=out, lr=1e-3 if kind == "head" else 5e-3,
                max_steps=6, batch_size=8, lora_r=4, seed=0, val_examples=rows, log_steps=1, tokenizer=tok,
            )
            cache[kind, loss] = (ev, out)
        return cache[kind, loss]

    return get


def _eval_losses(ev):
    return [h["eval_loss"] for h in ev.history if "eval_loss" in h]


@pytest.mark.slow
@pytest.mark.parametrize("kind,loss", [("head", "pointwise"), ("head", "pairwise"), ("verbal", "pointwise"),
                                       ("verbal", "pairwise")])
def test_training_lowers_the_loss(trained, kind, loss):
    ev, out = trained(kind, loss)
    before, *_, after = _eval_losses(ev)  # eval on start and at the end, on the training fixture
    assert after < before, (kind, loss, _eval_losses(ev))
    if loss == "pointwise":
        assert before > 0.3  # not already solved: a real decrease, from near chance
    assert any("loss" in h for h in ev.history)
    # LoRA B starts at zero: non-zero now means the LoRA path was trained, not just the head
    assert any(p.abs().sum() > 0 for n, p in ev.model.named_parameters() if "lora_B" in n)
    meta = json.loads((out / "evaluator.json").read_text())
    assert (meta["kind"], meta["loss"]) == (kind, loss)
    assert meta["threshold"] == (0.5 if loss == "pointwise" else None)
    assert ev.threshold == meta["threshold"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", E.KINDS)
def test_reload_gives_identical_scores(trained, kind):
    ev, out = trained(kind, "pointwise")
    qs, ss = _inputs()
    loaded = E.Evaluator.load(out)  # base from evaluator.json
    assert loaded.kind == kind and loaded.loss == "pointwise"
    assert torch.allclose(torch.tensor(loaded.score(qs, ss)), torch.tensor(ev.score(qs, ss)), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_score_head_is_saved_and_restored(tiny, tok, trained):
    ev, out = trained("head", "pointwise")
    trained_head = ev.model.base_model.model.score.modules_to_save["default"].weight.detach().clone()
    assert trained_head.dtype == torch.float32

    # load onto a base whose own (new) head is different: only the saved head can give the scores back
    base = models.load_model(tiny, task="seq_cls")
    with torch.no_grad():
        base.score.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(123))
    loaded = E.Evaluator.load(out, base_model=base)
    restored = loaded.model.base_model.model.score.modules_to_save["default"].weight
    assert torch.equal(restored, trained_head)

    # a re-initialised head would score differently: the comparison above is not vacuous
    fresh = E.Evaluator.create(tiny, "head", seed=0, tokenizer=tok)
    qs, ss = _inputs()
    s_loaded, s_trained, s_fresh = loaded.score(qs, ss), ev.score(qs, ss), fresh.score(qs, ss)
    assert torch.allclose(torch.tensor(s_loaded), torch.tensor(s_trained), atol=1e-6, rtol=0)
    assert max(abs(a - b) for a, b in zip(s_fresh, s_trained)) > 1e-2
    assert not torch.equal(fresh.model.base_model.model.score.modules_to_save["default"].weight, trained_head)


@pytest.mark.slow
def test_4bit_lora_gradients_survive_an_eval_forward_on_cpu(tiny, tok, tmp_path):
    """QLoRA on CPU: validation on start is an eval forward before the first training step, the
    case where bitsandbytes' CPU repack would silently zero the LoRA gradients."""
    from transformers import TrainerCallback

    grads = []

    class RecordGrads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            grads.append({n: p.grad.abs().sum().item() for n, p in model.named_parameters()
                          if p.requires_grad and p.grad is not None})

    base = models.load_model(tiny, task="seq_cls", quant="4bit", for_training=True)
    ev = E.train_evaluator(base, EXAMPLES[:8], kind="head", loss="pointwise", out_dir=tmp_path, lr=1e-3,
                           max_steps=2, batch_size=4, lora_r=4, val_examples=EXAMPLES[:4], callbacks=[RecordGrads()],
                           tokenizer=tok)
    assert len(grads) == 2
    lora_b = {n: g for n, g in grads[-1].items() if "lora_B" in n}
    assert lora_b and all(g > 0 for g in lora_b.values()), lora_b
    assert any("score" in n and g > 0 for n, g in grads[-1].items())
    assert len(ev.score(*_inputs())) == 8
