"""Adapter exports, loaded back by what engines use: peft (vLLM's format) and gguf's reader."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from local_models.adapter_export import export_gguf, export_peft
from local_models.errors import ModelLoadError


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_peft_export_loads_back_with_peft_and_gives_the_same_model(
    make_adapter, tiny_model, tokenizer, tmp_path
):
    from peft import PeftModel

    adapter = make_adapter("a", seed=1)
    out = export_peft(adapter, tmp_path / "export", base_model="smollm2-135m-instruct")
    original = PeftModel.from_pretrained(copy.deepcopy(tiny_model), adapter).eval()
    exported = PeftModel.from_pretrained(copy.deepcopy(tiny_model), str(out)).eval()
    assert torch.equal(_logits(original, tokenizer), _logits(exported, tokenizer))
    assert not torch.equal(_logits(tiny_model, tokenizer), _logits(exported, tokenizer))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"  # no local path
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}
    with pytest.raises(ModelLoadError, match="not empty"):
        export_peft(adapter, out, base_model="x")


def _interleave_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's rotary layout, written out row by row: within each head, row 2i is the
    HF row i of the first half and row 2i+1 the HF row i of the second half."""
    head = weight.shape[0] // n_head
    half = head // 2
    order = []
    for h in range(n_head):
        for i in range(half):
            order += [h * head + i, h * head + half + i]
    return weight[order]


def test_gguf_export_reads_back_with_llama_cpp_names_layout_and_alpha(
    make_adapter, tiny_model, tmp_path
):
    import gguf
    from safetensors.torch import load_file

    adapter = make_adapter("a", seed=2)
    config = tiny_model.config.to_dict()
    out = export_gguf(adapter, tmp_path / "a.gguf", base_config=config)
    reader = gguf.GGUFReader(str(out))

    def field(name: str):
        f = reader.fields[name]
        return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]]

    assert field("general.architecture") == "llama"
    assert field("general.type") == "adapter"
    assert field("adapter.type") == "lora"
    assert field("adapter.lora.alpha") == pytest.approx(16.0)
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    peft = load_file(f"{adapter}/adapter_model.safetensors")
    assert len(tensors) == len(peft)
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    for layer in range(config["num_hidden_layers"]):
        for hf, cpp, heads in (("q_proj", "attn_q", n_head), ("v_proj", "attn_v", None)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{hf}"
            a, b = peft[f"{prefix}.lora_A.weight"], peft[f"{prefix}.lora_B.weight"]
            got_a = tensors[f"blk.{layer}.{cpp}.weight.lora_a"]
            got_b = tensors[f"blk.{layer}.{cpp}.weight.lora_b"]
            assert got_a.shape == a.shape and got_b.shape == b.shape  # numpy order: (r, in)
            assert torch.equal(got_a, a.float())
            want_b = _interleave_rows(b.float(), heads) if heads else b.float()
            assert torch.equal(got_b, want_b)
    assert n_kv  # k_proj is not targeted by this adapter; its head count is still read


def test_gguf_export_needs_the_base_head_counts(make_adapter, tmp_path):
    with pytest.raises(ModelLoadError, match="pass the base config"):
        export_gguf(make_adapter("a", seed=3), tmp_path / "a.gguf", base_config={})
