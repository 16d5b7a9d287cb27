from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.helpers import make_examples
from training import LoraTrainingConfig, TrainingError, build_feature, dry_run, train_lora
from training.lora import IGNORE_INDEX, answer_loss, collate_left, length_grouped_batches

FAST = LoraTrainingConfig(
    r=4, alpha=8, lr=5e-3, epochs=1, batch_size=4, grad_accum=1, max_seq_len=64, warmup_ratio=0.0
)


def _tok(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_tokens_are_masked_and_answer_is_learned(tiny_model_dir: Path) -> None:
    tok = _tok(tiny_model_dir)
    (ex,) = make_examples(1)
    feat = build_feature(tok, ex, config=FAST)
    answer_ids = tok(ex.answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
    n_prompt = len(feat.input_ids) - len(answer_ids)
    assert feat.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert feat.labels[n_prompt:] == answer_ids == feat.input_ids[n_prompt:]
    prompt_text = tok.decode(feat.input_ids[:n_prompt])
    assert ex.messages[0]["content"] in prompt_text and "<|im_start|>assistant" in prompt_text
    # no default system prompt injected by the template (short sequences)
    assert "SmolLM" not in prompt_text


def test_long_prompt_is_truncated_from_the_left_keeping_the_answer(tiny_model_dir: Path) -> None:
    tok = _tok(tiny_model_dir)
    (ex,) = make_examples(1)
    long = type(ex)(({"role": "user", "content": "blah " * 200},), "lost_card", 0.0, "x")
    feat = build_feature(tok, long, config=FAST)
    assert len(feat.input_ids) == FAST.max_seq_len
    assert tok.decode([t for t in feat.labels if t != IGNORE_INDEX]).startswith("lost_card")


def test_loss_ignores_the_prompt(tiny_model_dir: Path) -> None:
    """Changing what the prompt *labels* would be must not change the loss."""
    from transformers import AutoModelForCausalLM

    tok = _tok(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    feats = [build_feature(tok, e, config=FAST) for e in make_examples(3)]
    batch = collate_left(feats, pad_id=tok.pad_token_id)
    full = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    ).logits
    ours = float(answer_loss(model, batch))
    import torch.nn.functional as F

    ref = F.cross_entropy(
        full[:, :-1].reshape(-1, full.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
    assert ours == pytest.approx(float(ref), rel=1e-4)


def test_length_grouped_batches_cover_every_row_once() -> None:
    lengths = [5, 50, 6, 49, 7, 48, 8, 47]
    batches = length_grouped_batches(lengths, batch_size=2, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(abs(lengths[b[0]] - lengths[b[-1]]) <= 3 for b in batches)


def test_training_lowers_the_answer_loss_and_writes_safetensors(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from training import evaluate

    examples = make_examples(24)
    before = evaluate(str(tiny_model_dir), examples[:6])
    cfg = LoraTrainingConfig(
        **{**FAST.to_dict(), "epochs": 4, "target_modules": ("q_proj", "v_proj", "o_proj")}
    )
    res = train_lora(str(tiny_model_dir), examples, cfg, output_dir=tmp_path / "a", progress=False)
    after = evaluate(str(tiny_model_dir), examples[:6], adapter_dir=res.adapter_dir)
    assert after.loss < before.loss
    assert res.steps == 24 and res.tokens > 0 and res.tokens_per_s > 0
    files = {p.name for p in res.adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "training_meta.json"} <= files
    assert not any(p.suffix in {".bin", ".pt", ".pkl"} for p in res.adapter_dir.rglob("*"))


def test_crash_then_resume_continues_from_the_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg = LoraTrainingConfig(**{**FAST.to_dict(), "epochs": 2, "checkpoint_every": 2})
    examples = make_examples(16)  # 4 steps per epoch, 8 total

    def boom(info) -> None:
        if info.step == 5:
            raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        train_lora(
            str(tiny_model_dir),
            examples,
            cfg,
            output_dir=tmp_path / "r",
            progress=False,
            callbacks=[boom],
        )
    ckpt = tmp_path / "r" / "checkpoint"
    assert {p.name for p in ckpt.iterdir()} == {
        "adapter.safetensors",
        "optimizer.safetensors",
        "state.json",
    }
    assert not (tmp_path / "r" / "adapter_model.safetensors").exists()
    steps: list[int] = []
    res = train_lora(
        str(tiny_model_dir),
        examples,
        cfg,
        output_dir=tmp_path / "r",
        progress=False,
        callbacks=[lambda i: steps.append(i.step)],
    )
    assert res.resumed_from_step == 4
    assert steps == [5, 6, 7, 8]
    assert not ckpt.exists()


def test_qlora_on_cpu_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    cfg = LoraTrainingConfig(**{**FAST.to_dict(), "qlora": True})
    with pytest.raises(TrainingError, match="CUDA"):
        train_lora(str(tiny_model_dir), make_examples(4), cfg, output_dir=tmp_path, progress=False)


def test_dry_run_estimates_from_a_measurement(tiny_model_dir: Path) -> None:
    est = dry_run(str(tiny_model_dir), make_examples(40), FAST, usd_per_hour=3.6)
    assert est.tokens_per_s > 0 and est.total_tokens > 40
    assert est.est_seconds == pytest.approx(est.total_tokens / est.tokens_per_s)
    assert est.est_cost_usd == pytest.approx(est.est_seconds / 1000)


def test_bad_target_module_names_the_problem(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = LoraTrainingConfig(**{**FAST.to_dict(), "target_modules": ("nope_proj",)})
    with pytest.raises(TrainingError, match="nope_proj"):
        train_lora(str(tiny_model_dir), make_examples(4), cfg, output_dir=tmp_path, progress=False)


def test_resumed_run_matches_an_uninterrupted_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = LoraTrainingConfig(
        **{**FAST.to_dict(), "epochs": 2, "checkpoint_every": 3, "dropout": 0.0}
    )
    examples = make_examples(16)
    straight = train_lora(
        str(tiny_model_dir), examples, cfg, output_dir=tmp_path / "s", progress=False
    )

    def stop_at_4(info) -> None:
        if info.step == 4:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        train_lora(
            str(tiny_model_dir),
            examples,
            cfg,
            output_dir=tmp_path / "r",
            progress=False,
            callbacks=[stop_at_4],
        )
    resumed = train_lora(
        str(tiny_model_dir), examples, cfg, output_dir=tmp_path / "r", progress=False
    )
    assert resumed.resumed_from_step == 3
    a = load_file(str(straight.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def test_training_prompt_is_the_serving_prompt(tiny_model_dir: Path) -> None:
    from local_models.prompt import render_chat

    tok = _tok(tiny_model_dir)
    (ex,) = make_examples(1)
    feat = build_feature(tok, ex, config=FAST)
    n_prompt = feat.labels.index(next(t for t in feat.labels if t != IGNORE_INDEX))
    assert tok.decode(feat.input_ids[:n_prompt]) == render_chat(tok, ex.messages)


def test_top_layers_puts_adapters_on_the_top_layers_only(tiny_model_dir: Path, tmp_path: Path):
    from safetensors.torch import load_file

    cfg = LoraTrainingConfig(**{**FAST.to_dict(), "top_layers": 1})  # the tiny model has 2
    res = train_lora(
        str(tiny_model_dir), make_examples(4), cfg, output_dir=tmp_path / "a", progress=False
    )
    weights = load_file(str(res.adapter_dir / "adapter_model.safetensors"))
    layers = {k.split("layers.")[1].split(".")[0] for k in weights}
    assert layers == {"1"}
    with pytest.raises(ValueError, match="top_layers"):
        LoraTrainingConfig(top_layers=0)


def test_frozen_layer_cache_trains_the_same_adapter(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Training the top layers on the frozen layers' cached output matches recomputing it:
    exactly with float32 storage, to float16 rounding with the default storage."""
    from safetensors.torch import load_file

    import training.lora

    base = {**FAST.to_dict(), "top_layers": 1, "epochs": 2, "dropout": 0.0}
    examples = make_examples(12)

    def train(name: str, cache: bool) -> dict:
        cfg = LoraTrainingConfig(**{**base, "frozen_cache": cache})
        res = train_lora(
            str(tiny_model_dir), examples, cfg, output_dir=tmp_path / name, progress=False
        )
        return load_file(str(res.adapter_dir / "adapter_model.safetensors"))

    plain = train("plain", False)
    half = train("half", True)
    monkeypatch.setattr(training.lora, "FROZEN_STORE_HALF", False)
    exact = train("exact", True)
    assert half.keys() == plain.keys() == exact.keys() and all("layers.1." in k for k in plain)
    for k in plain:
        scale = plain[k].abs().max().item() or 1.0
        assert (exact[k] - plain[k]).abs().max().item() <= 1e-5 * scale, k
        assert (half[k] - plain[k]).abs().max().item() <= 1e-2 * scale, k
