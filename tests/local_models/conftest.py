"""Tiny random-weight Llama + the real SmolLM2 tokenizer (committed fixture), CPU only."""

from __future__ import annotations

from pathlib import Path

import pytest

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.2,  # wide logit gaps: greedy choices are not near-ties
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def make_engine(tiny_model, tokenizer):
    from local_models import LocalEngine, LocalModelConfig

    def make(**overrides):
        config = LocalModelConfig(precision="fp32", device="cpu", threads=1, **overrides)
        return LocalEngine.from_pretrained_model(tiny_model, tokenizer, config)

    return make


@pytest.fixture
def make_adapter(tiny_model, tmp_path):
    """Save a random (non-zero) LoRA adapter for the tiny model and return its dir."""

    def make(name: str, seed: int) -> str:
        import copy

        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        config = LoraConfig(
            r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        peft_model = get_peft_model(copy.deepcopy(tiny_model), config)
        out = tmp_path / name
        peft_model.save_pretrained(out, safe_serialization=True)
        return str(out)

    return make
