"""CPU int4 serving: Q4_1-style weights packed losslessly, LoRA applied unmerged, auto picks it."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from local_models import (  # noqa: E402
    GenerationRequest,
    LocalEngine,
    LocalModelConfig,
    quantization,  # noqa: E402
)
from local_models.quant_int4 import GROUP, to_int4  # noqa: E402

pytestmark = pytest.mark.skipif(
    not hasattr(torch, "_weight_int4pack_mm_for_cpu"), reason="torch without the CPU int4 kernel"
)


def _as_q4_1(model):
    """Round every decoder linear to 4-bit groups of 32, as the shipped GGUF's weights are."""
    model = copy.deepcopy(model)
    for module in model.model.layers.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight.data
            n, k = w.shape
            g = w.reshape(n, k // GROUP, GROUP)
            low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
            scale = (high - low) / 15
            module.weight.data = (((g - low) / scale).round() * scale + low).reshape(n, k)
    return model


def _logprobs(model, ids):
    with torch.inference_mode():
        return torch.log_softmax(model(input_ids=ids).logits.float(), -1)


def test_int4_keeps_the_q4_weights_it_was_given(tiny_model, tokenizer):
    base = _as_q4_1(tiny_model)
    served = to_int4(copy.deepcopy(base))
    ids = torch.tensor([tokenizer("the quick brown fox jumps").input_ids])
    # only bf16 activations differ from the fp32 reference; 4-bit packing itself is exact
    diff = (_logprobs(base, ids) - _logprobs(served, ids)).abs().max().item()
    assert diff < 0.15, diff
    assert served.model.layers[0].mlp.down_proj.packed.dtype == torch.uint8


def test_packed_and_dense_paths_agree(tiny_model, tokenizer):
    """A row gets the same logits alone (packed kernel) and inside a big batch (bf16 dense)."""
    served = to_int4(_as_q4_1(tiny_model))
    ids = torch.tensor([tokenizer("hello there my friend").input_ids])
    alone = _logprobs(served, ids[:, :1])
    batch = _logprobs(served, ids[:, :1].repeat(16, 1))
    assert (alone[0] - batch[0]).abs().max().item() < 0.1


def test_int4_serves_the_adapter_unmerged(tiny_model, tokenizer, make_adapter):
    """int4 + unmerged LoRA gives what fp32 with the LoRA merged gives, not the bare base."""
    from peft import PeftModel

    base = _as_q4_1(tiny_model)
    adapter = make_adapter("a", seed=3)
    ids = torch.tensor([tokenizer("hello world how are you").input_ids])
    merged = PeftModel.from_pretrained(copy.deepcopy(base), adapter).merge_and_unload()
    served = to_int4(PeftModel.from_pretrained(copy.deepcopy(base), adapter))
    reference = _logprobs(merged, ids)
    assert (_logprobs(served, ids) - reference).abs().max().item() < 0.4  # packed + LoRA
    batch = _logprobs(served, ids.repeat(2, 1))  # 10 rows: the dense copy, adapter merged
    assert (batch[0] - reference[0]).abs().max().item() < 0.4
    bare = to_int4(copy.deepcopy(base))
    assert (_logprobs(bare, ids) - reference).abs().max().item() > 2.0
    config = LocalModelConfig(
        precision="int4", device="cpu", threads=1, adapter_path=adapter, adapter_version="a"
    )
    engine = LocalEngine.from_pretrained_model(base, tokenizer, config, keep_base=False)
    assert engine.adapter_version == "a"
    assert engine._model.model.layers[0].self_attn.q_proj.lora_a is not None


def test_int4_adapter_swap_changes_answers_and_keeps_serving(tiny_model, tokenizer, make_adapter):
    config = LocalModelConfig(precision="int4", device="cpu", threads=1)
    engine = LocalEngine.from_pretrained_model(_as_q4_1(tiny_model), tokenizer, config)
    req = GenerationRequest(messages=({"role": "user", "content": "hi"},), max_tokens=6)
    [before] = engine.generate([req])
    engine.swap_adapter(make_adapter("b", seed=5), version="v2")
    [after] = engine.generate([req])
    assert after.adapter_version == "v2"
    assert after.token_logprobs != pytest.approx(before.token_logprobs, abs=1e-3)


def test_auto_precision_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(quantization, "cpu_has_bf16", lambda: True)
    assert quantization.get_backend("auto", device="cpu").name == "int4"
    monkeypatch.setattr(quantization, "cpu_has_bf16", lambda: False)
    assert quantization.get_backend("auto", device="cpu").name == "fp32"
    assert quantization.auto_precision("cuda") == "bf16"
