from __future__ import annotations

import pytest

from training import LoraTrainingConfig, hardware_defaults


def test_round_trips_through_dict() -> None:
    cfg = LoraTrainingConfig(
        r=4, target_modules=("q_proj", "k_proj"), system_prompt="Answer briefly."
    )
    assert LoraTrainingConfig.from_dict(cfg.to_dict()) == cfg
    assert "target_modules" in cfg.describe()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("r", 0),
        ("lr", 0.0),
        ("dropout", 1.0),
        ("precision", "fp8"),
        ("target_modules", ()),
        ("batch_size", 0),
        ("schedule", "step"),
    ],
)
def test_contradictions_raise_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        LoraTrainingConfig(**{field: value})


def test_unknown_field_in_dict_is_named() -> None:
    with pytest.raises(ValueError, match="rank"):
        LoraTrainingConfig.from_dict({"rank": 8})


def test_hardware_defaults_fit_short_cpu_data() -> None:
    cfg = hardware_defaults(2000, 35, device="cpu", memory_gib=8)
    assert cfg.max_seq_len >= 35
    # activations set training's peak RSS on the CPU: 512-token micro-batches (see config.py)
    assert cfg.batch_size * cfg.max_seq_len <= 512
    assert cfg.effective_batch_size >= 8
    assert cfg.top_layers is not None  # a cheaper step on the CPU for label-style data
    # small nightly sets get up to four epochs, larger ones as many as fit the CPU token
    # budget (~14 minutes), never below one
    assert hardware_defaults(1500, 50, device="cpu", memory_gib=8).epochs == 4.0
    assert 1.0 < hardware_defaults(3000, 50, device="cpu", memory_gib=8).epochs < 4.0
    assert hardware_defaults(50_000, 30, device="cpu", memory_gib=8).epochs == 1.0
    big = hardware_defaults(2000, 400, device="cuda", memory_gib=40)
    assert big.max_seq_len >= 400 and big.batch_size > 1 and big.top_layers is None
    with pytest.raises(ValueError):
        hardware_defaults(0, 10)
