"""Shared fixtures: a clean environment per test (no provider keys, no HYBRIDGATE_* settings,
a private data home) so tests never touch a user's real ledger, cache or keys."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

MODELS_DIR = os.path.join(platformdirs.user_cache_dir("hybridgate"), "models")

PROVIDER_KEYS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AZURE_API_KEY",
    "GEMINI_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "TOGETHER_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_BASE",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for key in list(os.environ):
        if key.startswith("HYBRIDGATE_") or key in PROVIDER_KEYS:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path_factory.mktemp("home")))
    # Converted models are a pure, content-addressed cache: share it across tests and runs so
    # the real-model tests convert SmolLM2 once per machine, not once per test.
    monkeypatch.setenv("HYBRIDGATE_MODELS_DIR", MODELS_DIR)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


# -- the one tiny model: a random-weight Llama with SmolLM2's real tokenizer (committed) ---------

TOKENIZER_DIR = Path(__file__).resolve().parent / "fixtures" / "tokenizer"


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    """In memory, eval mode; seconds to build, shared by the whole session."""
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
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny model saved as a model directory (what specs and training load)."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


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


# -- real services (tests/services.py) ----------------------------------------------------------


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory):
    from tests.services import redis_server

    server = redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_session) -> str:
    """A real Redis on loopback, emptied for each test."""
    redis_session.flush()
    return redis_session.url


@pytest.fixture(scope="session")
def postgres_session():
    from tests.services import postgres_server

    server = postgres_server()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_session) -> str:
    """A fresh, empty database on a real PostgreSQL on loopback."""
    return postgres_session.database()
