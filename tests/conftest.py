"""Shared fixtures: a clean environment per test (no provider keys, no HYBRIDGATE_* settings,
a private data home) so tests never touch a user's real ledger, cache or keys."""

from __future__ import annotations

import os

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
